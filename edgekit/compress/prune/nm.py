"""N:M structured sparsity: exactly n weights kept in every aligned group of m along K."""

from __future__ import annotations

import numpy as np


def nm_mask(scores, n: int, m: int) -> np.ndarray:
    """Keep the n highest scores of every group of m consecutive inputs (aligned to m).

    `scores` is |W| for magnitude N:M or the Wanda score |W|·‖X‖ (METHODS.md §6). The packed
    format needs m to divide 64 and K % m == 0 (docs/format.md §1.5); both are checked here
    so the error names the layer's shape rather than surfacing at pack time.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2:
        raise ValueError(f"expected 2-D (N, K) scores, got shape {scores.shape}")
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"N:M {name} must be a positive integer, got {v!r}")
    if n >= m:
        raise ValueError(f"N:M needs n < m, got {n}:{m}")
    if 64 % m:
        raise ValueError(f"N:M m must divide 64 (the packed block), got m={m}")
    rows, k = scores.shape
    if k % m:
        raise ValueError(f"N:M {n}:{m} needs K divisible by {m}, but K = {k}")
    groups = scores.reshape(rows, k // m, m)
    # Stable sort on -score keeps the earlier position on ties: exactly n per group always.
    keep = np.argsort(-groups, axis=2, kind="stable")[:, :, :n]
    mask = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(mask, keep, True, axis=2)
    return mask.reshape(rows, k)
