"""Lowering (edgekit.export.lower) checked against the compressed torch model through the numpy
interpreter (the real packed kernels on int8 codes), plus the ops the zoo does not cover."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from edgekit import EdgekitError, models
from edgekit.compress import compress
from edgekit.compress.layers import QuantLSTM, lstm_cell_sequence
from edgekit.export import parity
from edgekit.export.ekm.validate import check_model
from edgekit.export.interp import Interpreter
from edgekit.export.lower import lower, module_graphs, zoo_graphs
from edgekit.export.lower.models import example_feeds
from edgekit.export.pipeline import ExportConfig, calibrate_activations, make_recipe

STEPS = 3
# issue 4 item 7 ("mixed 3/5/6-bit"): the built-in recipes never give a layer 3 bits
MIXED_356 = {"name": "mixed356",
             "defaults": {"quantizer": "lloyd_max", "codebook": "channel",
                          "granularity": "group", "group_size": 64},
             "rules": [{"type": "lstm", "bits": 5}, {"match": "@last", "bits": 6},
                       {"match": "*", "bits": 3}]}


@functools.lru_cache(maxsize=None)
def lowered(name: str, recipe: str, calib_n: int = 2):
    """(fp32, compressed+calibrated, specs, ir) for a tiny zoo model (cached per session)."""
    fp32 = models.build(name, "tiny")
    ex = models.info(name, "tiny")["example_input"]
    calib = [ex(batch=1, seconds=1.0, seed=1000 + i) for i in range(calib_n)]
    if recipe == "2:4":   # magnitude 2:4 on every layer whose K allows it (edgekit export --nm)
        recipe = make_recipe(ExportConfig(model=name, out="", bits=8, nm="2:4"), fp32)[0]
    if recipe == "mixed356":
        recipe = MIXED_356
    q = compress(fp32, recipe, calib=calib)
    calibrate_activations(q, calib)
    specs = zoo_graphs(name, q)
    return fp32, q, specs, lower(q, specs)


def parity_of(name: str, recipe: str) -> dict:
    fp32, q, specs, mir = lowered(name, recipe)
    feeds = example_feeds(name, fp32, specs, STEPS, seed=0)
    out = {}
    for spec in specs:
        ref = parity.run_steps(parity.TorchRunner(q, spec), feeds[spec.name])
        got = parity.run_steps(parity.InterpRunner(mir, spec.name), feeds[spec.name])
        out[spec.name] = parity.compare(got, ref, None)
    return out


def op_counts(mir, graph):
    counts = {}
    for op in mir.graphs[graph].ops:
        counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def test_conformer_step_ir():
    _, q, _, mir = lowered("conformer", "int8")
    check_model(mir)   # the EKM writer's own validation (shapes, data flow, attributes)
    g = mir.graphs["step"]
    assert g.inputs == ["chunk"] and g.outputs == ["logits"]
    assert [s for s, _ in g.states] == list(q.init_state(1))
    c = op_counts(mir, "step")
    n_lin = sum(isinstance(m, nn.Linear) for m in models.build("conformer", "tiny").modules())
    assert c["qlinear"] == n_lin and c["qconv1d"] == 11 and "linear" not in c
    assert c["softmax"] == 3 and c["where"] == 1     # attention + its cache validity mask
    assert all(op.ints[0] == 0 for op in g.ops if op.type == "qlinear")  # static grids
    assert mir.meta["streaming"] == {"graph": "step", "input": "chunk", "time_axis": 1,
                                     "chunk": 32, "output_time_axis": 1}
    packed = [t for t in mir.tensors.values() if t.dtype == "packed"]
    assert len(packed) == len(mir.meta["layers"]) == n_lin + 11


def test_rnnt_graphs():
    _, _, _, mir = lowered("rnnt", "int8")
    check_model(mir)
    assert list(mir.graphs) == ["encoder", "predictor", "joiner"]
    assert op_counts(mir, "encoder")["qlstm"] == 2
    assert op_counts(mir, "predictor") .get("gather") == 1     # float embedding table
    assert op_counts(mir, "joiner") == {"qlinear": 3, "add": 1, "tanh": 1}
    assert mir.graphs["predictor"].states == [("pred.h", "predictor/pred.h.next"),
                                              ("pred.c", "predictor/pred.c.next")]


# Issue 4 item 6: int8 >= 40 dB, 4-bit/mixed >= 30 dB vs the compressed model. A code flip
# (a value a few ulps from an int8 rounding boundary) is a chance event that cascades; the
# dominant cause is the compressed model's float32 GEMM on dequantized operands against the
# exact int32 accumulation of the q-ops (scripts/parity_probe.py; docs/export.md, "Parity and
# what limits it"). The trained tiny Conformer measures 76-139 dB here; the random-init Conmer
# hits a flip in some configurations (39.6-40.4 dB at --calib 8), so it keeps 35 dB at int8.
def _threshold(name: str, recipe: str) -> float:
    """Issue 4's parity bar: 40 dB at 8 bits, 30 dB below (docs/export.md, "Parity")."""
    return 40.0 if recipe in ("int8", "wanda-2of4", "2:4") else 30.0


