"""compress(model, recipe, calib) -> a compressed deep copy (the original is untouched).

Layers are compressed one at a time in execution order. A layer whose settings need data
(Wanda scores, N:M by Wanda score, activation calibration, gptq rounding) is calibrated on
the inputs it receives in the partially compressed copy, i.e. on the outputs of the already pruned and
quantized earlier layers (METHODS.md §6: sequential calibration). Each such calibration is a
forward over the calibration batches that stops as soon as the layer has seen its input; a
layer that is called several times per forward is calibrated on its first call.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from edgekit.compress.calibrate import ActObserver
from edgekit.compress.gptq import input_hessians
from edgekit.compress.layers import (QuantLayer, QuantMatrix, lstm_weight_names,
                                     make_quant_layer, weight_2d)
from edgekit.compress.prune import magnitude_mask, nm_mask, wanda_mask, wanda_scores
from edgekit.compress.prune.wanda import feature_sqsum, lstm_feature_sqsum
from edgekit.compress.quantizers import quantize
from edgekit.compress.recipe import LayerSpec, RecipeError, load_recipe


class _Stop(Exception):
    """Raised by a calibration hook once its layer has seen its input."""


def compress(model: nn.Module, recipe: Any, calib: Iterable | None = None) -> nn.Module:
    """Compress a deep copy of `model` per `recipe` (name, path, dict or Recipe).

    `calib`: calibration batches — each a tensor (called as model(x)), a tuple (model(*x)) or
    a dict (model(**x)); needed when a rule uses Wanda or activation calibration.
    Returns the copy with quantized layers (`edgekit.compress.layers`) in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"compress() needs a torch nn.Module, got {type(model).__name__}")
    recipe = load_recipe(recipe)
    out = copy.deepcopy(model).eval()
    plan = recipe.resolve(out)
    batches = None if calib is None else _batches(calib)
    needing = [n for n, _, s in plan if _needs_data(s)]
    if needing and batches is None:
        raise RecipeError(f"{recipe.source}: layer {needing[0]!r} needs calibration data "
                          f"(Wanda, activations or gptq) but calib=None")
    if batches is not None:
        plan = _execution_order(out, plan, batches[0])
    with torch.no_grad():
        for name, module, spec in plan:
            try:
                stats = _calibrate(out, name, module, spec, batches) if _needs_data(spec) else None
                layer = quantize_module(module, spec, stats)
            except RecipeError:
                raise
            except ValueError as exc:
                raise RecipeError(f"{recipe.source}: layer {name!r}: {exc}") from None
            _set_submodule(out, name, layer)
    return out


def quantize_module(module: nn.Module, spec: LayerSpec, stats: dict | None = None) -> QuantLayer:
    """Prune + quantize one float module (taken over, not copied) into a QuantLayer."""
    matrices = {}
    names = lstm_weight_names(module) if isinstance(module, nn.LSTM) else ["weight"]
    for pname in names:
        w2d = weight_2d(module, getattr(module, pname))
        xsq = None if stats is None else stats.get("sqsum", {}).get(pname)
        mask, nm = _mask(w2d, spec.sparsity, xsq)
        hess = None if stats is None else stats.get("hessian", {}).get(pname)
        if hess is not None and stats["frames"][pname] < w2d.shape[1]:
            hess = None     # rank-deficient H: see edgekit.compress.gptq
        qw = quantize(w2d, spec.bits, spec.quantizer, spec.granularity, spec.group_size,
                      spec.codebook, spec.range == "narrow", mask, spec.mu, hessian=hess)
        matrices[pname] = QuantMatrix(qw, nm, "gptq" if hess is not None else "nearest")
    layer = make_quant_layer(module, matrices)
    if spec.activations:
        lo, hi = stats["observer"].range()
        layer.set_activation_range(lo, hi, spec.activations["method"])
    return layer


def _mask(w2d, sp: dict | None, xsq):
    if not sp:
        return None, None
    kind = sp["kind"]
    if kind == "magnitude":
        return magnitude_mask(w2d, sp["amount"], sp["scope"]), None
    xnorm = None if xsq is None else np.sqrt(xsq)
    if kind == "wanda":
        return wanda_mask(w2d, xnorm, sp["amount"]), None
    scores = np.abs(w2d) if sp["score"] == "magnitude" else wanda_scores(w2d, xnorm)
    return nm_mask(scores, sp["n"], sp["m"]), (sp["n"], sp["m"])


def _needs_data(spec: LayerSpec) -> bool:
    return bool(spec.activations) or _wants_wanda(spec) or spec.rounding == "gptq"


def _wants_wanda(spec: LayerSpec) -> bool:
    """Whether the layer's sparsity needs Wanda activation norms (Wanda mask or N:M scores)."""
    sp = spec.sparsity or {}
    return sp.get("kind") == "wanda" or sp.get("score") == "wanda"


def _batches(calib) -> list:
    if isinstance(calib, (torch.Tensor, dict)):
        calib = [calib]
    try:
        batches = list(calib)
    except TypeError:
        raise ValueError(
            f"calib must be an iterable of batches, got {type(calib).__name__}") from None
    if not batches:
        raise ValueError("calib is empty: give at least one calibration batch")
    return batches


def _run(model: nn.Module, batch) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _execution_order(model, plan, batch):
    """The plan sorted by each layer's first call on one batch; never-called layers last."""
    seen: dict[int, int] = {}

    def make_hook(i):
        def hook(mod, args):   # must return None: a pre-hook's return value replaces the input
            seen.setdefault(i, len(seen))
        return hook

    hooks = [m.register_forward_pre_hook(make_hook(i)) for i, (_, m, _) in enumerate(plan)]
    try:
        with torch.no_grad():
            _run(model, batch)
    finally:
        for h in hooks:
            h.remove()
    return [plan[i] for i in sorted(range(len(plan)), key=lambda i: seen.get(i, len(plan) + i))]


def _calibrate(model, name, module, spec, batches) -> dict:
    want_sq = _wants_wanda(spec)
    want_h = spec.rounding == "gptq"
    stats: dict = {"sqsum": {}, "hessian": {}, "frames": {}, "calls": 0}
    if spec.activations:
        stats["observer"] = ActObserver(spec.activations["method"], spec.activations["percentile"])

    def hook(mod, args):
        x = args[0]
        if "observer" in stats:
            stats["observer"].update(x)
        if want_sq:
            if isinstance(mod, nn.LSTM):
                sq = lstm_feature_sqsum(mod, x, args[1] if len(args) > 1 else None)
            else:
                sq = {"weight": feature_sqsum(mod, x)}
            for k, v in sq.items():
                stats["sqsum"][k] = stats["sqsum"].get(k, 0.0) + v
        if want_h:
            for k, (h, frames) in input_hessians(mod, args).items():
                stats["hessian"][k] = stats["hessian"].get(k, 0.0) + h
                stats["frames"][k] = stats["frames"].get(k, 0) + frames
        stats["calls"] += 1
        raise _Stop

    h = module.register_forward_pre_hook(hook)
    try:
        for b in batches:
            try:
                _run(model, b)
            except _Stop:
                pass
    finally:
        h.remove()
    if stats["calls"] == 0:
        raise RecipeError(f"layer {name!r} was never called on the calibration batches")
    return stats


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
