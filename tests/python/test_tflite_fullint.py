"""Full-integer TFLite (`edgekit.export.tflite.fullint`): what the conversion guarantees —
no float activations, the grids LiteRT's int8/int16 kernels require, LayerNorm at int16,
attention masks, the boundary (int8 or float I/O), and the guard against LiteRT aborting."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter")

import ekm_models  # noqa: E402
from edgekit.export import ir, tflite  # noqa: E402
from edgekit.export.interp import Interpreter  # noqa: E402
from edgekit.export.parity import snr_db  # noqa: E402
from edgekit.export.tflite import builder, fullint  # noqa: E402
from edgekit.export.tflite.runner import Stream, survives  # noqa: E402
from test_export_tflite import RESOLVERS, G, _compare, _feeds, _float_activations  # noqa: E402


def _tensors(data: bytes) -> dict[str, tuple]:
    """name -> (type name, (scale, zero point) or None) of every tensor of the main graph."""
    m = fullint.load(data)
    names = {v: k for k, v in vars(fullint._fb().TensorType).items() if not k.startswith("_")}
    out = {}
    for t in m.subgraphs[0].tensors:
        q = t.quantization
        grid = (None if q is None or q.scale is None or not len(q.scale)
                else (float(q.scale[0]), int(q.zeroPoint[0])))
        out[fullint._tname(t)] = (names[t.type], grid)
    return out


def _ops(data: bytes) -> list[str]:
    m = fullint.load(data)
    mm = fullint._Model(m)
    return [mm.name(op) for sg in m.subgraphs for op in sg.operators]


def _block() -> ir.Model:
    """LayerNorm -> qlinear -> silu -> softmax, a residual add and a tanh: one of each kind
    of grid rule."""
    rng = np.random.default_rng(3)
    g = G()
    g.add("x", "f32", (1, 6, 32), "input")
    g.add("gam", "f32", (32,), "const", (1 + 0.2 * rng.standard_normal(32)).astype(np.float32))
    g.add("bet", "f32", (32,), "const", (0.1 * rng.standard_normal(32)).astype(np.float32))
    g.add("w", "packed", (32, 32), "const", ekm_models.packed(rng, 32, 32, 8))
    for n in ("ln", "fc", "si", "sm", "res", "y"):
        g.add(n, "f32", (1, 6, 32))
    g.op("layer_norm", ["x", "gam", "bet"], ["ln"], [], [1e-5])
    g.op("qlinear", ["ln", "w", None], ["fc"], [0, 0], [4.0 / 127])
    g.op("silu", ["fc"], ["si"])
    g.op("softmax", ["si"], ["sm"], [2])
    g.op("add", ["x", "sm"], ["res"])
    g.op("tanh", ["res"], ["y"])
    return g.model(["x"], ["y"])


def test_full_integer_file_has_no_float_activation_and_the_kernels_grids(tmp_path):
    m = _block()
    feeds = _feeds(m, steps=4)
    rep = tflite.export(m, tmp_path / "b.tflite", calib=feeds)
    info = rep["graphs"]["step"]
    data = (tmp_path / "b.tflite").read_bytes()
    assert info["full_integer"] and info["float_ops"] == {} and info["io"] == "int8"
    assert not _float_activations(data)
    t = _tensors(data)
    assert t["x"][0] == "INT8" and t["y"][0] == "INT8"            # integer-only I/O
    assert t["y"][1] == (1 / 128, 0)                                # TANH's int8 output grid
    assert t["sm"][1] == (1 / 256, -128)                            # SOFTMAX's
    ln = {k.split("/")[-1]: v for k, v in t.items() if k.startswith("m.layer_norm0/")}
    assert ln["mean"][0] == ln["rstd"][0] == ln["var_eps"][0] == "INT8"
    # no Newton steps at int8: rstd is RSQRT's own (exact) table
    assert not [k for k in ln if k.startswith(("rstd0", "rstd1", "newton"))]
    assert "RSQRT" in _ops(data) and "DEQUANTIZE" not in _ops(data)
    fm = fullint.load(data)   # replaced float constants leave no buffer behind
    used = {int(t.buffer) for sg in fm.subgraphs for t in sg.tensors}
    assert used | {0} == set(range(len(fm.buffers)))
    for want, got in _compare(m, tmp_path / "b.tflite", feeds):
        for r in RESOLVERS:
            assert snr_db(want["y"], got[r]["y"]) > 30, r


def test_layer_norm_statistics_at_int16_on_request(tmp_path):
    m = _block()
    feeds = _feeds(m, steps=4)
    rep = tflite.export(m, tmp_path / "w.tflite", calib=feeds, norm_bits=16)
    assert rep["graphs"]["step"]["norm_bits"] == 16
    t = _tensors((tmp_path / "w.tflite").read_bytes())
    ln = {k.split("/")[-1]: v for k, v in t.items() if k.startswith("m.layer_norm0/")}
    assert ln["mean"][0] == ln["var_eps"][0] == ln["rstd"][0] == "INT16"
    assert all(v[1][1] == 0 for v in ln.values() if v[1])      # int16 grids are symmetric
    for want, got in _compare(m, tmp_path / "w.tflite", feeds):
        assert snr_db(want["y"], got["ref"]["y"]) > 30
    with pytest.raises(ValueError, match="norm_bits"):
        tflite.export(m, tmp_path / "x.tflite", norm_bits=12)


def test_float_io_keeps_the_interface_and_is_integer_inside(tmp_path):
    m = _block()
    feeds = _feeds(m, steps=4)
    rep = tflite.export(m, tmp_path / "f.tflite", calib=feeds, io="float")
    data = (tmp_path / "f.tflite").read_bytes()
    t = _tensors(data)
    assert t["x"][0] == "FLOAT32" and t["y"][0] == "FLOAT32"
    ops = _ops(data)
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE" and ops.count("DEQUANTIZE") == 1
    assert rep["graphs"]["step"]["io"] == "float"
    for want, got in _compare(m, tmp_path / "f.tflite", feeds):
        assert snr_db(want["y"], got["ref"]["y"]) > 30
    with pytest.raises(ValueError, match="io must be"):
        tflite.export(m, tmp_path / "x.tflite", io="int4")


@pytest.mark.parametrize("bits", [8, 16])
def test_layer_norm_rows_of_small_and_zero_variance(tmp_path, bits):
    # Rows whose variance is ~1 % of the largest: LiteRT's int16 RSQRT table is ~9 % off
    # there; the Newton steps bring it back. A constant row (variance 0) must give 0: its
    # mean's grid covers the input's range (no clipping) and ε keeps RSQRT off its worst
    # table entries.
    rng = np.random.default_rng(5)
    g = G()
    g.add("x", "f32", (1, 8, 64), "input")
    g.add("y", "f32", (1, 8, 64))
    g.op("layer_norm", ["x", None, None], ["y"], [], [1e-5])
    m = g.model(["x"], ["y"])
    x = rng.standard_normal((1, 8, 64)).astype(np.float32)
    x[0, 1] *= 0.3   # ~2 % of the calibrated top variance
    x[0, 2] *= 0.2   # ~1 %
    x[0, 3] = 0.7    # a constant row: variance 0
    feeds = [{"x": x}, {"x": rng.standard_normal((1, 8, 64)).astype(np.float32) * 2}]
    tflite.export(m, tmp_path / "n.tflite", calib=feeds, norm_bits=bits)
    for want, got in _compare(m, tmp_path / "n.tflite", feeds[:1]):
        for r in RESOLVERS:
            y = got[r]["y"]
            assert np.all(np.isfinite(y))
            assert np.abs(y[0, 3]).max() < 0.01               # the constant row → 0
            if bits == 8:
                # rstd on an int8 grid that stops at 1/sqrt(one variance step): ordinary
                # rows ~25-30 dB; the small rows have few steps there (not checked)
                assert snr_db(want["y"][0, 0], y[0, 0]) > 24, r
                continue
            # int16: the small rows are limited by their few int8 input steps (~25 dB);
            # without the Newton steps they were below 15 dB
            assert snr_db(want["y"][0, 0], y[0, 0]) > 33, r
            assert min(snr_db(want["y"][0, i], y[0, i]) for i in (1, 2)) > 20, r


def test_attention_mask_gives_masked_keys_zero_probability(tmp_path):
    # where(valid == 0, -inf, 0) added to the scores, then softmax: the -inf saturates to
    # the bottom of a grid that reaches 16 below the top, exp(-16) rounds to 0.
    rng = np.random.default_rng(6)
    g = G()
    g.add("s", "f32", (1, 4, 8), "input")
    g.add("valid", "f32", (1, 8), "input")
    g.add("zero", "f32", (1,), "const", np.zeros(1, np.float32))
    g.add("ninf", "f32", (1,), "const", np.full(1, -np.inf, np.float32))
    g.add("zeros", "f32", (1, 8), "const", np.zeros((1, 8), np.float32))
    g.add("eq", "u8", (1, 8))
    g.add("mask", "f32", (1, 8))
    g.add("sc", "f32", (1, 4, 8))
    g.add("p", "f32", (1, 4, 8))
    g.op("equal", ["valid", "zero"], ["eq"])
    g.op("where", ["eq", "ninf", "zeros"], ["mask"])
    g.op("add", ["s", "mask"], ["sc"])
    g.op("softmax", ["sc"], ["p"], [2])
    m = g.model(["s", "valid"], ["p"])
    valid = np.array([[0, 0, 0, 1, 1, 1, 1, 1]], np.float32)
    feeds = [{"s": 2 * rng.standard_normal((1, 4, 8)).astype(np.float32), "valid": valid}
             for _ in range(4)]
    tflite.export(m, tmp_path / "a.tflite", calib=feeds)
    for want, got in _compare(m, tmp_path / "a.tflite", feeds):
        for r in RESOLVERS:
            p = got[r]["p"]
            assert np.all(p[..., :3] == 0), r
            assert np.abs(p - want["p"]).max() < 0.02, r


def test_div_by_a_constant_becomes_mul_and_stays_integer(tmp_path):
    g = G()
    g.add("x", "f32", (1, 4, 8), "input")
    g.add("c", "f32", (1,), "const", np.full(1, 4.9, np.float32))
    g.add("y", "f32", (1, 4, 8))
    g.op("div", ["x", "c"], ["y"])
    m = g.model(["x"], ["y"])
    feeds = _feeds(m, steps=3)
    rep = tflite.export(m, tmp_path / "d.tflite", calib=feeds)
    ops = _ops((tmp_path / "d.tflite").read_bytes())
    assert "DIV" not in ops and "MUL" in ops and rep["graphs"]["step"]["float_ops"] == {}
    for want, got in _compare(m, tmp_path / "d.tflite", feeds):
        assert snr_db(want["y"], got["ref"]["y"]) > 35


def test_concat_inputs_share_a_grid_and_fixed_grids_are_requantized(tmp_path):
    # concat(sigmoid(x), tanh(x)): both inputs have a fixed grid, and they differ, so one is
    # requantized onto the other before CONCATENATION (which needs one grid).
    g = G()
    g.add("x", "f32", (1, 4, 8), "input")
    for n, s in (("a", (1, 4, 8)), ("b", (1, 4, 8)), ("y", (1, 4, 16))):
        g.add(n, "f32", s)
    g.op("sigmoid", ["x"], ["a"])
    g.op("tanh", ["x"], ["b"])
    g.op("concat", ["a", "b"], ["y"], [2])
    m = g.model(["x"], ["y"])
    feeds = _feeds(m, steps=3)
    rep = tflite.export(m, tmp_path / "c.tflite", calib=feeds)
    assert rep["graphs"]["step"]["requantize_ops"] == 1
    t = _tensors((tmp_path / "c.tflite").read_bytes())
    assert t["y"][1] == t["a"][1] == (1 / 256, -128)
    for want, got in _compare(m, tmp_path / "c.tflite", feeds):
        # tanh's negative half does not fit sigmoid's [0, 1) grid: it is clipped, by design
        np.testing.assert_allclose(got["ref"]["y"][..., :8], want["y"][..., :8], atol=1 / 256)


def test_streaming_states_are_int8_and_start_at_real_zero(tmp_path):
    m = ekm_models.streaming_model()
    feeds = _feeds(m, steps=4)
    rep = tflite.export(m, tmp_path / "s.tflite", calib=feeds)
    data = (tmp_path / "s.tflite").read_bytes()
    g = m.graphs["step"]
    s = Stream(data, g.inputs, [a for a, _ in g.states], rep["graphs"]["step"]["outputs"],
               dict(g.states), "ref")
    # the file's I/O keep the IR names (runners, the bench, find states by name)
    assert [d["name"] for d in s._in] == list(g.inputs) + [a for a, _ in g.states]
    assert [d["name"] for d in s._out] == rep["graphs"]["step"]["outputs"]
    for name, d in zip(s.states, s._in[len(s.inputs):]):
        assert d["dtype"] in (np.int8, np.int16)
        assert np.all(s.state[name] == d["quantization"][1])   # zero point = real 0
    ref = Interpreter(m, "step")
    for f in feeds:
        want, got = ref.step(f), s.step(f)
        assert snr_db(want["logits"], got["logits"]) > 20


def test_tiny_output_range_still_runs_under_xnnpack(tmp_path):
    # An integer layer whose output is ~0 on the calibration data: a grid that small would
    # make XNNPACK's requantization scale reach 256 and refuse the whole graph.
    rng = np.random.default_rng(9)
    g = G()
    g.add("x", "f32", (1, 4, 16), "input")
    g.add("w", "packed", (8, 16), "const", ekm_models.packed(rng, 8, 16, 8))
    g.add("y", "f32", (1, 4, 8))
    g.op("qlinear", ["x", "w", None], ["y"], [0, 0], [0.05])
    m = g.model(["x"], ["y"])
    feeds = [{"x": np.zeros((1, 4, 16), np.float32)}] * 2
    tflite.export(m, tmp_path / "z.tflite", calib=feeds)
    for _, got in _compare(m, tmp_path / "z.tflite", feeds):
        assert np.all(got["default"]["y"] == got["ref"]["y"])


def test_int16_scales_keep_clear_of_powers_of_two():
    s, zp = fullint.int16_grid(0.0, 1.0)   # 1/32767 is within 1e-4 of 2^-15
    assert zp == 0 and abs(np.log2(s) - np.round(np.log2(s))) >= 0.01
    assert fullint.int16_grid(0.0, 3.0)[0] == pytest.approx(3.0 / 32767)


def test_a_file_that_aborts_litert_is_reported_not_run_in_process():
    # LiteRT's int16 ADD aborts the process when all its scales sit at ~2^-15; `survives`
    # runs a file in a forked child and returns a line instead of dying.
    mb = builder.ModelBuilder()
    sg = mb.subgraph("m")
    s = 1 / 32767
    x = sg.tensor("x", (1, 4), "i16", scale=s, zero_point=0)
    e = sg.tensor("e", (), "i16", np.int16(3), scale=s, zero_point=0)
    y = sg.tensor("y", (1, 4), "i16", scale=s, zero_point=0)
    sg.op("ADD", [x, e], [y], builder._fb().AddOptionsT())
    sg.set_io([x], [y])
    why = survives(mb.finish(), ["x"], [], ["y"], {}, [{"x": np.full((1, 4), 0.5, np.float32)}])
    assert why is not None and "SIGABRT" in why
    # a sound file survives
    g = G()
    g.add("x", "f32", (1, 4), "input")
    g.add("y", "f32", (1, 4))
    g.op("relu", ["x"], ["y"])
    m = g.model(["x"], ["y"])
    assert survives(_relu_file(m), ["x"], [],
                    ["y"], {}, _feeds(m, steps=1)) is None


def _relu_file(m) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        tflite.export(m, Path(d) / "r.tflite", calib=_feeds(m, steps=2))
        return (Path(d) / "r.tflite").read_bytes()