CASES = [("conformer", "int8"), ("rnnt", "int8"), ("nwc", "int8"), ("conmer", "int4"),
         ("rnnt", "mixed"), ("conmer", "wanda-2of4"), ("rnnt", "mixed356")]
SLOW_CASES = [(m, r) for m in models.names() for r in ("int8", "int4", "mixed", "2:4")
              if (m, r) not in CASES]


@pytest.mark.parametrize("name,recipe", CASES)
def test_interpreter_matches_compressed_model(name, recipe):
    worst = parity.worst(parity_of(name, recipe))
    assert worst >= _threshold(name, recipe), f"{name} {recipe}: {worst:.1f} dB"


@pytest.mark.slow
@pytest.mark.parametrize("name,recipe", SLOW_CASES)
def test_interpreter_matches_compressed_model_all(name, recipe):
    worst = parity.worst(parity_of(name, recipe))
    assert worst >= _threshold(name, recipe), f"{name} {recipe}: {worst:.1f} dB"


def test_mixed_356_exports_3_5_and_6_bit_layers():
    """The 3/5/6-bit mix reaches the IR: each width in the layer table and in the packed
    headers (the parity of this model is in CASES)."""
    from edgekit.kernels import packing
    _, _, _, mir = lowered("rnnt", "mixed356")
    check_model(mir)
    rows = {r["name"]: r["bits"] for r in mir.meta["layers"]}
    assert set(rows.values()) == {3, 5, 6}
    assert rows["joiner.out.weight"] == 6 and rows["joiner.enc_proj.weight"] == 3
    assert rows["encoder.layers.0.weight_ih_l0"] == 5
    heads = {n: packing.deserialize(bytes(t.data)).bits for n, t in mir.tensors.items()
             if t.dtype == "packed"}
    assert heads == rows


def test_streaming_steps_equal_full_forward():
    """Interpreter steps, concatenated, against the compressed model's full-sequence forward."""
    _, q, specs, mir = lowered("conmer", "int8")
    chunk = specs[0].args[0].shape[1]
    x = models.info("conmer", "tiny")["example_input"](seconds=4 * chunk / 100, seed=3)[0]
    x = x[:, :4 * chunk]
    it = Interpreter(mir)
    steps = [it.step({"chunk": x[:, i * chunk:(i + 1) * chunk].numpy()})["logits"]
             for i in range(4)]
    with torch.no_grad():
        full = q(x).numpy()
    assert parity.snr_db(full, np.concatenate(steps, 1)) >= 40
    it.reset()   # a reset stream starts over: same first chunk output
    again = it.step({"chunk": x[:, :chunk].numpy()})["logits"]
    np.testing.assert_array_equal(again, steps[0])


class _Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.fc(x))


def test_unsupported_op_names_op_and_module():
    m = compress(_Gelu().eval(), "int8")
    with pytest.raises(EdgekitError, match=r"unsupported op aten\.gelu\.default at act"):
        lower(m, module_graphs(m, (1, 4, 8)))


