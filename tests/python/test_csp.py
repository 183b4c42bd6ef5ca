"""CSP (METHODS.md §5) and gradual magnitude pruning during training: schedule, exact sparsity,
ISTA, masks in the packed layers, composition with QAT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress.layers import QuantLinear
from edgekit.compress.prune.csp import CSP, csp_alpha, exact_support, ista, soft_threshold
from edgekit.compress.prune.gradual import GradualMagnitude, cubic_sparsity
from edgekit.compress.qat import prepare
from edgekit.train.loop import TrainConfig, train


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 64, generator=g)
    y = x @ (torch.randn(8, 64, generator=g) * 0.3).T
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 8)), x, y


def _fit(model, x, y, steps, callbacks, regularizer=None):
    batches = lambda: [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)]  # noqa: E731
    cfg = TrainConfig(steps=steps, lr=1e-2, warmup=5, log_every=1000)
    loss = lambda m, b: (nn.functional.mse_loss(m(b[0]), b[1]), {})  # noqa: E731
    return train(model, batches, loss, cfg, callbacks=callbacks, regularizer=regularizer)


def test_cubic_schedule():
    assert cubic_sparsity(0, 0.5, 10, 110) == 0.0
    assert cubic_sparsity(10, 0.5, 10, 110) == 0.0
    assert cubic_sparsity(60, 0.5, 10, 110) == pytest.approx(0.5 * (1 - 0.5 ** 3))
    assert cubic_sparsity(110, 0.5, 10, 110) == 0.5
    assert cubic_sparsity(500, 0.5, 10, 110) == 0.5


def test_ista_converges_to_the_soft_threshold_minimiser():
    w = np.random.default_rng(0).normal(size=(4, 50))
    alpha = csp_alpha(w, 0.5)
    x = ista(w, alpha, iters=200, eta=0.25)
    assert np.allclose(x, soft_threshold(w, alpha / 2), atol=1e-9)
    assert np.allclose(ista(w, alpha, iters=1, eta=0.5), soft_threshold(w, alpha / 2))
    # α makes the minimiser exactly s-sparse per row (ties aside)
    assert np.all((soft_threshold(w, alpha / 2) == 0).sum(1) == 25)
    mask = exact_support(ista(w, alpha, 2, 0.1), w, 0.5, "row")
    assert np.all((~mask).sum(1) == 25)


@pytest.mark.parametrize("cls", [CSP, GradualMagnitude])
def test_reaches_target_sparsity_on_schedule(cls):
    model, x, y = _toy()
    pruner = cls(model, sparsity=0.5, begin=10, end=70, every=10)
    seen = {}

    class Probe:
        def on_step(self, m, step):
            seen[step] = pruner.sparsity()

    _fit(model, x, y, 100, [pruner, Probe()])
    for step in (20, 40, 60):   # each update lands exactly on the cubic schedule
        want = sum(np.floor(cubic_sparsity(step, 0.5, 10, 70) * t.w2d().shape[1]) * t.w2d().shape[0]
                   for t in pruner.targets) / sum(t.w2d().size for t in pruner.targets)
        assert seen[step] == pytest.approx(want, abs=1e-9)
    assert seen[5] == 0.0
    assert all(seen[s] == pytest.approx(0.5) for s in range(70, 101))
    # the masks are packed with the layers: exactly 50 % of every row stored as zero
    for layer in (model[0], model[2]):
        assert isinstance(layer, QuantLinear)
        mask = layer.q.mask.numpy()
        assert np.all((~mask).sum(1) == mask.shape[1] // 2)
        assert np.all(layer.q.dequantize()[~mask] == 0)
    with torch.no_grad():
        loss = float(nn.functional.mse_loss(model(x), y))
    assert loss < 0.5 * float(y.var())     # still fits after 50 % pruning + int8


def test_csp_soft_thresholds_survivors_unless_shrink_is_off():
    model, _, _ = _toy()
    before = model[0].weight.detach().clone()
    csp = CSP(model, sparsity=0.5, begin=0, end=10, every=10)
    csp.update(10)
    after = model[0].weight.detach()
    kept = after != 0
    assert float((~kept).float().mean()) == pytest.approx(0.5)
    assert torch.all(after[kept].abs() < before[kept].abs())     # soft-thresholded
    no_shrink = CSP(_toy()[0], sparsity=0.5, begin=0, end=10, every=10, shrink=False)
    no_shrink.update(10)
    w = no_shrink.targets[0].param.detach()
    assert torch.equal(w[w != 0], before[w != 0])


def test_pruning_composes_with_qat():
    model, x, y = _toy()
    recipe = {"name": "r", "rules": [{"match": "*", "bits": 4, "quantizer": "lloyd_max"}]}
    for method in ("s8bqat", "gq"):
        m, _, _ = _toy()
        m, reg, cbs = prepare(method, m, recipe, steps=40,
                              prune={"kind": "csp", "sparsity": 0.5, "every": 10})
        _fit(m, x, y, 40, cbs, reg)
        for layer in (m[0], m[2]):
            assert isinstance(layer, QuantLinear) and layer.bits == 4
            assert layer.q.sparsity() == pytest.approx(0.5)
            w = layer.base.weight.detach().numpy()
            assert np.array_equal(w, layer.q.dequantize())


def test_bad_knobs():
    model, _, _ = _toy()
    with pytest.raises(ValueError, match="sparsity"):
        CSP(model, sparsity=1.5)
    with pytest.raises(ValueError, match="end"):
        GradualMagnitude(model, sparsity=0.5, begin=10, end=5)
    with pytest.raises(ValueError, match="scope"):
        GradualMagnitude(model, sparsity=0.5, scope="column")
    with pytest.raises(ValueError, match="eta"):
        CSP(model, sparsity=0.5, eta=2.0)
