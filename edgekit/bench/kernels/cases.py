"""Shapes and the random data every implementation is measured on.

One `Case` is one cell of the grid: a shape (M, K, N), a bit width and a zero-weight fraction.
Its data is deterministic in those parameters, so every implementation (edgekit and the
peers) runs on exactly the same weights and activations, and its integer reference result
is what all of them are checked against.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The repository's default shapes file; the tuple below is the fallback for installs that
# do not carry csrc/ (a test keeps the two in agreement).
DEFAULT_SHAPES_FILE = Path(__file__).resolve().parents[3] / "csrc" / "bench" / "shapes" / "default.txt"
DEFAULT_SHAPES: tuple[tuple[int, int, int], ...] = (
    (1, 640, 2560), (1, 1024, 4096), (1, 4096, 1024), (8, 1024, 4096))
QUICK_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 640, 2560), (1, 1024, 4096))

# Bounds that keep one cell's weights and reference product within memory on small hosts.
MAX_DIM = 1 << 16
MAX_ELEMENTS = 1 << 28


def parse_shapes_file(path: str | Path) -> list[tuple[int, int, int]]:
    """Read "M K N" lines (comments with #, blank lines ignored; ',' or 'x' also separate).

    Raises ValueError naming the file and line for anything that is not three positive
    integers within bounds, and for a file without any shape.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read shapes file {path}: {exc.__class__.__name__}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    shapes: list[tuple[int, int, int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        # "1x640x2560" and "1,640,2560" are accepted; a lone "x" is not a separator.
        line = re.sub(r"(?<=\d)[xX](?=\d)", " ", raw.split("#", 1)[0].replace(",", " "))
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path}:{lineno}"
        if len(parts) != 3:
            raise ValueError(f"{where}: expected 'M K N', got {raw.strip()!r}")
        try:
            m, k, n = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{where}: M, K and N must be integers, got {raw.strip()!r}") from None
        if min(m, k, n) < 1 or max(m, k, n) > MAX_DIM:
            raise ValueError(f"{where}: M, K and N must be in 1..{MAX_DIM}, got {m} {k} {n}")
        if max(m * k, k * n, m * n) > MAX_ELEMENTS:
            raise ValueError(f"{where}: shape {m}x{k}x{n} is too large for a kernel benchmark")
        shapes.append((m, k, n))
    if not shapes:
        raise ValueError(f"{path}: no shapes found (expected lines of 'M K N')")
    return shapes


def default_shapes() -> list[tuple[int, int, int]]:
    """The default grid: the repository's shapes file when present, else the built-in list."""
    if DEFAULT_SHAPES_FILE.is_file():
        return parse_shapes_file(DEFAULT_SHAPES_FILE)
    return list(DEFAULT_SHAPES)


def _seed(*parts: object) -> int:
    # crc32 of the parameters: stable across processes (unlike hash()).
    return zlib.crc32(repr(parts).encode())


@dataclass
class Case:
    """One grid cell's data. Weights are `w = codebook[codes]` where `mask`, else 0."""

    M: int
    K: int
    N: int
    bits: int
    sparsity: float
    x: np.ndarray          # (M, K) int8 activations
    codes: np.ndarray      # (N, K) uint8 in [0, 2^bits); code 2^(bits-1) where masked out
    codebook: np.ndarray   # (1, 2^bits) int8, uniform affine: c - 2^(bits-1)
    mask: np.ndarray | None  # (N, K) bool, True = stored; None when dense
    w: np.ndarray = field(repr=False)    # (N, K) int8 effective weights
    acc: np.ndarray = field(repr=False)  # (M, N) int32 reference x @ w.T


def make_activations(M: int, K: int) -> np.ndarray:
    """Int8 activations for a shape, shared by every bit width and sparsity of that shape."""
    rng = np.random.default_rng(_seed("x", M, K))
    # -128 is left out: symmetric int8 is what ORT's dynamic quantization and LiteRT assume.
    return rng.integers(-127, 128, size=(M, K), dtype=np.int16).astype(np.int8)


def make_mask(N: int, K: int, sparsity: float) -> np.ndarray | None:
    """A random keep-mask with exactly round(sparsity*K) zeros in every row (None if 0)."""
    zeros = int(round(sparsity * K))
    if zeros <= 0:
        return None
    rng = np.random.default_rng(_seed("mask", N, K, round(sparsity, 6)))
    # The rank of a random key per row picks `zeros` positions uniformly without replacement.
    order = np.argsort(rng.random((N, K)), axis=1)
    mask = np.ones((N, K), dtype=bool)
    np.put_along_axis(mask, order[:, :zeros], False, axis=1)
    return mask


def make_case(M: int, K: int, N: int, bits: int, sparsity: float = 0.0) -> Case:
    """Random uniform b-bit codes with the affine codebook, optionally masked, plus reference."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    half = 1 << (bits - 1)
    rng = np.random.default_rng(_seed("codes", N, K, bits))
    codes = rng.integers(0, 1 << bits, size=(N, K), dtype=np.int16).astype(np.uint8)
    mask = make_mask(N, K, sparsity)
    if mask is not None:
        # Masked-out weights are exactly zero; in the affine code space that is code `half`,
        # which is what peers without zero-weight compression store for them.
        codes = np.where(mask, codes, np.uint8(half)).astype(np.uint8)
    codebook = (np.arange(1 << bits, dtype=np.int16) - half).astype(np.int8)[None, :]
    w = (codes.astype(np.int16) - half).astype(np.int8)
    x = make_activations(M, K)
    acc = (x.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
    return Case(M, K, N, bits, float(sparsity), x, codes, codebook, mask, w, acc)
