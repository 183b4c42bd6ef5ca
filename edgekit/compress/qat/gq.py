"""GQ, the General Quantizer (METHODS.md §4): soft-to-hard quantization onto self-adjusting
centroids in μ-law space; no regulariser.

    qat = GQ(model, "gq-5bit", steps=cfg.steps)
    train(model, ..., callbacks=[qat])     # on_end: hard assignment + packed QuantLayers

Edgekit formulation. Per matrix: learnable u ∈ [-1, 1]^K (K = 2^b, init linspace(-1, 1)) and a
scale s (max |w| of the tensor, or of each output row with `scale="channel"`). Centroids
``c_k = s · μ⁻¹(u_k)``, μ⁻¹(y) = sign(y)((1 + μ)^|y| - 1)/μ. The packed format stores int8
codebooks, so c_k is rounded onto the grid Δ = s/127 in the forward (straight-through for the
gradient to u): the centroids the model trains against are exactly the ones it ships.
Soft weight ŵ = Σ_k softmax_k(-|w - c_k| / T) c_k, T annealed exponentially from
T₀ = `t0`·s to T_min = `t_min`·s over `steps` optimizer steps (then held). Gradients reach w
and u. `hard_every` P > 0: every P-th step runs with the hard nearest centroid instead
(straight-through to w), the "quantization frequency" the GQ paper ablates. At the end each w
is assigned its nearest centroid — the T → 0 limit of ŵ — and the layer is packed with
codebook round(c/Δ) and scale Δ.

Recipe rules with `quantizer: uniform` keep their PTQ grid (identity codebook, so the kernels'
affine fast path survives) and only anneal soft-to-hard; every other rule (mulaw, lloyd_max,
binary) gets learnable μ-law centroids with one table per tensor (`codebook: channel` is not
supported by GQ). Binary (1-bit) starts at ±mean|w| instead of ±max|w|.

Deviations from METHODS §4, both forced by the int8 codebook of the packed format:
- μ-law crowds the initial centroids near 0, where several round to the same int8 level, so
  GQ starts with fewer than 2^b distinct levels (15 of 16 at 4 bits, 27 of 32 at 5 bits); the
  duplicates can separate as u trains, but nothing forces them to.
- `uniform` rules have fixed centroids (the affine PTQ grid): only the soft-to-hard annealing
  applies to them, not the self-adjusting centroids.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgekit.compress.layers import weight_from_2d
from edgekit.compress.qat.common import Grid, Target, check_knob, resolve_targets, to_quantized
from edgekit.compress.quantizers import quantize


def mulaw(x: torch.Tensor, mu: float = 255.0) -> torch.Tensor:
    """μ(x) = sign(x) ln(1 + μ|x|) / ln(1 + μ)."""
    return torch.sign(x) * torch.log1p(mu * torch.abs(x)) / math.log1p(mu)


def mulaw_inv(y: torch.Tensor, mu: float = 255.0) -> torch.Tensor:
    """μ⁻¹(y) = sign(y) ((1 + μ)^|y| - 1) / μ."""
    return torch.sign(y) * torch.expm1(torch.abs(y) * math.log1p(mu)) / mu


def soft_assign(v: torch.Tensor, grid: torch.Tensor, temperature: float) -> torch.Tensor:
    """Σ_k softmax_k(-|v - g_k| / T) g_k, elementwise over v (any shape), centroids (K,)."""
    logits = -torch.abs(v.unsqueeze(-1) - grid) / temperature
    return (torch.softmax(logits, dim=-1) * grid).sum(-1)


def hard_assign(v: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest centroid of every v (ties: the lower index), differentiable in the centroids."""
    idx = torch.argmin(torch.abs(v.detach().unsqueeze(-1) - grid.detach()), dim=-1)
    return grid[idx]


