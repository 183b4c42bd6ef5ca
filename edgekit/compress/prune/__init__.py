"""Pruning: each pruner returns the (N, K) bool mask (False = zero, not stored) that the packed
format drops (docs/format.md §1.5). Masks are computed on the (N, K) view of a weight."""

from edgekit.compress.prune.magnitude import magnitude_mask
from edgekit.compress.prune.nm import nm_mask
from edgekit.compress.prune.wanda import wanda_mask, wanda_scores

PRUNERS = ("magnitude", "wanda", "nm")

__all__ = ["PRUNERS", "magnitude_mask", "nm_mask", "wanda_mask", "wanda_scores"]