class _Mixed(nn.Module):
    """Conv + BatchNorm + transposed conv + a float-kept Linear + a 2-layer LSTM."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 5, stride=2, padding=2, dilation=1)
        self.bn = nn.BatchNorm1d(16)
        self.up = nn.ConvTranspose1d(16, 8, 4, stride=2, padding=1, groups=2)
        self.rnn = nn.LSTM(8, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 6)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = self.up(h).transpose(1, 2)
        y, _ = self.rnn(h)
        return self.head(y)


def _mixed_model():
    torch.manual_seed(0)
    m = _Mixed().eval()
    with torch.no_grad():   # non-trivial running statistics
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    recipe = {"name": "t", "rules": [{"match": "head", "skip": True}, {"match": "*", "bits": 8}]}
    calib = [(torch.randn(1, 4, 32),) for _ in range(2)]
    q = compress(m, recipe)
    calibrate_activations(q, calib)
    return m, q


def test_user_module_ops_and_parity():
    m, q = _mixed_model()
    mir = lower(q, module_graphs(q, (1, 4, 32)))
    check_model(mir)
    c = op_counts(mir, "forward")
    assert c["qconv1d"] == 1 and c["qconv_transpose1d"] == 1 and c["qlstm"] == 2
    assert c["linear"] == 1                                  # kept float, and reported:
    assert {"name": "head", "bits": 32}.items() <= next(
        r for r in mir.meta["layers"] if r["name"] == "head").items()
    assert "mul" not in c and "add" not in c                   # BatchNorm folded into conv
    assert next(r for r in mir.meta["layers"] if r["name"] == "conv.weight")["bn_folded"]
    x = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = q(x).numpy()
    got = Interpreter(mir).step({"x": x.numpy()})["y"]
    assert parity.snr_db(ref, got) >= 40


class _InputNorm(nn.Module):
    """BatchNorm on the raw input (no conv to fold into) and after a conv read twice."""

    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm1d(4)
        self.conv = nn.Conv1d(4, 6, 3)
        self.bn1 = nn.BatchNorm1d(6)

    def forward(self, x):
        h = self.conv(self.bn0(x))
        return self.bn1(h) + h


def test_batch_norm_unfoldable_is_affine():
    torch.manual_seed(3)
    m = _InputNorm().eval()
    with torch.no_grad():
        for bn in (m.bn0, m.bn1):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    q = compress(m, "int8")
    calibrate_activations(q, [(torch.randn(1, 4, 16),)])
    mir = lower(q, module_graphs(q, (1, 4, 16)))
    c = op_counts(mir, "forward")
    assert c["mul"] == 2 and c["add"] == 3
    x = torch.randn(1, 4, 16)
    with torch.no_grad():
        ref = q(x).numpy()
    assert parity.snr_db(ref, Interpreter(mir).step({"x": x.numpy()})["y"]) >= 40


def test_quant_lstm_explicit_cell():
    """With act_quant on, QuantLSTM runs the §2.6 qlstm cell; off, the fused nn.LSTM path."""
    torch.manual_seed(1)
    lstm = nn.LSTM(6, 5, batch_first=True).eval()
    q = compress(nn.Sequential(lstm), "int8")[0]
    assert isinstance(q, QuantLSTM)
    x = torch.randn(1, 7, 6)
    h0 = torch.zeros(1, 1, 5)
    with torch.no_grad():
        fused, _ = q(x, (h0, h0))
        explicit, _, _ = lstm_cell_sequence(q, x, h0[0], h0[0])
        np.testing.assert_allclose(fused.numpy(), explicit.numpy(), atol=1e-5)
        q.set_activation_range(-3.0, 3.0)
        y, (h, c) = q(x, (h0, h0))
    assert not torch.equal(y, fused)              # rounding now happens
    # h is re-quantized every step onto the fixed 1/127 grid: the cell output matches the
    # explicit cell with that grid, and stays close to the float cell
    assert parity.snr_db(fused.numpy(), y.numpy()) > 25
    np.testing.assert_array_equal(h[0].numpy(), y[:, -1].numpy())


@pytest.mark.parametrize("groups,stride,dilation,pad", [(1, 1, 1, 0), (4, 2, 2, 3), (8, 1, 3, 4)])
def test_interp_qconv1d_against_torch(groups, stride, dilation, pad):
    """Grouped/depthwise, strided, dilated, padded conv: packed-kernel result vs torch on the
    same rounded input and dequantized weights (float accumulation order only)."""
    torch.manual_seed(2)
    conv = nn.Conv1d(8, 16, 5, stride=stride, dilation=dilation, padding=pad, groups=groups)
    q = compress(nn.Sequential(conv.eval()), "int8")
    calibrate_activations(q, [(torch.randn(1, 8, 40),)])
    mir = lower(q, module_graphs(q, (1, 8, 40)))
    x = torch.randn(1, 8, 40)
    with torch.no_grad():
        ref = q(x).numpy()
    got = Interpreter(mir).step({"x": x.numpy()})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_nwc_quantizer_is_nearest():
    _, q, _, mir = lowered("nwc", "int8")
    ops = [op for op in mir.graphs["step"].ops if op.type == "nearest"]
    assert len(ops) == 1
    values = mir.tensors[ops[0].inputs[1]].data
    np.testing.assert_array_equal(values, q.stages[0].quantizer.bins.detach().numpy())


def test_nm_recipe_covers_layers_whose_k_allows_it():
    fp32 = models.build("conformer", "tiny")
    recipe, text = make_recipe(ExportConfig(model="conformer", out="", recipe="mixed", nm="2:4"),
                               fp32)
    q = compress(fp32, recipe)
    nm = {n: m.q.nm for n, m in q.named_modules() if hasattr(m, "q")}
    assert all(v == (2, 4) for n, v in nm.items() if not n.endswith("conv.dw"))
    assert all(v is None for n, v in nm.items() if n.endswith("conv.dw"))   # K = 15
    assert q.get_submodule("ctc_head").q.bits == 8     # the recipe's @last rule still applies
    assert "nm" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rnnt", "conformer", "conmer"])
def test_small_model_export(tmp_path, name):
    from edgekit.export.pipeline import run_export
    rep = run_export(ExportConfig(model=name, size="small", bits=8, calib=2, steps=2,
                                  out=str(tmp_path / name)))
    ekm = rep["formats"]["ekm"]
    assert float(ekm["worst_snr_vs_compressed_db"]) >= _threshold(name, "int8")
    assert ekm["size_check"]["ok"], ekm["size_check"]


@pytest.mark.skipif(not parity.runtime_available(), reason="C++ runtime not built")
@pytest.mark.parametrize("name,recipe", [("rnnt", "int8"), ("conmer", "int4"),
                                         ("nwc", "int8"), ("rnnt", "mixed356")])
def test_runtime_session_matches_compressed_model(tmp_path, name, recipe):
    """The same check through the C++ runtime on the written .ekm file."""
    from edgekit.export import ekm
    fp32, q, specs, mir = lowered(name, recipe)
    ekm.write(mir, tmp_path / "m.ekm")
    feeds = example_feeds(name, fp32, specs, STEPS, seed=0)
    for spec in specs:
        ref = parity.run_steps(parity.TorchRunner(q, spec), feeds[spec.name])
        runner = parity.ekm_runner(str(tmp_path / "m.ekm"), spec.name)
        assert runner.backend == "runtime"
        got = parity.run_steps(runner, feeds[spec.name])
        worst = parity.worst({spec.name: parity.compare(got, ref, None)})
        assert worst >= _threshold(name, recipe), f"{name} {recipe} {spec.name}: {worst:.1f}"


class _Attention(nn.Module):
    """nn.MultiheadAttention (batch_first, need_weights=False) and F.scaled_dot_product_attention
    with a boolean mask, an additive mask + explicit scale, and is_causal."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.proj = nn.Linear(16, 16)
        g = torch.Generator().manual_seed(2)
        self.register_buffer("keep", (torch.rand(6, 6, generator=g) > 0.4)
                             | torch.eye(6, dtype=torch.bool))
        self.register_buffer("bias", torch.randn(6, 6, generator=g))

    def forward(self, x):
        a, _ = self.mha(x, x, x, need_weights=False)
        h = self.proj(a).unflatten(-1, (2, 8)).transpose(1, 2)      # (1, heads 2, T, 8)
        sdpa = nn.functional.scaled_dot_product_attention
        y = (sdpa(h, h, h, attn_mask=self.keep) + sdpa(h, h, h, attn_mask=self.bias, scale=0.3)
             + sdpa(h, h, h, is_causal=True))
        return y.transpose(1, 2).flatten(2)


