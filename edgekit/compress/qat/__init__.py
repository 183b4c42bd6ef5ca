"""Quantization-aware training: S8BQAT (METHODS.md §3) and GQ (§4), plus training-time pruning.

    from edgekit.compress.qat import prepare
    model, regularizer, callbacks = prepare("gq", model, "gq-5bit", steps=300)
    train(model, batches, loss_fn, cfg, regularizer=regularizer, callbacks=callbacks)
    # model now holds QuantLinear / QuantConv1d / QuantLSTM layers: export or evaluate it

Bits, quantizer and scale granularity per layer come from the recipe, exactly as for
`edgekit.compress.compress`; the methods train against centroids that already lie on the int8
grid, and their `on_end` callback snaps every weight and converts the layers, so the exported
codebook/codes/scales are the trained weights with no further rounding.
`load_quantized(model, state_dict)` rebuilds such a model from a saved state_dict.
"""

from __future__ import annotations

from edgekit.compress.qat.common import (Grid, Target, load_quantized, resolve_targets,
                                         to_quantized)
from edgekit.compress.qat.gq import GQ
from edgekit.compress.qat.s8bqat import S8BQAT, mracos

METHODS = ("s8bqat", "gq")
DEFAULT_RECIPES = {"s8bqat": "mixed", "gq": "gq-5bit"}


def prepare(method: str, model, recipe=None, *, steps: int | None = None,
            prune: dict | None = None, **knobs):
    """(model, regularizer, callbacks) for `edgekit.train.loop.train`.

    method: "s8bqat" or "gq"; recipe: name, path, dict or Recipe (default: "mixed" for S8BQAT,
    "gq-5bit" for GQ). `steps`: the run's optimizer steps (GQ anneals T over them; the pruning
    schedule ends at 3/4 of them). `prune`: {"kind": "csp" | "magnitude", "sparsity": s, ...
    other CSP / GradualMagnitude knobs}. `knobs` go to S8BQAT (lam, warmup, period) or GQ
    (t0, t_min, hard_every, mu, scale). The model is modified in place and returned.
    """
    if method not in METHODS:
        raise ValueError(f"unknown QAT method {method!r}; expected one of {', '.join(METHODS)}")
    recipe = recipe or DEFAULT_RECIPES[method]
    if steps is not None:
        steps = int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
    if prune:
        _check_prune_recipe(model, recipe)
    if method == "s8bqat":
        qat = S8BQAT(model, recipe, **knobs)
        regularizer = qat.regularizer
    else:
        qat = GQ(model, recipe, steps=steps or 1000, **knobs)
        regularizer = None
    callbacks = [qat]
    if prune:
        callbacks.insert(0, _pruner(model, qat.targets, dict(prune), steps or 1000))
    return model, regularizer, callbacks


def _check_prune_recipe(model, recipe) -> None:
    """Training-time pruning replaces the recipe's masks with unstructured ones, which would
    break an N:M guarantee the packed layer still claims: refuse before touching the model."""
    from edgekit.compress.recipe import load_recipe
    for name, _, spec in load_recipe(recipe).resolve(model):
        if spec.sparsity and spec.sparsity.get("kind") == "nm":
            raise ValueError(f"layer {name!r}: the recipe's N:M sparsity cannot be combined "
                             "with prune= (training-time pruning is unstructured); drop one")


def _pruner(model, targets, prune: dict, steps: int):
    from edgekit.compress.prune.csp import CSP
    from edgekit.compress.prune.gradual import GradualMagnitude

    kind = prune.pop("kind", None)
    cls = {"csp": CSP, "magnitude": GradualMagnitude}.get(kind)
    if cls is None:
        raise ValueError(f"prune kind must be 'csp' or 'magnitude', got {kind!r}")
    if "sparsity" not in prune:
        raise ValueError("prune needs 'sparsity'")
    prune.setdefault("end", max(1, 3 * steps // 4))
    prune.setdefault("every", max(1, prune["end"] // 12))
    # The QAT method packs the layers; the pruner only keeps the masks on the shared targets.
    return cls(model, targets=targets, convert=False, **prune)


__all__ = ["DEFAULT_RECIPES", "GQ", "Grid", "METHODS", "S8BQAT", "Target", "load_quantized",
           "mracos", "prepare", "resolve_targets", "to_quantized"]