class GQWeight(nn.Module):
    """The parametrization w -> ŵ of one weight (works in the parameter's own shape).

    `step_units` (param shape) is Δ per weight; centroids are kept in table units (c/Δ).
    """

    def __init__(self, step_units: torch.Tensor, u0: torch.Tensor, mu: float, learnable: bool,
                 table: torch.Tensor | None, mask: torch.Tensor | None, temperature: float):
        super().__init__()
        self.register_buffer("delta", step_units)
        self.register_buffer("inv_delta", 1.0 / step_units)
        self.register_buffer("mask", mask)
        self.register_buffer("fixed", table)
        self.u = nn.Parameter(u0.clone(), requires_grad=learnable) if table is None else None
        self.mu = float(mu)
        self.temperature = float(temperature)   # in table units: T / Δ
        self.hard = False
        self.mask_src = None   # the Target's (N, K) mask this buffer was built from

    def grid(self) -> torch.Tensor:
        """Centroids in table units, rounded to integers (straight-through to u)."""
        if self.fixed is not None:
            return self.fixed
        m = 127.0 * mulaw_inv(self.u.clamp(-1.0, 1.0), self.mu)
        return torch.round(m).detach() + (m - m.detach())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        v = w * self.inv_delta
        g = self.grid()
        if self.hard:
            vq = hard_assign(v, g) + (v - v.detach())   # value exactly g[idx]; STE to w
        else:
            vq = soft_assign(v, g, self.temperature)
        out = vq * self.delta
        return out if self.mask is None else out * self.mask

    def table(self) -> np.ndarray:
        """The int8 codebook (1, K) this parametrization ships (sorted)."""
        with torch.no_grad():
            g = self.grid().detach().numpy()
        return np.sort(np.clip(np.rint(g), -128, 127).astype(np.int8))[None, :]