def test_scaled_dot_product_attention(tmp_path):
    from edgekit.export import ekm
    torch.manual_seed(0)
    q = compress(_Attention().eval(), "int8")
    calibrate_activations(q, [(torch.randn(1, 6, 16),) for _ in range(2)])
    mir = lower(q, module_graphs(q, (1, 6, 16)))
    check_model(mir)
    c = op_counts(mir, "forward")
    assert c["softmax"] == 4 and c["matmul"] == 8 and c["where"] == 2 and c["qlinear"] == 1
    # the MHA's projections stay float (it calls F.linear on its own parameters): both listed
    floats = {r["name"]: r["shape"] for r in mir.meta["layers"] if r["bits"] == 32}
    assert floats == {"mha": [48, 16], "mha (16x16)": [16, 16]}
    x = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = q(x).numpy()
    assert parity.snr_db(ref, Interpreter(mir).step({"x": x.numpy()})["y"]) >= 40
    if parity.runtime_available():   # the C++ runtime on the written file, same feeds
        ekm.write(mir, tmp_path / "a.ekm")
        got = parity.ekm_runner(str(tmp_path / "a.ekm"), "forward").step({"x": x.numpy()})["y"]
        assert parity.snr_db(ref, got) >= 40


class _AttentionDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        return nn.functional.scaled_dot_product_attention(h, h, h, dropout_p=0.5)


