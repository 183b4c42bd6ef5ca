"""S8BQAT (METHODS.md §3): fixed Lloyd-Max centroids on the int8 grid, the MRACos regulariser
and a periodic hard compressor.

    qat = S8BQAT(model, "mixed", lam=1e-4, warmup=100, period=500)
    train(model, ..., regularizer=qat.regularizer, callbacks=[qat])
    # after the last step (on_end) the model holds QuantLinear/QuantConv1d/QuantLSTM layers

Centroids: per matrix, `quantizers.quantize(w, bits, "lloyd_max", ...)` with the recipe's
granularity / group_size / codebook scope: Lloyd-Max on the weights normalised per scale group,
levels scaled so max |level| = 127, rounded to int8 and merged. The centroids of a weight are
``scale[n, g] * table[j]``; they stay fixed during training (METHODS §3). A recipe rule with
another quantizer (uniform, mulaw, binary) uses that quantizer's grid instead — S8BQAT only
needs fixed centroids.

MRACos (edgekit formulation, METHODS §3), on v = w / scale in table units: for c_k <= v <
c_{k+1}, r = 1 - |cos(π (v - c_k) / Δ_k)|, Δ_k = c_{k+1} - c_k; below the first / above the
last centroid the outer region's period continues. r = 0 on a centroid and 1 halfway.
Loss = task + λ(t) Σ_w r(w); λ ramps linearly from 0 over `warmup` steps (the task loss
moves the weights first). Hard compressor: every `period` steps every weight is snapped to its
nearest centroid, and once more at the end, before the conversion to packed layers.

Deviation from METHODS §3: there λ is relative to the task-loss scale; here `lam` is an
absolute weight on Σ_w r(w) (a sum over every quantized weight, not a mean), so the right
value depends on the model's size and its loss's magnitude and must be tuned per model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgekit.compress.qat.common import (Grid, Target, check_knob, resolve_targets,
                                         to_quantized, view_2d)
from edgekit.compress.quantizers import quantize


def mracos(v: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Elementwise MRACos of v (R, M) against sorted, strictly increasing centroids (R, L).

    R is 1 (one table for all rows of v) or v's row count.
    """
    if centroids.shape[0] == 1 and v.shape[0] != 1:
        idx = torch.searchsorted(centroids[0].contiguous(), v.detach().contiguous(), right=True)
    else:
        idx = torch.searchsorted(centroids.contiguous(), v.detach().contiguous(), right=True)
    idx = (idx - 1).clamp(0, centroids.shape[1] - 2)
    table = centroids.expand(v.shape[0], -1)
    lo = torch.gather(table, 1, idx)
    delta = torch.gather(table, 1, idx + 1) - lo
    return 1.0 - torch.abs(torch.cos(math.pi * (v - lo) / delta))


def lloyd_max_grid(t: Target) -> Grid:
    """The fixed S8BQAT grid of one target from its current weights (METHODS §2)."""
    s = t.spec
    qw = quantize(t.w2d(), s.bits, s.quantizer, s.granularity, s.group_size, s.codebook,
                  s.range == "narrow", t.mask, s.mu)
    lo = 1 if (s.quantizer == "uniform" and s.range == "narrow") else 0
    return Grid(qw.codebook, qw.scale, qw.group_size, s.bits, s.quantizer, lo)


class S8BQAT:
    """Training-loop hooks for S8BQAT over every layer a recipe selects (see module docstring).

    Knobs: `lam` λ (absolute weight of Σ r(w), not rescaled to the task loss: a deviation
    from METHODS §3, tune it per model),
    `warmup` steps of the λ ramp, `period` P of the hard compressor (0: only the final snap),
    `convert`: replace the layers with packed QuantLayers in `on_end`.
    """

    def __init__(self, model: nn.Module, recipe, lam: float = 1e-4, warmup: int = 100,
                 period: int = 500, convert: bool = True):
        self.lam = float(check_knob("lam", lam, 0.0))
        self.warmup = int(check_knob("warmup", warmup, 0, integer=True))
        self.period = int(check_knob("period", period, 0, integer=True))
        self.convert = bool(convert)
        self.model = model
        self.targets = resolve_targets(model, recipe)
        self.grids = {t.key: lloyd_max_grid(t) for t in self.targets}
        self._tabs = {k: torch.from_numpy(g.region_table()).float()
                      for k, g in self.grids.items()}
        self._inv_scale = {}
        for t in self.targets:
            g = self.grids[t.key]
            k = t.w2d().shape[1]
            self._inv_scale[t.key] = torch.from_numpy(
                (1.0 / np.where(g.scale_2d(k) > 0, g.scale_2d(k), 1.0)).astype(np.float32))
        self.step = 0
        self.converted = False

    def lam_at(self, step: int) -> float:
        """λ at optimizer step `step` (linear warm-up)."""
        if self.warmup and step < self.warmup:
            return self.lam * step / self.warmup
        return self.lam

    def penalty(self) -> torch.Tensor:
        """Σ over all target weights of MRACos (unweighted; differentiable)."""
        total = torch.zeros(())
        for t in self.targets:
            v = view_2d(t.module, t.param) * self._inv_scale[t.key]
            r = mracos(v, self._tabs[t.key])
            if t.mask is not None:
                r = r * torch.from_numpy(t.mask)
            total = total + r.sum()
        return total

    def regularizer(self, model: nn.Module) -> torch.Tensor:
        """λ(t) Σ r(w): the `regularizer` hook of `edgekit.train.loop.train`."""
        lam = self.lam_at(self.step + 1)
        if lam == 0.0 or self.converted:
            return torch.zeros(())
        return lam * self.penalty()

    def snap(self) -> None:
        """The hard compressor: every weight to its nearest centroid (pruned ones stay 0)."""
        for t in self.targets:
            t.write_2d(self.grids[t.key].snap(t.w2d(), t.mask))

    def on_step(self, model: nn.Module, step: int) -> None:
        """After each optimizer step: keep pruned weights at 0; snap every `period` steps."""
        self.step = step
        if self.converted:
            return
        for t in self.targets:
            t.apply_mask()
        if self.period and step % self.period == 0:
            self.snap()

    def on_end(self, model: nn.Module) -> None:
        """Final snap, then (with `convert`) the packed QuantLayers replace the float layers."""
        if self.converted:
            return
        self.snap()
        if self.convert:
            to_quantized(self.model, self.targets, self.grids)
            self.converted = True
