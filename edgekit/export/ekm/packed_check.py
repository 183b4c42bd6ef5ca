"""Pure-Python validation of a serialized packed weight buffer (docs/format.md §1.9).

The same rules as the C++ reader (csrc/format/packed.cc), in numpy, so `edgekit inspect` and
the EKM reader can reject a bad packed tensor without the C++ extension.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

try:
    from edgekit.kernels import packing
except ImportError:
    # The kernels package imports the C++ extension; its packing module is numpy-only, so load
    # that file on its own: inspecting a file must not need a build.
    _spec = importlib.util.spec_from_file_location(
        "edgekit._packing_numpy", Path(__file__).resolve().parents[2] / "kernels" / "packing.py")
    packing = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = packing  # dataclasses look their module up there
    _spec.loader.exec_module(packing)

_MAX_DIM = 1 << 30


def check_packed(b) -> packing.Sections:
    """Validate serialized packed weights; return their sections (views of `b`).

    Raises ValueError with a one-line reason for anything docs/format.md §1.9 rejects.
    """
    b = bytes(b)
    h = packing.parse_header(b)
    bits, flags, N, K, gs = h["bits"], h["flags"], h["N"], h["K"], h["group_size"]
    if h["magic"] != b"EKPW":
        raise ValueError('bad magic (expected "EKPW")')
    if h["version"] != packing.VERSION:
        raise ValueError(f"unsupported packed version {h['version']}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    if flags & ~0x0F:
        raise ValueError(f"unknown flag bits {flags:#x}")
    if not (1 <= N <= _MAX_DIM and 1 <= K <= _MAX_DIM):
        raise ValueError(f"N={N}, K={K} out of range 1..2^30")
    if gs % 64 or gs > _MAX_DIM:
        raise ValueError(f"group_size must be 0 or a multiple of 64, got {gs}")
    if h["reserved"]:
        raise ValueError("reserved header field must be 0")
    sparse, nm = bool(flags & packing.FLAG_SPARSE), bool(flags & packing.FLAG_NM)
    n, m = h["nm_n"], h["nm_m"]
    if nm and not sparse:
        raise ValueError("N:M flag requires the sparse flag")
    if nm and not (1 <= n <= m and 64 % m == 0 and K % m == 0):
        raise ValueError(f"invalid N:M {n}:{m}")
    if not nm and (n or m):
        raise ValueError("nm_n/nm_m must be 0 without the N:M flag")
    nblocks = -(-K // 64)
    dense_codes = N * nblocks * 8 * bits
    ntables = N if flags & packing.FLAG_PER_ROW else 1
    want = {"bitmap_bytes": N * nblocks * 8 if sparse else 0,
            "offsets_bytes": (N + 1) * 4 if sparse else 0,
            "codebook_bytes": ntables << bits,
            "scales_bytes": N * packing._ngroups(K, gs) * 4}
    if not sparse and h["codes_bytes"] != dense_codes:
        raise ValueError(f"codes_bytes {h['codes_bytes']} != {dense_codes}")
    if sparse and (h["codes_bytes"] % (8 * bits) or h["codes_bytes"] > dense_codes):
        raise ValueError(f"sparse codes_bytes {h['codes_bytes']} is not a whole number of blocks "
                         "within the dense size")
    for key, v in want.items():
        if h[key] != v:
            raise ValueError(f"{key} {h[key]} does not match the header (expected {v})")
    s = packing.deserialize(b)  # sizes are now known to be sane: this only slices
    table = s.codebook
    if bool((table == packing.affine_table(bits)).all()) != bool(flags & packing.FLAG_AFFINE):
        raise ValueError("affine flag does not match the codebook")
    codes = packing.decode_blocks(s.codes.reshape(-1, 8 * bits), bits)
    if not sparse:
        if (codes.reshape(N, nblocks * 64)[:, K:] != 0).any():
            raise ValueError("non-zero padding code at k >= K")
        return s
    _check_sparse(s, codes, nblocks, n if nm else 0, m if nm else 0)
    return s


def _check_sparse(s: packing.Sections, codes: np.ndarray, nblocks: int, n: int, m: int) -> None:
    N, K = s.N, s.K
    bm = np.ascontiguousarray(s.bitmaps.astype("<u8")).view(np.uint8).reshape(N * nblocks, 8)
    mask = np.unpackbits(bm, axis=1, bitorder="little").astype(bool).reshape(N, nblocks * 64)
    bad_rows = np.flatnonzero(mask[:, K:].any(axis=1))
    if bad_rows.size:
        raise ValueError(f"bitmap bits set beyond K in row {bad_rows[0]}")
    mask = mask[:, :K]
    if m:
        counts = mask.reshape(N, K // m, m).sum(axis=2)
        bad = np.argwhere(counts != n)
        if bad.size:
            raise ValueError(f"row {bad[0][0]} violates {n}:{m} sparsity")
    off = s.offsets.astype(np.int64)
    if off[0] != 0:
        raise ValueError("row offsets must start at 0")
    nnz = mask.sum(axis=1)
    bad = np.flatnonzero(np.diff(off) != -(-nnz // 64))
    if bad.size:
        raise ValueError(f"row offsets disagree with bitmap popcounts at row {bad[0]}")
    if off[-1] * 8 * s.bits != s.codes.nbytes:
        raise ValueError("row offsets disagree with codes_bytes")
    # Stored codes of row n fill the first nnz slots of its virtual blocks; the rest must be 0.
    used = np.zeros(codes.shape[0] * 64, bool)
    used[packing._stream_index(mask, off)] = True
    if (codes.reshape(-1)[~used] != 0).any():
        raise ValueError("non-zero padding code after a row's last stored code")