def test_attention_dropout_is_refused():
    m = compress(_AttentionDropout().eval(), "int8")
    with pytest.raises(EdgekitError, match="unsupported attention dropout 0.5 at "):
        lower(m, module_graphs(m, (1, 4, 8)))


class _Passthrough(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y, x, y     # an input and a repeated value as outputs


def test_outputs_that_alias_inputs_or_each_other_are_copies():
    q = compress(_Passthrough().eval(), "int8")
    mir = lower(q, module_graphs(q, (1, 3, 4)))
    check_model(mir)
    g = mir.graphs["forward"]
    assert g.outputs == ["y0", "y1", "y2"]
    assert [op.type for op in g.ops] == ["qlinear", "copy", "copy"]
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    out = Interpreter(mir).step({"x": x})
    np.testing.assert_array_equal(out["y1"], x)
    np.testing.assert_array_equal(out["y0"], out["y2"])


def test_uncalibrated_layers_use_the_dynamic_grid():
    """Without calibration every q-op gets act_mode 1 (per-row max-abs grid); the interpreter
    then stays close to the float-activation compressed model."""
    torch.manual_seed(4)
    m = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8)).eval()
    q = compress(m, "int8")
    mir = lower(q, module_graphs(q, (1, 5, 16)))
    qops = [op for op in mir.graphs["forward"].ops if op.type == "qlinear"]
    assert [op.ints for op in qops] == [[1, 0], [1, 0]]
    assert all(r["act"] == "dynamic" for r in mir.meta["layers"])
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        ref = q(x).numpy()
    assert parity.snr_db(ref, Interpreter(mir).step({"x": x.numpy()})["y"]) >= 35


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_quantized_conv1d_string_padding(padding):
    """padding="same"/"valid" (strings in torch) lower with the right pads and output length."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(8, 16, 5, padding=padding, dilation=2)).eval()
    x = torch.randn(1, 8, 40)
    q = compress(m, {"name": "t", "rules": [{"match": "*", "bits": 8,
                                               "activations": "minmax"}]}, calib=[x])
    mir = lower(q, module_graphs(q, (1, 8, 40)))
    g = next(iter(mir.graphs))
    out = Interpreter(mir, g).step({mir.graphs[g].inputs[0]: x.numpy()})
    y = next(iter(out.values()))
    ref = q(x).detach().numpy()
    assert y.shape == ref.shape == (1, 16, 40 if padding == "same" else 32)
    np.testing.assert_array_equal(y, ref)
