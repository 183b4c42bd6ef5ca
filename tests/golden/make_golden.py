"""Regenerate tests/golden/: small packed matrices written by the Python writer, with the
activations and the int32 results computed from the definition in numpy (not by any
kernel), so the C++ runner can check Python-written bytes end to end.

Run: .venv/bin/python tests/golden/make_golden.py   (deterministic; see README.md here)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgekit._io import atomic_write_bytes, atomic_write_text  # noqa: E402
from edgekit.kernels import packing  # noqa: E402

HERE = Path(__file__).resolve().parent

# name, bits, M, N, K, layout, per-row codebook, affine, group_size, x_zero_point
CASES = [
    ("b1_dense", 1, 1, 5, 64, "dense", False, False, 0, 0),
    ("b2_dense_affine", 2, 2, 4, 100, "dense", False, True, 0, -3),
    ("b3_sparse_perrow", 3, 3, 7, 200, "sparse", True, False, 0, 11),
    ("b4_dense_groups", 4, 2, 9, 256, "dense", False, False, 64, 0),
    ("b4_nm24", 4, 1, 6, 128, "nm2:4", False, True, 0, 5),
    ("b5_nm14_perrow", 5, 2, 3, 64, "nm1:4", True, False, 0, -128),
    ("b6_sparse_groups", 6, 4, 5, 130, "sparse", False, False, 128, 127),
    ("b7_dense_perrow", 7, 1, 3, 65, "dense", True, False, 0, 1),
    ("b8_nm48_groups", 8, 2, 4, 192, "nm4:8", False, False, 64, -7),
    ("b8_dense_affine", 8, 3, 2, 63, "dense", False, True, 0, 0),
]


def build(name, bits, M, N, K, layout, per_row, affine, group_size, zp):
    rng = np.random.default_rng(sum(map(ord, name)))  # stable across runs (no hash())
    codes = rng.integers(0, 1 << bits, (N, K)).astype(np.uint8)
    if affine:
        cb = packing.affine_table(bits)
        cb = np.tile(cb, (N, 1)) if per_row else cb
    else:
        cb = rng.integers(-128, 128, (N, 1 << bits) if per_row else (1 << bits,)).astype(np.int8)
    mask = nm = None
    if layout == "sparse":
        mask = rng.random((N, K)) < 0.4
        mask[0] = False  # one empty row
    elif layout.startswith("nm"):
        nm = tuple(int(v) for v in layout[2:].split(":"))
        keys = rng.random((N, K // nm[1], nm[1]))
        mask = (np.argsort(np.argsort(keys, axis=2), axis=2) < nm[0]).reshape(N, K)
    ng = 1 if group_size == 0 else -(-K // group_size)
    scale = (rng.random((N, ng)) + 0.5).astype(np.float32)
    s = packing.pack_arrays(codes, bits, cb, scale, mask, nm, group_size)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = cb[codes] if cb.ndim == 1 else np.take_along_axis(cb, codes.astype(np.int64), 1)
    w = w.astype(np.int64) * (1 if mask is None else mask)
    gs = K if group_size == 0 else group_size
    acc = np.stack([(x[:, g:g + gs].astype(np.int64) - zp) @ w[:, g:g + gs].T
                    for g in range(0, K, gs)], axis=2)
    return s, x, acc


def main() -> None:
    lines = ["# name M K N ngroups x_zero_point  (files: <name>.ekpw .x.bin .acc.bin .out.bin)"]
    for case in CASES:
        name, bits, M, N, K, *_rest, zp = case
        s, x, acc = build(*case)
        atomic_write_bytes(HERE / f"{name}.ekpw", packing.serialize(s))
        atomic_write_bytes(HERE / f"{name}.x.bin", x.tobytes())
        atomic_write_bytes(HERE / f"{name}.acc.bin", acc.astype("<i4").tobytes())
        atomic_write_bytes(HERE / f"{name}.out.bin", acc.sum(axis=2).astype("<i4").tobytes())
        lines.append(f"{name} {M} {K} {N} {acc.shape[2]} {zp}")
    atomic_write_text(HERE / "cases.txt", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