class GQ:
    """Training-loop hooks for GQ over every layer a recipe selects (see module docstring).

    Knobs: `steps` (the annealing length; pass the run's total steps), `t0`, `t_min` (T as a
    fraction of s), `hard_every` (0: never), `mu`, `scale` ("tensor" as METHODS §4, or
    "channel"), `convert` (replace the layers with packed QuantLayers in `on_end`).
    """

    def __init__(self, model: nn.Module, recipe, steps: int = 1000, t0: float = 0.05,
                 t_min: float = 1e-3, hard_every: int = 0, mu: float = 255.0,
                 scale: str = "tensor", convert: bool = True):
        self.steps = int(check_knob("steps", steps, 1, integer=True))
        self.t0 = float(check_knob("t0", t0, 1e-9))
        self.t_min = float(check_knob("t_min", t_min, 1e-9, self.t0))
        self.hard_every = int(check_knob("hard_every", hard_every, 0, integer=True))
        self.mu = float(check_knob("mu", mu, 1e-9))
        if scale not in ("tensor", "channel"):
            raise ValueError(f"scale must be 'tensor' or 'channel', got {scale!r}")
        self.scale, self.convert, self.model = scale, bool(convert), model
        self.targets = resolve_targets(model, recipe)
        self.params: dict[str, GQWeight] = {}
        self.scales: dict[str, np.ndarray] = {}
        for t in self.targets:
            if t.spec.codebook == "channel" and t.spec.quantizer != "uniform":
                raise ValueError(f"layer {t.layer!r}: GQ learns one codebook per tensor; "
                                 "set codebook: tensor")
            p = self._parametrization(t)
            parametrize.register_parametrization(t.module, t.pname, p)
            p.mask_src = t.mask
            self.params[t.key] = p
        self.converted = False
        self.set_step(1)

    def _parametrization(self, t: Target) -> GQWeight:
        w = t.w2d()
        n, k = w.shape
        wm = np.abs(w if t.mask is None else np.where(t.mask, w, 0))
        fixed, u0 = None, None
        if t.spec.quantizer == "uniform":
            qw = quantize(w, t.spec.bits, "uniform", t.spec.granularity, t.spec.group_size,
                          mask=t.mask, narrow=t.spec.range == "narrow")
            scale = qw.scale
            fixed = torch.from_numpy(qw.codebook[0].astype(np.float32))
            if t.spec.range == "narrow":
                fixed = fixed[1:]
        else:
            s = wm.max(axis=1, keepdims=True) if self.scale == "channel" else \
                np.full((n, 1), wm.max())
            scale = (np.where(s > 0, s, 1.0) / 127.0).astype(np.float32)
            if t.spec.bits == 1:
                ratio = wm / (scale * 127.0)
                a = float(ratio[wm > 0].mean()) if np.any(wm > 0) else 1.0
                u0 = mulaw(torch.tensor([-a, a], dtype=torch.float64), self.mu).float()
            else:
                u0 = torch.linspace(-1.0, 1.0, 1 << t.spec.bits)
        self.scales[t.key] = scale
        se = np.repeat(scale, t.spec.group_size, axis=1)[:, :k] if scale.shape[1] > 1 else \
            np.broadcast_to(scale, (n, k))
        delta = weight_from_2d(t.module, se, t.param.shape).clone()
        mask = None if t.mask is None else weight_from_2d(
            t.module, t.mask.astype(np.float32), t.param.shape).clone()
        return GQWeight(delta, u0 if u0 is not None else torch.zeros(0), self.mu,
                        fixed is None, fixed, mask, self.t0 * 127.0)

    def temperature_at(self, step: int) -> float:
        """T/s at optimizer step `step`: t0 · (t_min/t0)^(step/steps), held after `steps`."""
        frac = min(1.0, max(0.0, step / self.steps))
        return self.t0 * (self.t_min / self.t0) ** frac

    def set_step(self, step: int) -> None:
        """Configure the forward of optimizer step `step` (temperature, hard or soft)."""
        tau = self.temperature_at(step) * 127.0
        hard = bool(self.hard_every) and step % self.hard_every == 0
        for p in self.params.values():
            p.temperature, p.hard = tau, hard

    def on_step(self, model: nn.Module, step: int) -> None:
        """After optimizer step `step`: prepare step + 1; follow masks a pruner changed."""
        if self.converted:
            return
        self.set_step(step + 1)
        for t in self.targets:
            p = self.params[t.key]
            if p.mask_src is not t.mask:
                p.mask_src = t.mask
                p.mask = None if t.mask is None else weight_from_2d(
                    t.module, t.mask.astype(np.float32), t.param.shape).clone()

    def grids(self) -> dict[str, Grid]:
        """The current hard grids (codebook round(c/Δ), scale Δ) of every target."""
        out = {}
        for t in self.targets:
            p = self.params[t.key]
            if p.fixed is not None:
                table = np.asarray(p.fixed.numpy(), np.int8)[None, :]
                lo = 0
                if t.spec.range == "narrow":
                    table, lo = np.concatenate([[[-(1 << (t.spec.bits - 1))]], table], 1), 1
                out[t.key] = Grid(table, self.scales[t.key], t.spec.group_size, t.spec.bits,
                                  "uniform", lo)
            else:
                out[t.key] = Grid(p.table(), self.scales[t.key], 0, t.spec.bits, "gq")
        return out

    def detach(self) -> dict[str, Grid]:
        """Remove the parametrizations (the raw w stay) and return the final grids."""
        grids = self.grids()
        for t in self.targets:
            if parametrize.is_parametrized(t.module, t.pname):
                parametrize.remove_parametrizations(t.module, t.pname, leave_parametrized=False)
        return grids

    def on_end(self, model: nn.Module) -> None:
        """Hard assignment (T → 0) and, with `convert`, the packed QuantLayers."""
        if self.converted:
            return
        grids = self.detach()
        if self.convert:
            to_quantized(self.model, self.targets, grids)
        else:
            for t in self.targets:
                t.write_2d(grids[t.key].snap(t.w2d(), t.mask))
        self.converted = True
