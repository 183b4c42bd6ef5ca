"""Unstructured magnitude pruning (per row or over the whole tensor)."""

from __future__ import annotations

import numpy as np


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) \
            or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def lowest_per_row(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask keeping all but the floor(s·K) lowest-scoring entries of every row.

    Ties are broken by position (stable sort) so the zero count is exact even when many
    scores are equal.
    """
    s = _check_sparsity(sparsity)
    scores = np.asarray(scores, np.float64)
    n, k = scores.shape
    drop = int(np.floor(s * k))
    mask = np.ones((n, k), bool)
    if drop:
        idx = np.argsort(scores, axis=1, kind="stable")[:, :drop]
        np.put_along_axis(mask, idx, False, axis=1)
    return mask


def magnitude_mask(w, sparsity: float, scope: str = "row") -> np.ndarray:
    """Mask zeroing the smallest |w|: floor(s·K) per row ('row') or floor(s·N·K) overall."""
    w = np.asarray(w, np.float32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D (N, K) weight, got shape {w.shape}")
    if scope == "row":
        return lowest_per_row(np.abs(w), sparsity)
    if scope != "tensor":
        raise ValueError(f"magnitude scope must be 'row' or 'tensor', got {scope!r}")
    s = _check_sparsity(sparsity)
    flat = np.ones(w.size, bool)
    drop = int(np.floor(s * w.size))
    if drop:
        flat[np.argsort(np.abs(w).ravel(), kind="stable")[:drop]] = False
    return flat.reshape(w.shape)
