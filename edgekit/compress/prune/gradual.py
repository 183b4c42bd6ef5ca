"""Gradual magnitude pruning during training (Zhu & Gupta 2017), the baseline CSP is compared with.

    pruner = GradualMagnitude(model, sparsity=0.5, begin=0, end=300, every=25)
    train(model, ..., callbacks=[pruner])   # on_end: packed layers (int8 unless a recipe says)

Sparsity follows the cubic schedule s(t) = s_f (1 - (1 - (t - t0)/(t1 - t0))^3) for t0 <= t <=
t1 (0 before, s_f after); every `every` steps, and at t1, each matrix's mask is recomputed
from the current |w| so that exactly floor(s(t)·K) weights per row (scope "row") or
floor(s(t)·N·K) per tensor are zero. Pruned weights are re-zeroed after every optimizer step
(Adam's moments would otherwise revive them). Masks live on the `Target`s, so a QAT method
given the same targets packs them (`edgekit.compress.qat.prepare(..., prune=...)`).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from edgekit.compress.layers import QuantMatrix, make_quant_layer
from edgekit.compress.prune.magnitude import magnitude_mask
from edgekit.compress.quantizers import quantize

DEFAULT_RECIPE = {"name": "int8-all", "rules": [{"match": "*", "bits": 8}]}


def cubic_sparsity(step: int, final: float, begin: int, end: int) -> float:
    """Zhu & Gupta's s(t): 0 before `begin`, `final` from `end` on, cubic in between."""
    if step <= begin:
        return 0.0
    if step >= end:
        return float(final)
    frac = (step - begin) / (end - begin)
    return float(final) * (1.0 - (1.0 - frac) ** 3)


class GradualPruner:
    """Schedule + mask bookkeeping; subclasses choose the mask (`new_mask`)."""

    def __init__(self, model: nn.Module, sparsity: float, begin: int = 0, end: int = 1000,
                 every: int = 50, scope: str = "row", recipe=None, targets=None,
                 convert: bool = True):
        from edgekit.compress.qat.common import check_knob, resolve_targets

        self.final = float(check_knob("sparsity", sparsity, 0.0, 0.99))
        self.begin = int(check_knob("begin", begin, 0, integer=True))
        self.end = int(check_knob("end", end, self.begin + 1, integer=True))
        self.every = int(check_knob("every", every, 1, integer=True))
        if scope not in ("row", "tensor"):
            raise ValueError(f"scope must be 'row' or 'tensor', got {scope!r}")
        self.scope, self.model, self.convert = scope, model, bool(convert)
        self.targets = targets if targets is not None else resolve_targets(
            model, recipe or DEFAULT_RECIPE)
        nm = [t.key for t in self.targets if t.nm is not None]
        if nm:   # the schedule's unstructured masks would break the N:M the layer claims
            raise ValueError(f"{nm[0]}: a recipe N:M sparsity cannot be combined with "
                             "training-time pruning")
        self.current = 0.0
        self.converted = False

    def sparsity_at(self, step: int) -> float:
        """Target sparsity s(t) of the schedule."""
        return cubic_sparsity(step, self.final, self.begin, self.end)

    def new_mask(self, target, sparsity: float) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, step: int) -> None:
        """Recompute every target's mask for s(step) and apply it."""
        s = self.sparsity_at(step)
        self.current = s
        for t in self.targets:
            t.mask = self.new_mask(t, s) if s > 0 else None
            t.apply_mask()

    def on_step(self, model: nn.Module, step: int) -> None:
        """After each optimizer step: a schedule update when due, else re-zero pruned weights."""
        if self.converted:
            return
        due = self.begin < step <= self.end and (step % self.every == 0 or step == self.end)
        if due:
            self.update(step)
        else:
            for t in self.targets:
                t.apply_mask()

    def sparsity(self) -> float:
        """Measured fraction of zero weights over all targets."""
        zeros = sum(int((t.w2d() == 0).sum()) for t in self.targets)
        return zeros / max(1, sum(t.w2d().size for t in self.targets))

    def on_end(self, model: nn.Module) -> None:
        """Final masks at s_f; with `convert`, pack each layer with its recipe's quantizer."""
        if self.converted:
            return
        if self.current != self.final:
            self.update(self.end)
        if not self.convert:
            return
        by_layer: dict[str, list] = {}
        for t in self.targets:
            by_layer.setdefault(t.layer, []).append(t)
        for layer, ts in by_layer.items():
            mats = {}
            for t in ts:
                s = t.spec
                qw = quantize(t.w2d(), s.bits, s.quantizer, s.granularity, s.group_size,
                              s.codebook, s.range == "narrow", t.mask, s.mu)
                mats[t.pname] = QuantMatrix(qw, t.nm)
            parent_name, _, child = layer.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, make_quant_layer(ts[0].module, mats))
        self.converted = True


class GradualMagnitude(GradualPruner):
    """Gradual magnitude pruning: the mask keeps the largest |w| (see module docstring)."""

    def new_mask(self, target, sparsity: float) -> np.ndarray:
        return magnitude_mask(target.w2d(), sparsity, self.scope)
