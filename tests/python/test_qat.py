"""S8BQAT and GQ (METHODS.md §3-4): regulariser, hard compressor, μ-law maps, soft-to-hard limit,
toy training ending exactly on the packed grid, conversion to the packed layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress.layers import QuantLinear, QuantLSTM, weight_2d
from edgekit.compress.qat import GQ, S8BQAT, load_quantized, mracos, prepare
from edgekit.compress.qat.gq import hard_assign, mulaw, mulaw_inv, soft_assign
from edgekit.compress.quantizers import mulaw_inverse
from edgekit.train.loop import TrainConfig, train

R4 = {"name": "t4", "rules": [{"match": "*", "bits": 4, "quantizer": "lloyd_max"}]}
R4_GQ = {"name": "g4", "rules": [{"match": "*", "bits": 4, "quantizer": "mulaw"}]}


def test_mracos_zero_on_centroids_one_halfway():
    c = torch.tensor([[-7.0, -2.0, 0.0, 1.0, 9.0]])
    assert torch.allclose(mracos(c, c), torch.zeros_like(c), atol=1e-6)
    mid = (c[:, 1:] + c[:, :-1]) / 2
    assert torch.allclose(mracos(mid, c), torch.ones_like(mid), atol=1e-6)
    # outside the outer centroids the outer period continues: zeros at c_0 - Δ_0, c_L + Δ_L
    out = torch.tensor([[-12.0, 17.0, -9.5, 13.0]])
    assert torch.allclose(mracos(out, c), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), atol=1e-6)
    # per-row tables, each its own regions; constant spacing is ACosR
    rows = torch.tensor([[0.0, 1.0, 2.0], [0.0, 4.0, 8.0]])
    v = torch.tensor([[0.25, 1.5], [1.0, 6.0]])
    want = 1 - torch.abs(torch.cos(math.pi * torch.tensor([[0.25, 0.5], [0.25, 0.5]])))
    assert torch.allclose(mracos(v, rows), want, atol=1e-6)


def test_mracos_gradient_pulls_towards_nearest_centroid():
    c = torch.tensor([[0.0, 10.0]])
    v = torch.tensor([[2.0, 8.0]], requires_grad=True)
    mracos(v, c).sum().backward()
    assert v.grad[0, 0] > 0 and v.grad[0, 1] < 0   # descent moves 2 -> 0 and 8 -> 10


def _toy(seed=0, n_in=16, n_out=8):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n_out, n_in, generator=g) * 0.5
    x = torch.randn(512, n_in, generator=g)
    y = x @ teacher.T
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, 32), nn.Tanh(), nn.Linear(32, n_out))
    return model, x, y


def _batches(x, y, bs=64):
    return lambda: [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]


def _mse(m, batch):
    return nn.functional.mse_loss(m(batch[0]), batch[1]), {}


def _fit(model, x, y, steps, **hooks):
    cfg = TrainConfig(steps=steps, lr=1e-2, warmup=10, weight_decay=0.0, log_every=1000)
    return train(model, _batches(x, y), _mse, cfg, **hooks)


def _on_centroids(qat, t) -> bool:
    w = t.w2d()
    g = qat.grids[t.key]
    cents = g.scale_2d(w.shape[1])[..., None] * g.table[0].astype(np.float32)
    return bool(np.all(np.any(w[..., None] == cents.astype(np.float32), axis=-1)))


def test_hard_compressor_snaps_exactly_on_its_period_only():
    model, _, _ = _toy()
    qat = S8BQAT(model, R4, period=5)
    before = [t.w2d().copy() for t in qat.targets]
    qat.on_step(model, 3)                  # off the period: weights untouched
    for t, w in zip(qat.targets, before):
        assert np.array_equal(t.w2d(), w) and not _on_centroids(qat, t)
    qat.on_step(model, 10)                 # step % period == 0: the hard compressor runs
    for t in qat.targets:
        w, g = t.w2d(), qat.grids[t.key]
        assert _on_centroids(qat, t)
        assert np.array_equal(g.snap(w), w)            # idempotent
        assert np.array_equal(g.quantized(w, None).dequantize(), w)


def test_mulaw_maps_round_trip():
    y = torch.linspace(-1, 1, 101, dtype=torch.float64)
    assert torch.allclose(mulaw(mulaw_inv(y)), y, atol=1e-12)
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    assert torch.allclose(mulaw_inv(mulaw(x)), x, atol=1e-12)
    assert np.allclose(mulaw_inv(y).numpy(), mulaw_inverse(y.numpy()))   # same map as PTQ
    assert float(mulaw_inv(torch.tensor(1.0))) == pytest.approx(1.0)


def test_gq_zero_temperature_is_nearest_centroid():
    g = torch.Generator().manual_seed(3)
    grid = torch.tensor([-127.0, -40.0, -5.0, 0.0, 6.0, 50.0, 127.0])
    v = torch.randn(1000, generator=g) * 60
    near = hard_assign(v, grid)
    assert torch.equal(near, grid[torch.argmin((v[:, None] - grid).abs(), 1)])
    assert torch.allclose(soft_assign(v, grid, 1e-3), near, atol=1e-4)
    # far from zero temperature the soft weight is a blend, not a centroid
    assert not torch.allclose(soft_assign(v, grid, 20.0), near, atol=1.0)


def test_gq_parametrized_layer_at_low_temperature_equals_its_packed_grid():
    model, _, _ = _toy()
    qat = GQ(model, R4_GQ, steps=10, t0=1e-6, t_min=1e-7)
    grids = qat.grids()
    for t in qat.targets:
        soft = weight_2d(t.module, getattr(t.module, t.pname))   # ŵ at T ≈ 0
        hard = grids[t.key].snap(t.w2d())
        assert np.allclose(soft, hard, atol=1e-6 * np.abs(hard).max())


@pytest.mark.parametrize("method", ["s8bqat", "gq"])
def test_toy_regression_ends_on_centroids_near_float_loss(method):
    model, x, y = _toy()
    _fit(model, x, y, 300)
    with torch.no_grad():
        float_loss = float(nn.functional.mse_loss(model(x), y))
    # post-training 3-bit rounding of the same model, for scale
    quantizer = "lloyd_max" if method == "s8bqat" else "mulaw"
    recipe = {"name": "r3", "rules": [{"match": "*", "bits": 3, "quantizer": quantizer}]}
    from edgekit.compress import compress
    with torch.no_grad():
        ptq_loss = float(nn.functional.mse_loss(compress(model, recipe)(x), y))
    knobs = {"lam": 1e-3, "warmup": 50, "period": 50} if method == "s8bqat" else {}
    model, reg, cbs = prepare(method, model, recipe, steps=200, **knobs)
    targets = cbs[-1].targets
    _fit(model, x, y, 200, regularizer=reg, callbacks=cbs)
    layers = [model[0], model[2]]
    assert all(isinstance(m, QuantLinear) for m in layers)
    for m in layers:       # the float weight the model runs IS the packed weight, bit for bit
        assert np.array_equal(weight_2d(m.base, m.base.weight), m.q.dequantize())
        assert m.q.codebook.dtype == torch.int8 and m.bits == 3
    assert {t.layer for t in targets} == {"0", "2"}
    with torch.no_grad():
        qat_loss = float(nn.functional.mse_loss(model(x), y))
    assert qat_loss < ptq_loss
    assert qat_loss < 2 * float_loss       # measured: 1.9x (S8BQAT), 1.26x (GQ)


def test_s8bqat_regulariser_warms_up_and_pulls_weights_onto_grid():
    model, x, y = _toy()
    qat = S8BQAT(model, R4, lam=1.0, warmup=10, period=0, convert=False)
    assert qat.lam_at(0) == 0 and qat.lam_at(5) == 0.5 and qat.lam_at(50) == 1.0
    before = float(qat.penalty().detach())
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    for _ in range(50):
        opt.zero_grad()
        qat.penalty().backward()
        opt.step()
    assert float(qat.penalty().detach()) < 0.5 * before


def test_qat_on_lstm_converts_every_gate_matrix():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True)
    model = nn.Sequential()
    model.add_module("rnn", lstm)
    for method in ("s8bqat", "gq"):
        m = nn.Sequential()
        m.add_module("rnn", nn.LSTM(6, 8, num_layers=2, batch_first=True))
        m.rnn.load_state_dict(lstm.state_dict())
        m, reg, cbs = prepare(method, m, R4 if method == "s8bqat" else R4_GQ, steps=3)
        x = torch.randn(2, 5, 6)
        out = m.rnn(x)[0].sum() + (reg(m) if reg else 0)
        out.backward()
        with torch.no_grad():
            for cb in cbs:
                cb.on_end(m)
        assert isinstance(m.rnn, QuantLSTM)
        assert set(m.rnn.matrices) == {"weight_ih_l0", "weight_hh_l0", "weight_ih_l1",
                                       "weight_hh_l1"}
        for name, qm in m.rnn.matrices.items():
            assert np.array_equal(weight_2d(m.rnn.base, getattr(m.rnn.base, name)),
                                  qm.dequantize())


def test_load_quantized_rebuilds_the_packed_model():
    model, x, y = _toy()
    model, reg, cbs = prepare("s8bqat", model, R4, steps=5)
    _fit(model, x, y, 5, regularizer=reg, callbacks=cbs)
    fresh, _, _ = _toy(seed=1)
    load_quantized(fresh, model.state_dict())
    assert isinstance(fresh[0], QuantLinear) and fresh[0].bits == 4
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    with pytest.raises(ValueError, match="does not"):
        load_quantized(nn.Sequential(nn.Linear(3, 3)), model.state_dict())


def test_gq_uniform_rules_keep_the_affine_grid():
    model, x, y = _toy()
    recipe = {"name": "m", "rules": [{"match": "0", "bits": 8, "quantizer": "uniform"},
                                     {"match": "*", "bits": 2, "quantizer": "mulaw"}]}
    model, _, cbs = prepare("gq", model, recipe, steps=20)
    _fit(model, x, y, 20, callbacks=cbs)
    assert np.array_equal(model[0].q.codebook.numpy()[0], np.arange(256) - 128)
    assert model[2].bits == 2 and model[2].q.levels <= 4


def test_bad_input_is_a_value_error():
    model, _, _ = _toy()
    with pytest.raises(ValueError, match="unknown QAT method"):
        prepare("adaround", model, R4)
    with pytest.raises(ValueError, match="period"):
        S8BQAT(model, R4, period=-1)
    with pytest.raises(ValueError, match="t_min"):
        GQ(model, R4_GQ, t0=0.01, t_min=0.1)
    with pytest.raises(ValueError, match="prune kind"):
        prepare("s8bqat", model, R4, prune={"kind": "random", "sparsity": 0.5})
    wanda = {"name": "w", "rules": [{"match": "*", "bits": 4,
                                     "sparsity": {"kind": "wanda", "amount": 0.5}}]}
    with pytest.raises(ValueError, match="calibration data"):
        prepare("s8bqat", model, wanda)
    nm = {"name": "nm", "rules": [{"match": "*", "bits": 4,
                                   "sparsity": {"kind": "nm", "n": 2, "m": 4}}]}
    before = [p.detach().clone() for p in model.parameters()]
    for method in ("s8bqat", "gq"):   # refused before the model is touched
        with pytest.raises(ValueError, match="N:M"):
            prepare(method, model, nm, prune={"kind": "magnitude", "sparsity": 0.5})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    from edgekit.compress.prune.gradual import GradualMagnitude
    with pytest.raises(ValueError, match="N:M"):
        GradualMagnitude(model, sparsity=0.5, recipe=nm)


def test_qat_model_exports_to_ekm_with_no_further_rounding():
    from edgekit.export.ekm import reader, writer
    from edgekit.export.interp import Interpreter
    from edgekit.export.lower import lower, module_graphs
    from edgekit.export.pipeline import calibrate_activations
    from edgekit.kernels import packing

    model, x, y = _toy()
    model, reg, cbs = prepare("gq", model, R4_GQ, steps=20,
                              prune={"kind": "csp", "sparsity": 0.25, "every": 5})
    _fit(model, x, y, 20, regularizer=reg, callbacks=cbs)
    trained = {n: weight_2d(model[i].base, model[i].base.weight) for n, i in (("0", 0), ("2", 2))}
    calibrate_activations(model, [(x[None, :8],)])
    mir = reader.from_bytes(writer.to_bytes(lower(model, module_graphs(model, (1, 8, 16)))))
    for name, want in trained.items():
        t = mir.tensors[f"{name}.weight"]
        codes, table, scale, mask = packing.unpack_arrays(packing.deserialize(bytes(t.data)))
        got = scale[:, None] * table.astype(np.float32)[codes]
        got = np.where(mask, got, np.float32(0)) if mask is not None else got
        assert np.array_equal(got.astype(np.float32), want)      # bit for bit
    with torch.no_grad():
        ref = model(x[None, :8]).numpy()
    out = Interpreter(mir).step({mir.graphs["forward"].inputs[0]: x[None, :8].numpy()})
    got = next(iter(out.values()))
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()   # int8 activations only


@pytest.mark.parametrize("method,recipe", [("s8bqat", "mixed"), ("gq", "int4")])
def test_builtin_recipes_with_group_scales_end_exact(method, recipe):
    """Per-row codebooks and scales per group of 64 (mixed), fixed uniform groups (int4)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 128, generator=g)
    y = x @ (torch.randn(8, 128, generator=g) * 0.2).T
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                          nn.Linear(128, 8))
    model, reg, cbs = prepare(method, model, recipe, steps=6)
    _fit(model, x, y, 6, regularizer=reg, callbacks=cbs)
    middle = model[2].q
    assert middle.group_size == 64 and middle.scale.shape == (128, 2)
    if method == "s8bqat":
        assert middle.codebook.shape == (128, 16)          # one Lloyd-Max table per row
    else:
        assert np.array_equal(middle.codebook.numpy()[0], np.arange(16) - 8)
    for i in (0, 2, 4):
        m = model[i]
        assert np.array_equal(weight_2d(m.base, m.base.weight), m.q.dequantize())


