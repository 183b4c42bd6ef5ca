"""What every training-time compressor shares: the weights a recipe selects, their centroid
grids, exact snapping, and the conversion into the packed layers of `edgekit.compress.layers`.

A `Target` is one weight matrix of one layer (an LSTM has several), seen in the (N, K) view the
packed format uses. A `Grid` is the fixed part of its representation: an int8 `table`
(1 or N rows of 2^b entries, sorted) and float32 `scale` (N, G). Centroids in weight space are
``scale[n, g(k)] * table[row(n), j]``. `Grid.snap` rounds weights onto those centroids with
exactly the arithmetic of `quantizers.dequantize`, so that after the last snap the float weight
*is* the packed weight bit for bit and `to_quantized` performs no further rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgekit.compress.layers import (QuantMatrix, lstm_weight_names, make_quant_layer,
                                     weight_2d, weight_from_2d)
from edgekit.compress.prune import magnitude_mask, nm_mask
from edgekit.compress.quantizers import QuantizedWeight, _assign, dequantize
from edgekit.compress.recipe import LayerSpec, load_recipe


def view_2d(module: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Differentiable (N, K) view of a weight (mirrors `layers.weight_2d`)."""
    if isinstance(module, nn.ConvTranspose1d):
        g = module.groups
        cin, cog, k = w.shape
        w = w.reshape(g, cin // g, cog, k).permute(0, 2, 1, 3)
        return w.reshape(g * cog, (cin // g) * k)
    return w.reshape(w.shape[0], -1)


@dataclass
class Target:
    """One trainable weight matrix that a recipe rule selected."""

    layer: str              # module name in the model
    module: nn.Module
    pname: str              # parameter name on the module ('weight', 'weight_hh_l0', ...)
    spec: LayerSpec
    mask: np.ndarray | None = None      # (N, K) bool, False = pruned
    nm: tuple[int, int] | None = None

    @property
    def param(self) -> torch.Tensor:
        """The live parameter (the parametrized original while GQ is attached)."""
        m = self.module
        if hasattr(m, "parametrizations") and self.pname in m.parametrizations:
            return m.parametrizations[self.pname].original
        return getattr(m, self.pname)

    def w2d(self) -> np.ndarray:
        """Current float weight as an (N, K) float32 array."""
        return weight_2d(self.module, self.param)

    def write_2d(self, w2d: np.ndarray) -> None:
        """Overwrite the parameter in place with an (N, K) array (exact float32 copy)."""
        p = self.param
        with torch.no_grad():
            p.copy_(weight_from_2d(self.module, w2d, p.shape))

    def apply_mask(self) -> None:
        """Zero the pruned weights (after every optimizer step: Adam moments move them)."""
        if self.mask is not None:
            self.write_2d(np.where(self.mask, self.w2d(), np.float32(0)))

    @property
    def key(self) -> str:
        return f"{self.layer}.{self.pname}"


def resolve_targets(model: nn.Module, recipe) -> list[Target]:
    """Every weight matrix the recipe quantizes, with any recipe sparsity applied as a mask.

    Magnitude and N:M-by-magnitude masks are computed here from the starting weights; Wanda
    needs calibration data, which training-time compression does not take (use CSP or
    gradual magnitude pruning, or `compress()` after training).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"QAT needs a torch nn.Module, got {type(model).__name__}")
    rec = load_recipe(recipe)
    out = []
    for name, module, spec in rec.resolve(model):
        if spec.rounding == "gptq":
            raise ValueError(f"{rec.source}: layer {name!r}: rounding gptq is data-aware "
                             "post-training rounding; QAT chooses its own codes")
        names = lstm_weight_names(module) if isinstance(module, nn.LSTM) else ["weight"]
        for pname in names:
            t = Target(name, module, pname, spec)
            t.mask, t.nm = _recipe_mask(t, rec.source)
            t.apply_mask()
            out.append(t)
    return out


def _recipe_mask(t: Target, source: str):
    sp = t.spec.sparsity
    if not sp:
        return None, None
    w = t.w2d()
    if sp["kind"] == "magnitude":
        return magnitude_mask(w, sp["amount"], sp["scope"]), None
    if sp["kind"] == "nm" and sp["score"] == "magnitude":
        return nm_mask(np.abs(w), sp["n"], sp["m"]), (sp["n"], sp["m"])
    raise ValueError(f"{source}: layer {t.layer!r}: Wanda scores need calibration data; "
                     "QAT supports magnitude and N:M-by-magnitude sparsity in the recipe")


class Grid:
    """Fixed centroids of one matrix: int8 `table` (R, 2^b), float32 `scale` (N, G)."""

    def __init__(self, table: np.ndarray, scale: np.ndarray, group_size: int, bits: int,
                 quantizer: str, lo: int = 0):
        table = np.sort(np.asarray(table, np.int8), axis=1)
        if table.shape[1] != 1 << bits:
            raise ValueError(f"a {bits}-bit table needs {1 << bits} entries, got {table.shape[1]}")
        self.table = table
        self.scale = np.ascontiguousarray(scale, np.float32)
        self.group_size = int(group_size)
        self.bits = int(bits)
        self.quantizer = quantizer
        self.lo = int(lo)   # entries below `lo` are never chosen (narrow uniform grids)

    def codes(self, w2d: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid of every weight (ties: the lower one)."""
        return _assign(np.asarray(w2d, np.float64), self.table, self.scale.astype(np.float64),
                       self.group_size, self.lo)

    def snap(self, w2d: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Weights rounded to their nearest centroid, exactly as the packed layer stores them."""
        return dequantize(self.codes(w2d), self.table, self.scale, self.group_size, mask)

    def scale_2d(self, k: int) -> np.ndarray:
        """(N, K) per-weight scale."""
        if self.scale.shape[1] == 1:
            return np.broadcast_to(self.scale, (self.scale.shape[0], k))
        return np.repeat(self.scale, self.group_size, axis=1)[:, :k]

    def region_table(self) -> np.ndarray:
        """(R, L) strictly increasing centroids per row, padded beyond the largest by repeating
        the last spacing. Because the outer regions' periods continue outward (METHODS §3),
        the padded points change nothing in MRACos, but they keep every row the same length.
        """
        rows, width = [], self.table.shape[1] - self.lo
        for r in self.table[:, self.lo:].astype(np.float64):
            u = np.unique(r)
            if len(u) == 1:
                u = np.array([u[0], u[0] + 1.0])
            step = u[-1] - u[-2]
            pad = u[-1] + step * np.arange(1, width - len(u) + 1)
            rows.append(np.concatenate([u, pad]))
        return np.asarray(rows)

    def levels(self) -> int:
        return int(max(len(np.unique(r)) for r in self.table[:, self.lo:]))

    def quantized(self, w2d: np.ndarray, mask: np.ndarray | None) -> QuantizedWeight:
        """The packed representation of weights that already lie on the grid."""
        codes = self.codes(w2d)
        if mask is not None:
            codes = np.where(mask, codes, 0).astype(np.uint8)
        return QuantizedWeight(codes=codes, codebook=self.table.copy(), scale=self.scale.copy(),
                               bits=self.bits, group_size=self.group_size,
                               quantizer=self.quantizer, levels=self.levels(),
                               mask=None if mask is None else np.asarray(mask, bool).copy())


def to_quantized(model: nn.Module, targets: list[Target], grids: dict[str, Grid]) -> nn.Module:
    """Replace every target layer of `model` (in place) with its packed QuantLayer.

    Each weight is snapped onto its grid first (a no-op when training ended with a snap), so
    the QuantLayer's dequantized weight equals the trained weight bit for bit.
    """
    by_layer: dict[str, list[Target]] = {}
    for t in targets:
        by_layer.setdefault(t.layer, []).append(t)
    for layer, ts in by_layer.items():
        matrices = {}
        for t in ts:
            g = grids[t.key]
            w = g.snap(t.w2d(), t.mask)
            t.write_2d(w)
            matrices[t.pname] = QuantMatrix(g.quantized(w, t.mask), t.nm)
        parent_name, _, child = layer.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make_quant_layer(ts[0].module, matrices))
    return model


def check_knob(name: str, value, lo: float, hi: float = float("inf"), integer: bool = False):
    """Validate one numeric knob; ValueError with the knob's name otherwise."""
    ok_type = (isinstance(value, (int, np.integer)) if integer
               else isinstance(value, (int, float, np.floating)))
    if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} in [{lo}, {hi}], got {value!r}")
    return value


def load_quantized(model: nn.Module, state_dict: dict) -> nn.Module:
    """Rebuild packed layers in a float `model` from the state_dict of a QAT-converted (or
    `compress`ed) model of the same architecture, then load every tensor (strict).

    bits, group_size and the effective level count are read off the buffers; what the buffers
    do not carry (N:M guarantee, quantizer name, activation grids) is left unset — the export
    pipeline recalibrates activations.
    """
    layers: dict[str, dict[str, dict]] = {}
    for key, value in state_dict.items():
        head, sep, tail = key.rpartition(".matrices.")
        if not sep:
            continue
        pname, _, field = tail.rpartition(".")
        layers.setdefault(head, {}).setdefault(pname, {})[field] = value
    for layer, mats in layers.items():
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"state_dict has packed layer {layer!r}, the model does not") from None
        qms = {p: QuantMatrix(_weight_from_buffers(f"{layer}.{p}", f)) for p, f in mats.items()}
        for p, qm in qms.items():
            have = getattr(module, p, None)
            if have is None or weight_2d(module, have).shape != tuple(qm.codes.shape):
                raise ValueError(f"packed weight {layer}.{p} of shape {tuple(qm.codes.shape)} "
                                 "does not fit the model")
        parent_name, _, child = layer.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make_quant_layer(module, qms))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"state_dict does not fit the model: {str(exc).splitlines()[0]}") from None
    for m in model.modules():
        if hasattr(m, "refresh") and hasattr(m, "matrices"):
            m.refresh()
    return model


def _weight_from_buffers(where: str, f: dict) -> QuantizedWeight:
    missing = [k for k in ("codes", "codebook", "scale") if k not in f]
    if missing:
        raise ValueError(f"{where}: packed weight lacks {', '.join(missing)}")
    codes, table, scale = (f[k].numpy() for k in ("codes", "codebook", "scale"))
    bits = int(table.shape[1]).bit_length() - 1
    if table.ndim != 2 or 1 << bits != table.shape[1] or not 1 <= bits <= 8:
        raise ValueError(f"{where}: codebook of shape {table.shape} is not (R, 2^b)")
    k, groups = codes.shape[1], scale.shape[1]
    gs = 0
    if groups > 1:
        gs = -(-(-(-k // groups)) // 64) * 64
        if -(-k // gs) != groups:
            raise ValueError(f"{where}: {groups} scale groups do not fit K = {k}")
    mask = f["mask"].numpy() if "mask" in f else None
    levels = max(len(np.unique(r)) for r in table)
    return QuantizedWeight(codes=codes, codebook=table, scale=scale, bits=bits, group_size=gs,
                           quantizer="loaded", levels=levels, mask=mask)
