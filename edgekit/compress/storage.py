"""Stored bytes of a packed weight, counted exactly as docs/format.md §1.8 counts them.

Kept beside the quantizers so compression reports do not need the C++ module; the tests
cross-check it against `edgekit.kernels.pack(...).nbytes` when that is built.
"""

from __future__ import annotations

import numpy as np

BLOCK_K = 64


def packed_nbytes(n: int, k: int, bits: int, codebook_rows: int, ngroups: int,
                  mask: np.ndarray | None = None) -> int:
    """Codes + bitmaps + row offsets + codebook + scales, in bytes (docs/format.md §1.8)."""
    nblocks = -(-k // BLOCK_K)
    if mask is None:
        code_bytes = n * nblocks * 8 * bits
        bitmap_bytes = offsets_bytes = 0
    else:
        nnz = np.asarray(mask, bool).reshape(n, k).sum(axis=1)
        code_bytes = int((-(-nnz // BLOCK_K)).sum()) * 8 * bits
        bitmap_bytes = n * nblocks * 8
        offsets_bytes = (n + 1) * 4
    return int(code_bytes + bitmap_bytes + offsets_bytes
               + codebook_rows * (1 << bits) + n * ngroups * 4)