def test_train_starts_qat_from_trained_or_given_weights(tmp_path):
    """`edgekit train --qat` fits centroids to the shipped trained weights (where a checkpoint
    ships), `--init` to the given checkpoint's; a mismatched or quantized one is refused."""
    from edgekit import models
    from edgekit.cli.train import _initial_model
    from edgekit.train.loop import save_checkpoint
    shipped = models.build("conformer", "tiny", pretrained=None)
    qat = _initial_model(models, "conformer", "tiny", 0, "gq", None)
    fresh = _initial_model(models, "conformer", "tiny", 0, None, None)
    assert all(torch.equal(a, b) for a, b in zip(qat.parameters(), shipped.parameters()))
    if models.pretrained_info("conformer", "tiny"):
        assert not all(torch.equal(a, b) for a, b in zip(fresh.parameters(),
                                                         shipped.parameters()))
    src = models.build("conformer", "tiny", seed=7, pretrained=False)
    ck = tmp_path / "init.pt"
    save_checkpoint(ck, src, {"model": "conformer", "size": "tiny"})
    got = _initial_model(models, "conformer", "tiny", 0, "gq", str(ck))
    assert all(torch.equal(a, b) for a, b in zip(got.parameters(), src.parameters()))
    with pytest.raises(ValueError, match="not rnnt tiny"):
        _initial_model(models, "rnnt", "tiny", 0, "gq", str(ck))
    _, _, cbs = prepare("gq", src, "gq-5bit", steps=1)
    cbs[-1].on_end(src)
    save_checkpoint(ck, src, {"model": "conformer", "size": "tiny"})
    with pytest.raises(ValueError, match="already quantized"):
        _initial_model(models, "conformer", "tiny", 0, "gq", str(ck))
