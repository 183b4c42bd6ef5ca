"""ONNX exporter: every IR op run in onnxruntime against a numpy reference of docs/format.md
§2.6, storage widths and sizes of packed weights, file naming/determinism, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgekit.export import ir  # noqa: E402
from edgekit.export import onnx as ek_onnx  # noqa: E402
from edgekit.export.parity import snr_db  # noqa: E402
from edgekit.kernels import packing  # noqa: E402

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- building IR models

def packed(name, N, K, bits, *, codebook="affine", per_row=False, group_size=0, sparse=0.0,
           seed=0, scale=0.01):
    """A packed const tensor plus its exact float weight (scale · codebook[code], 0 if masked)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << bits, (N, K)).astype(np.uint8)
    if codebook == "affine":
        table = packing.affine_table(bits)
        table = np.tile(table, (N, 1)) if per_row else table
    elif codebook == "uint":   # uniform, zero point not the midpoint: d·(c − z)
        base = (np.arange(1 << bits) - 1) * 3
        table = np.tile(base, (N, 1)) if per_row else base
    else:                      # non-uniform (Lloyd-Max like), no zero entry
        shape = (N, 1 << bits) if per_row else (1 << bits,)
        table = rng.integers(-127, 127, shape)
        table = np.sort(table + (table >= 0), axis=-1)   # no zero entry
    table = table.astype(np.int8)
    ng = 1 if group_size == 0 else -(-K // group_size)
    scale = rng.uniform(0.1 * scale, scale, (N, ng)).astype(np.float32)
    mask = rng.random((N, K)) >= sparse if sparse else None
    sec = packing.pack_arrays(codes, bits, table, scale if ng > 1 else scale[:, 0], mask=mask,
                              group_size=group_size)
    tab = table.reshape(-1, 1 << bits).astype(np.float32)
    vals = tab[0][codes] if tab.shape[0] == 1 else np.take_along_axis(tab, codes.astype(int), 1)
    w = vals * np.repeat(scale, group_size or K, axis=1)[:, :K]
    if mask is not None:
        w = np.where(mask, w, 0)
    return ir.Tensor(name, "packed", (N, K), "const", packing.serialize(sec)), w.astype(np.float32)


def model(ops, tensors, inputs, outputs, states=(), graph="step"):
    ts = {t.name: t for t in tensors}
    return ir.Model(ts, {graph: ir.Graph(graph, ops, inputs, outputs, list(states))})


def act(name, shape, kind="activation", dtype="f32"):
    return ir.Tensor(name, dtype, tuple(shape), kind)


def const(name, arr):
    arr = np.asarray(arr)
    dt = {np.float32: "f32", np.int32: "i32", np.int64: "i64", np.uint8: "u8", np.int8: "i8"}
    return ir.Tensor(name, dt[arr.dtype.type], arr.shape, "const", arr)


def run(m, feeds, tmp_path, **kw):
    path = tmp_path / "m.onnx"
    rep = ek_onnx.export(m, path, **kw)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    out = {}
    for g, f in rep["files"].items():
        s = ort.InferenceSession(f["path"], so, providers=["CPUExecutionProvider"])
        names = [o.name for o in s.get_outputs()]
        out.update(zip(names, s.run(None, {k: v for k, v in feeds.items()
                                           if k in {i.name for i in s.get_inputs()}})))
    return out, rep


# ---------------------------------------------------------------- numpy reference (§2.6)

def ref_act(x, scale, zp):
    return np.clip(np.rint(x * (np.float32(1) / np.float32(scale))) + zp, -128, 127)


def ref_qlinear(x, w, scale, zp, bias=None):
    """Int8 activations on the static grid times the exact float weight (float64)."""
    q = ref_act(x, scale, zp) - zp
    y = (q.astype(np.float64) @ w.T.astype(np.float64)) * scale
    return y + (0 if bias is None else bias)


def interp(m, feeds):
    """The IR interpreter's outputs (the LOWER stage's oracle: packed kernels on int8 codes)."""
    from edgekit.export.interp import Interpreter
    g = next(iter(m.graphs.values()))
    it = Interpreter(m, g.name)
    return it.step({k: v for k, v in feeds.items() if k in g.inputs})


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


# ---------------------------------------------------------------- q-ops and weight storage

def qlinear_model(w_t, N, K, scale=0.05, zp=3, act_mode=0, bias=True):
    b = const("b", RNG.standard_normal(N).astype(np.float32)) if bias else None
    op = ir.Op("qlinear", "enc.fc", ["x", "W", b.name if b else None], ["y"], [act_mode, zp],
               [scale])
    ts = [act("x", (1, 4, K), "input"), w_t, act("y", (1, 4, N), "output")] + ([b] if b else [])
    return model([op], ts, ["x"], ["y"]), (b.data if b else None)


WEIGHT_CASES = [
    # bits, codebook, per_row, group_size, sparse, expected storage prefix, container bits
    (8, "affine", False, 0, 0.0, "DequantizeLinear INT8 per-channel", 8),
    (4, "affine", False, 64, 0.0, "DequantizeLinear INT4 blocked(64)", 4),
    (4, "affine", True, 0, 0.5, "DequantizeLinear INT4 per-channel", 4),
    (2, "affine", False, 0, 0.0, "DequantizeLinear INT2 per-channel", 2),
    (2, "affine", False, 128, 0.3, "DequantizeLinear INT2 blocked(128)", 2),
    (3, "affine", False, 0, 0.0, "DequantizeLinear UINT4 per-channel", 4),
    (5, "affine", False, 64, 0.0, "DequantizeLinear UINT8 blocked(64)", 8),
    (4, "uint", True, 0, 0.0, "DequantizeLinear UINT4 per-channel", 4),
    (1, "nonuniform", False, 0, 0.0, "Gather UINT2 codes, per-tensor", 2),
    (3, "nonuniform", True, 64, 0.0, "Gather UINT4 codes, per-row", 4),
    (4, "nonuniform", False, 0, 0.5, "Gather UINT8 codes, per-tensor", 8),   # +zero entry
    (6, "nonuniform", True, 0, 0.0, "Gather UINT8 codes, per-row", 8),
    (7, "nonuniform", False, 128, 0.2, "Gather UINT8 codes, per-tensor", 8),
    (8, "nonuniform", True, 0, 0.0, "Gather UINT8 codes, per-row", 8),
    (8, "nonuniform", False, 0, 0.5, "Gather UINT8 codes, per-tensor", 8),   # + BOOL mask
]


@pytest.mark.parametrize("bits,cb,per_row,gs,sparse,storage,cbits", WEIGHT_CASES)
def test_qlinear_every_storage_route_matches_reference(tmp_path, bits, cb, per_row, gs, sparse,
                                                       storage, cbits):
    N, K = 24, 200   # K not a multiple of the group size: a short last group
    w_t, w = packed("W", N, K, bits, codebook=cb, per_row=per_row, group_size=gs,
                    sparse=sparse, seed=bits)
    m, bias = qlinear_model(w_t, N, K)
    x = RNG.standard_normal((1, 4, K)).astype(np.float32) * 2
    out, rep = run(m, {"x": x}, tmp_path, exact_act=True)
    ref = ref_qlinear(x, w, 0.05, 3, bias)
    np.testing.assert_allclose(out["y"], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(out["y"], interp(m, {"x": x})["y"], rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
    (row,) = rep["layers"]
    assert row["storage"].startswith(storage), row
    assert row["container_bits"] == cbits
    assert bool(row["widened"]) == (cbits > bits or sparse > 0)
    # The codes really are stored at the container width: N·K·cbits/8 bytes plus small tables.
    assert N * K * cbits / 8 <= row["onnx_bytes"] <= N * K * cbits / 8 + N * 4 * (K // 64 + 1) \
        + N * (1 << bits) + N + 64


def test_qconv1d_and_qconv_transpose1d_match_reference(tmp_path):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    cin, cout, k, g, T = 8, 12, 3, 2, 20
    w_t, w2 = packed("Wc", cout, cin // g * k, 4, group_size=0, seed=1)
    wt_t, wt2 = packed("Wt", cout, cin // g * k, 3, codebook="nonuniform", seed=2)
    bias = const("bc", RNG.standard_normal(cout).astype(np.float32))
    s, zp = 0.04, -2
    conv = ir.Op("qconv1d", "conv", ["x", "Wc", "bc"], ["y1"], [2, 3, 1, 2, g, k, 0, zp], [s])
    T1 = (T + 3 + 1 - 2 * (k - 1) - 1) // 2 + 1
    convt = ir.Op("qconv_transpose1d", "convt", ["x", "Wt", None], ["y2"],
                  [2, 1, 1, 1, g, k, 0, zp], [s])
    T2 = (T - 1) * 2 - 2 + (k - 1) + 1 + 1
    m = model([conv, convt], [act("x", (1, cin, T), "input"), w_t, wt_t, bias,
                              act("y1", (1, cout, T1), "output"),
                              act("y2", (1, cout, T2), "output")],
              ["x"], ["y1", "y2"])
    x = RNG.standard_normal((1, cin, T)).astype(np.float32)
    out, _ = run(m, {"x": x}, tmp_path, exact_act=True)
    xq = torch.from_numpy(((ref_act(x, s, zp) - zp) * s).astype(np.float32)).double()
    ref1 = F.conv1d(F.pad(xq, (3, 1)), torch.from_numpy(w2).double().reshape(cout, cin // g, k),
                    torch.from_numpy(bias.data).double(), stride=2, dilation=2, groups=g)
    # Packed (Cout, Cin/g·k) per group -> torch's (Cin, Cout/g, k) (layers.weight_from_2d).
    wt = torch.from_numpy(wt2).double().reshape(g, cout // g, cin // g, k).permute(0, 2, 1, 3)
    ref2 = F.conv_transpose1d(xq, wt.reshape(cin, cout // g, k), stride=2, padding=1,
                              output_padding=1, groups=g)
    np.testing.assert_allclose(out["y1"], ref1.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["y2"], ref2.numpy(), rtol=1e-4, atol=1e-5)
    it = interp(m, {"x": x})
    for k in ("y1", "y2"):
        np.testing.assert_allclose(out[k], it[k], rtol=1e-4, atol=1e-5)


def ref_lstm(x, h, c, wih, whh, bih, bhh, q=None):
    """torch-order (i, f, g, o) LSTM; `q(v, which)` rounds x / h onto their grids."""
    H = h.shape[-1]
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t] if q is None else q(x[:, t], "x")
        hq = h if q is None else q(h, "h")
        gts = xt @ wih.T + hq @ whh.T + bih + bhh
        i, f, g, o = (gts[:, j * H:(j + 1) * H] for j in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys, 1), h, c


@pytest.mark.parametrize("quantized,flavor", [(False, "qdq"), (True, "qdq"), (True, "ort")])
def test_lstm_with_state_as_graph_io(tmp_path, quantized, flavor):
    I, H, T = 6, 5, 7
    bih = RNG.standard_normal(4 * H).astype(np.float32)
    bhh = RNG.standard_normal(4 * H).astype(np.float32)
    if quantized:
        wi_t, wih = packed("Wih", 4 * H, I, 4, per_row=True, seed=3, scale=0.2)
        if flavor == "ort":   # 8-bit affine: MatMulNBits inside the Scan body
            wh_t, whh = packed("Whh", 4 * H, H, 8, seed=4, scale=0.02)
        else:
            wh_t, whh = packed("Whh", 4 * H, H, 5, codebook="nonuniform", seed=4, scale=0.2)
        op = ir.Op("qlstm", "enc.lstm", ["x", "h", "c", "Wih", "Whh", "bih", "bhh"],
                   ["y", "h2", "c2"], [0, 1, 0], [0.03, 1 / 127])
    else:
        wih = RNG.standard_normal((4 * H, I)).astype(np.float32) * 0.5
        whh = RNG.standard_normal((4 * H, H)).astype(np.float32) * 0.5
        wi_t, wh_t = const("Wih", wih), const("Whh", whh)
        op = ir.Op("lstm", "enc.lstm", ["x", "h", "c", "Wih", "Whh", "bih", "bhh"],
                   ["y", "h2", "c2"])
    ts = [act("x", (1, T, I), "input"), act("h", (1, H), "state"), act("c", (1, H), "state"),
          wi_t, wh_t, const("bih", bih), const("bhh", bhh), act("y", (1, T, H), "output"),
          act("h2", (1, H)), act("c2", (1, H))]
    m = model([op], ts, ["x"], ["y"], states=[("h", "h2"), ("c", "c2")])
    x = RNG.standard_normal((1, T, I)).astype(np.float32)
    h0 = RNG.standard_normal((1, H)).astype(np.float32) * 0.5
    c0 = RNG.standard_normal((1, H)).astype(np.float32)
    out, rep = run(m, {"x": x, "h": h0, "c": c0}, tmp_path, exact_act=True, flavor=flavor)

    def q(v, which):
        s, zp = (0.03, 1) if which == "x" else (1 / 127, 0)
        return (ref_act(v, s, zp) - zp) * np.float32(s)

    y, h, c = ref_lstm(x.astype(np.float64), h0, c0, wih, whh, bih, bhh,
                       q if quantized else None)
    np.testing.assert_allclose(out["y"], y, atol=1e-4)
    np.testing.assert_allclose(out["h:next"], h, atol=1e-4)
    np.testing.assert_allclose(out["c:next"], c, atol=1e-4)
    if quantized:   # the interpreter carries h/c itself: one step from zero state
        zero = {"x": x, "h": np.zeros_like(h0), "c": np.zeros_like(c0)}
        out0, _ = run(m, zero, tmp_path, exact_act=True, flavor=flavor)
        np.testing.assert_allclose(out0["y"], interp(m, zero)["y"], atol=1e-4)
    assert rep["states"]["step"] == [{"input": "h", "output": "h:next"},
                                     {"input": "c", "output": "c:next"}]
    nodes = {n.op_type for n in onnx.load(rep["files"]["step"]["path"]).graph.node}
    assert ("Scan" if quantized else "LSTM") in nodes   # never unrolled over time
    if flavor == "ort":
        assert [r["storage"].split()[0] for r in rep["layers"]] == ["MatMulNBits"] * 2



# ---------------------------------------------------------------- float ops, one at a time

X = RNG.standard_normal((2, 3, 8)).astype(np.float32)
Y = RNG.standard_normal((2, 3, 8)).astype(np.float32)
POS = np.abs(X) + 0.1
COND = (RNG.random((2, 3, 8)) > 0.5).astype(np.uint8)
W_LIN = RNG.standard_normal((5, 8)).astype(np.float32)
B_LIN = RNG.standard_normal(5).astype(np.float32)
GAMMA = RNG.standard_normal(8).astype(np.float32)
VALUES = np.array([-1.0, -0.25, 0.0, 0.5, 1.5], np.float32)
TABLE = RNG.standard_normal((10, 4)).astype(np.float32)
IDX = np.array([[3, 0, 9], [1, 1, 2]], np.int64)


def _ln(x, g=None, b=None, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return y * (1 if g is None else g) + (0 if b is None else b)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# op, inputs (graph inputs are arrays; consts are ("c", array)), ints, floats, reference
FLOAT_CASES = {
    "linear": (["x", ("c", W_LIN), ("c", B_LIN)], [], [], lambda: X @ W_LIN.T + B_LIN),
    "linear/nobias": (["x", ("c", W_LIN), None], [], [], lambda: X @ W_LIN.T),
    "layer_norm": (["x", ("c", GAMMA), ("c", B_LIN[:1].repeat(8))], [], [1e-5],
                   lambda: _ln(X, GAMMA, B_LIN[0])),
    "layer_norm/plain": (["x", None, None], [], [1e-3], lambda: _ln(X, eps=1e-3)),
    "softmax": (["x"], [1], [], lambda: _softmax(X, 1)),
    "matmul": (["x", ("c", W_LIN.T.copy())], [], [], lambda: X @ W_LIN.T),
    "add": (["x", "y"], [], [], lambda: X + Y), "sub": (["x", "y"], [], [], lambda: X - Y),
    "mul": (["x", ("c", GAMMA)], [], [], lambda: X * GAMMA),
    "div": (["x", ("c", POS[0, 0])], [], [], lambda: X / POS[0, 0]),
    "where": (["cond", "x", "y"], [], [], lambda: np.where(COND > 0, X, Y)),
    "equal": (["cond", ("c", np.uint8(1))], [], [], lambda: (COND == 1).astype(np.uint8)),
    "relu": (["x"], [], [], lambda: np.maximum(X, 0)),
    "leaky_relu": (["x"], [], [0.2], lambda: np.where(X > 0, X, 0.2 * X)),
    "silu": (["x"], [], [], lambda: X * sigmoid(X)),
    "sigmoid": (["x"], [], [], lambda: sigmoid(X)), "tanh": (["x"], [], [], lambda: np.tanh(X)),
    "glu": (["x"], [2], [], lambda: X[..., :4] * sigmoid(X[..., 4:])),
    "clamp": (["x"], [], [-0.5, 0.7], lambda: np.clip(X, -0.5, 0.7)),
    "exp": (["x"], [], [], lambda: np.exp(X)), "log": (["pos"], [], [], lambda: np.log(POS)),
    "sqrt": (["pos"], [], [], lambda: np.sqrt(POS)), "neg": (["x"], [], [], lambda: -X),
    "abs": (["x"], [], [], lambda: np.abs(X)),
    "reshape": (["x"], [6, 8], [], lambda: X.reshape(6, 8)),
    "transpose": (["x"], [2, 0, 1], [], lambda: X.transpose(2, 0, 1)),
    "concat": (["x", "y", "x"], [1], [], lambda: np.concatenate([X, Y, X], 1)),
    "slice": (["x"], [2, 1, 7, 2], [], lambda: X[:, :, 1:7:2]),
    "pad": (["x"], [-1, 2, 1], [0.5], lambda: np.pad(X, [(0, 0), (0, 0), (2, 1)],
                                                        constant_values=0.5)),
    "gather": ([("c", TABLE), ("c", IDX)], [0], [], lambda: TABLE[IDX]),
    "copy": (["x"], [], [], lambda: X),
    "cast": (["cond"], [ir.DTYPES["f32"]], [], lambda: COND.astype(np.float32)),
    "nearest": (["x", ("c", VALUES)], [], [],
                lambda: VALUES[np.argmin(np.abs(X[..., None] - VALUES), -1)]),
    "reduce_mean": (["x"], [1, 1], [], lambda: X.mean(1, keepdims=True)),
}
FEEDS = {"x": X, "y": Y, "pos": POS, "cond": COND}


@pytest.mark.parametrize("case", sorted(FLOAT_CASES))
def test_float_op_matches_reference(tmp_path, case):
    spec, ints, floats, ref = FLOAT_CASES[case]
    ref = np.asarray(ref())
    ts, names = [], []
    for i, s in enumerate(spec):
        if s is None:
            names.append(None)
        elif isinstance(s, tuple):
            ts.append(const(f"k{i}", s[1]))
            names.append(f"k{i}")
        else:
            names.append(s)
    inputs = sorted({n for n in names if n in FEEDS})
    ts += [act(n, FEEDS[n].shape, "input", "u8" if n == "cond" else "f32") for n in inputs]
    out_dtype = {np.uint8: "u8"}.get(ref.dtype.type, "f32")
    ts.append(act("out", ref.shape, "output", out_dtype))
    op = ir.Op(case.split("/")[0], f"m.{case}", names, ["out"],
               ints, floats)
    m = model([op], ts, inputs, ["out"])
    out, _ = run(m, FEEDS, tmp_path)
    assert out["out"].dtype == ref.dtype
    np.testing.assert_allclose(out["out"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["out"], interp(m, FEEDS)["out"], rtol=1e-5, atol=1e-5)


def test_every_ir_op_is_covered_by_a_test():
    tested = {c.split("/")[0] for c in FLOAT_CASES}
    tested |= {"qlinear", "qconv1d", "qconv_transpose1d", "lstm", "qlstm", "conv1d",
               "conv_transpose1d"}
    assert tested == set(ir.OPS)


def test_float_conv1d_and_conv_transpose1d(tmp_path):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = RNG.standard_normal((1, 4, 11)).astype(np.float32)
    wc = RNG.standard_normal((6, 2, 3)).astype(np.float32)
    wt = RNG.standard_normal((4, 3, 5)).astype(np.float32)
    bc = RNG.standard_normal(6).astype(np.float32)
    ops = [ir.Op("conv1d", "c", ["x", "wc", "bc"], ["y1"], [1, 2, 0, 1, 2]),
           ir.Op("conv_transpose1d", "t", ["x", "wt", None], ["y2"], [3, 2, 1, 1, 2])]
    ref1 = F.conv1d(F.pad(torch.from_numpy(x), (2, 0)), torch.from_numpy(wc), torch.from_numpy(bc),
                    groups=2).numpy()
    ref2 = F.conv_transpose1d(torch.from_numpy(x), torch.from_numpy(wt), stride=3, padding=2,
                              output_padding=1, groups=2).numpy()
    ts = [act("x", x.shape, "input"), const("wc", wc), const("wt", wt), const("bc", bc),
          act("y1", ref1.shape, "output"), act("y2", ref2.shape, "output")]
    out, _ = run(model(ops, ts, ["x"], ["y1", "y2"]), {"x": x}, tmp_path)
    np.testing.assert_allclose(out["y1"], ref1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["y2"], ref2, rtol=1e-5, atol=1e-5)


def test_qlinear_dynamic_grid_per_row(tmp_path):
    N, K = 16, 64
    w_t, w = packed("W", N, K, 4, seed=5)
    m, bias = qlinear_model(w_t, N, K, act_mode=1, zp=0, scale=1.0)
    x = RNG.standard_normal((1, 4, K)).astype(np.float32)
    x[0, 2] = 0   # an all-zero row takes scale 1 (§2.6)
    out, _ = run(m, {"x": x}, tmp_path)
    s = np.abs(x).max(-1, keepdims=True) / np.float32(127)
    s = np.where(s == 0, np.float32(1), s).astype(np.float32)
    q = np.clip(np.rint(x * (np.float32(1) / s)), -128, 127)
    ref = (q.astype(np.float64) @ w.T) * s + bias
    np.testing.assert_allclose(out["y"], ref, rtol=1e-4, atol=1e-5)


def test_quantizelinear_rounding_vs_ir_rounding(tmp_path):
    """ONNX QuantizeLinear divides by the scale, the IR multiplies by its reciprocal: on a
    scale that is not a power of two a few inputs round to the neighbouring code. Measured
    here (both graphs run in onnxruntime): the exact route agrees with the reference to float
    precision, the QDQ route differs in rare elements by one activation step."""
    N, K = 32, 256
    w_t, w = packed("W", N, K, 8, seed=6)
    scale = 0.0371
    m, bias = qlinear_model(w_t, N, K, scale=scale, zp=0)
    # Inputs placed near rounding boundaries, where x/s and x·(1/s) can disagree.
    x = ((RNG.integers(-100, 100, (1, 4, K)) + 0.5) * scale).astype(np.float32)
    exact, _ = run(m, {"x": x}, tmp_path, exact_act=True)
    qdq, _ = run(m, {"x": x}, tmp_path)
    ref = ref_qlinear(x, w, scale, 0, bias)
    codes_ir = ref_act(x, scale, 0)
    codes_onnx = np.clip(np.rint(x / np.float32(scale)), -128, 127)
    differ = float((codes_ir != codes_onnx).mean())
    assert 0 < differ < 0.5   # boundary inputs: some flip, never most
    np.testing.assert_allclose(exact["y"], ref, rtol=1e-4, atol=1e-4)
    # The QDQ route equals the reference computed on ONNX's codes.
    ref_onnx = ((codes_onnx.astype(np.float64) @ w.T) * scale) + bias
    np.testing.assert_allclose(qdq["y"], ref_onnx, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits,gs,cb,route", [
    (4, 64, "affine", "MatMulNBits"), (2, 0, "affine", "MatMulNBits"),
    (8, 128, "affine", "MatMulNBits"), (4, 192, "affine", "DequantizeLinear"),
    (4, 0, "nonuniform", "Gather")])
def test_ort_flavor_matmulnbits(tmp_path, bits, gs, cb, route):
    N, K = 40, 300
    w_t, w = packed("W", N, K, bits, codebook=cb, group_size=gs, sparse=0.2, seed=7)
    m, bias = qlinear_model(w_t, N, K)
    x = RNG.standard_normal((1, 4, K)).astype(np.float32)
    out, rep = run(m, {"x": x}, tmp_path, flavor="ort", exact_act=True)
    np.testing.assert_allclose(out["y"], ref_qlinear(x, w, 0.05, 3, bias), rtol=1e-4,
                               atol=1e-4)
    assert rep["layers"][0]["storage"].startswith(route)


# ---------------------------------------------------------------- files, sizes, errors

def _rnnt_like(bits, N=256, K=512, **kw):
    """Three graphs sharing nothing but the tensor table, like an RNN-T export."""
    ts, graphs = [], {}
    for gi, g in enumerate(("encoder", "predictor", "joiner")):
        w_t, _ = packed(f"{g}.W", N, K, bits, seed=gi, **kw)
        op = ir.Op("qlinear", f"{g}.fc", [f"{g}.x", w_t.name, None], [f"{g}.y"], [0, 0], [0.1])
        ts += [w_t, act(f"{g}.x", (1, 2, K), "input"), act(f"{g}.y", (1, 2, N), "output")]
        graphs[g] = ir.Graph(g, [op], [f"{g}.x"], [f"{g}.y"])
    return ir.Model({t.name: t for t in ts}, graphs, {"source": {"model": "test"}})


def test_one_file_per_graph_deterministic_and_checked(tmp_path):
    m = _rnnt_like(4, group_size=64)
    rep = ek_onnx.export(m, tmp_path / "a" / "model.onnx")
    rep2 = ek_onnx.export(m, tmp_path / "b" / "model.onnx")
    assert sorted(rep["files"]) == ["encoder", "joiner", "predictor"]
    for g, f in rep["files"].items():
        assert f["path"].endswith(f"a/model.{g}.onnx")
        data = open(f["path"], "rb").read()
        assert data == open(rep2["files"][g]["path"], "rb").read()   # deterministic bytes
        proto = onnx.load_from_string(data)
        assert proto.ir_version <= 13 and proto.opset_import[0].version == 21
        onnx.checker.check_model(proto, full_check=True)
        assert not any(i.data_location == onnx.TensorProto.EXTERNAL
                       for i in proto.graph.initializer)
    assert rep["file_bytes"] == sum(f["bytes"] for f in rep["files"].values())
    # Three 256x512 4-bit matrices (codes + scales) and a little protobuf on top.
    assert rep["theoretical_bytes"] == rep["packed_bytes"]
    assert rep["packed_bytes"] <= rep["file_bytes"] <= 1.02 * rep["packed_bytes"] + 4096


def test_size_rule_int4_and_int2_vs_int8(tmp_path):
    sizes = {b: ek_onnx.export(_rnnt_like(b), tmp_path / f"m{b}.onnx")["file_bytes"]
             for b in (8, 4, 2)}
    assert sizes[4] <= 0.55 * sizes[8] and sizes[2] <= 0.35 * sizes[8], sizes


@pytest.mark.parametrize("exact_act", [False, True])
def test_graph_overhead_shared_grid_default_attrs_short_names(tmp_path, exact_act):
    """The bytes around the weights: two q-ops reading one tensor on one grid share one
    activation QDQ; attributes at their default (schema default, Conv's implicit 1s and 0s)
    are left out; derived initializers are '#n', IR constants keep their IR names."""
    N, K, C, T, k = 16, 64, 8, 12, 3
    wa_t, wa = packed("enc.a.weight", N, K, 4, seed=11)
    wb_t, wb = packed("enc.b.weight", N, K, 4, seed=12)
    wc_t, _ = packed("enc.c.weight", C, C * k, 4, seed=13)
    bias = const("enc.a.bias", RNG.standard_normal(N).astype(np.float32))
    ops = [ir.Op("qlinear", "enc.a", ["x", "enc.a.weight", "enc.a.bias"], ["ya"], [0, 3], [0.05]),
           ir.Op("qlinear", "enc.b", ["x", "enc.b.weight", None], ["yb"], [0, 3], [0.05]),
           ir.Op("qlinear", "enc.b2", ["x", "enc.b.weight", None], ["yb2"], [0, 2], [0.05]),
           ir.Op("qconv1d", "enc.c", ["xc", "enc.c.weight", None], ["yc"],
                 [1, 0, 0, 1, 1, k, 0, 0], [0.05])]
    ts = [act("x", (1, 4, K), "input"), act("xc", (1, C, T), "input"), wa_t, wb_t, wc_t, bias,
          act("ya", (1, 4, N), "output"), act("yb", (1, 4, N), "output"),
          act("yb2", (1, 4, N), "output"), act("yc", (1, C, T - k + 1), "output")]
    m = model(ops, ts, ["x", "xc"], ["ya", "yb", "yb2", "yc"])
    x = RNG.standard_normal((1, 4, K)).astype(np.float32)
    xc = RNG.standard_normal((1, C, T)).astype(np.float32)
    out, rep = run(m, {"x": x, "xc": xc}, tmp_path, exact_act=exact_act)
    if exact_act:   # QuantizeLinear's x/scale may flip a code; the exact route may not
        for y, w, zp, b in (("ya", wa, 3, bias.data), ("yb", wb, 3, None), ("yb2", wb, 2, None)):
            ref = ref_qlinear(x, w, 0.05, zp, b)
            np.testing.assert_allclose(out[y], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    g = onnx.load(rep["files"]["step"]["path"]).graph
    count = {t: sum(n.op_type == t for n in g.node) for t in ("QuantizeLinear", "Round")}
    assert count["Round" if exact_act else "QuantizeLinear"] == 3   # x@zp3 once, x@zp2, xc
    for n in g.node:
        schema = onnx.defs.get_schema(n.op_type, rep["opset"], n.domain)
        for a in n.attribute:
            d = schema.attributes[a.name].default_value
            assert a.SerializeToString() != d.SerializeToString(), (n.name, a.name)
    conv = next(n for n in g.node if n.op_type == "Conv")
    assert conv.name.startswith("enc.c#") and not conv.attribute
    inits = {t.name for t in g.initializer}
    assert "enc.a.bias" in inits
    assert all(n == "enc.a.bias" or n.startswith("#") for n in inits), inits


def _bad(m, **kw):
    with pytest.raises(ValueError) as ei:
        ek_onnx.export(m, "/nonexistent-dir-never-written/m.onnx", **kw)
    return str(ei.value)


def test_bad_input_is_a_value_error(tmp_path):
    w_t, _ = packed("W", 8, 64, 4)
    good, _ = qlinear_model(w_t, 8, 64, bias=False)
    assert "ir.Model" in _bad("not a model")
    assert "flavor" in _bad(good, flavor="tflite")
    assert "opset" in _bad(good, opset=19)
    m, _ = qlinear_model(w_t, 8, 64, bias=False)
    m.graphs["step"].ops[0].type = "fft"
    assert "unsupported op 'fft' at enc.fc" in _bad(m)
    m, _ = qlinear_model(w_t, 8, 64, bias=False)
    m.graphs["step"].ops[0].floats = []
    assert "floats" in _bad(m)
    m, _ = qlinear_model(w_t, 8, 64, bias=False)
    m.graphs["step"].ops[0].inputs[1] = "missing"
    assert "unknown tensor 'missing'" in _bad(m)
    corrupt = ir.Tensor("W", "packed", (8, 64), "const", w_t.data[:100])
    m, _ = qlinear_model(corrupt, 8, 64, bias=False)
    assert "packed weights" in _bad(m)
    m, _ = qlinear_model(ir.Tensor("W", "packed", (8, 32), "const", w_t.data), 8, 64, bias=False)
    assert "declared" in _bad(m)
    m, _ = qlinear_model(w_t, 8, 64, bias=False)
    m.graphs["step"].ops[0].floats = [float("nan")]
    assert "activation grid" in _bad(m)
    m, _ = qlinear_model(w_t, 8, 64, bias=False)
    m.tensors["y"] = act("y", (1, 4, 9), "output")   # inconsistent output shape
    assert "checker" in _bad(m) or "shape" in _bad(m)


# ---------------------------------------------------------------- zoo models

def zoo_ir(name, recipe, size="tiny", calib=2):
    """Compress -> calibrate -> lower as `edgekit export` does: (ir, fp32, specs, compressed).
    `recipe`: a built-in recipe name, or an int for `edgekit export --bits N`."""
    from edgekit.compress import compress
    from edgekit.export import pipeline
    from edgekit.export.lower import lower

    bits = recipe if isinstance(recipe, int) else None
    cfg = pipeline.ExportConfig(model=name, out="unused", size=size, calib=calib, bits=bits,
                                recipe=None if bits else recipe)
    _, fp32, specs, batches, _ = pipeline.load_source(cfg)
    model = compress(fp32, pipeline.make_recipe(cfg)[0], calib=batches)
    pipeline.calibrate_activations(model, batches)
    return lower(model, specs, {}), fp32, specs, model


def check_zoo(tmp_path, name, recipe, min_snr=40.0):
    """Every graph runs in onnxruntime, step after step with state fed back.

    `exact_act=True` must agree with the compressed PyTorch model (the source of truth) to
    `min_snr` — issue 4's int8 parity bar: the compressed model's quantized layers are
    integer-exact (they equal the interpreter and the C++ runtime), while onnxruntime runs float
    GEMMs on the dequantized weights, whose last-bit differences now and then flip an int8
    activation code (measured 43-45 dB on nwc/nwc-cmrl int8 and conmer mixed, inf elsewhere), and with the IR interpreter (the packed kernels on int8 codes) as closely as the
    interpreter agrees with PyTorch (a 1-ulp difference before a rounding step flips a code in
    either). The default QuantizeLinear graph rounds x/scale instead of x·(1/scale), so it
    only has to stay close."""
    from edgekit.export.interp import Interpreter
    from edgekit.export.lower.models import example_feeds
    from edgekit.export.parity import OrtRunner, TorchRunner, run_steps

    mir, fp32, specs, compressed = zoo_ir(name, recipe)
    exact = ek_onnx.export(mir, tmp_path / "exact.onnx", exact_act=True)
    qdq = ek_onnx.export(mir, tmp_path / "qdq.onnx")
    feeds = example_feeds(name, fp32, specs, 3, 0)
    cat = {}
    for spec in specs:
        g = spec.name
        # Accuracy level 0 (OrtRunner's default): onnxruntime's default (4) fuses
        # DequantizeLinear(INT4)+MatMul into MatMulNBits and re-quantizes the activations per
        # block, which costs ~100 dB of parity (docs/export-onnx.md).
        runs = {"exact": OrtRunner(exact["files"][g]["path"], mir, g),
                "qdq": OrtRunner(qdq["files"][g]["path"], mir, g),
                "torch": TorchRunner(compressed, spec), "fp32": TorchRunner(fp32, spec),
                "interp": Interpreter(mir, g)}
        outs = {k: run_steps(r, feeds[g]) for k, r in runs.items()}
        for out in outs["torch"]:
            cat = {k: np.concatenate(v[out]) for k, v in outs.items()}
            snr = {"exact~torch": snr_db(cat["torch"], cat["exact"]),
                   "exact~interp": snr_db(cat["interp"], cat["exact"]),
                   "interp~torch": snr_db(cat["torch"], cat["interp"]),
                   "qdq~torch": snr_db(cat["torch"], cat["qdq"]),
                   "torch~fp32": snr_db(cat["fp32"], cat["torch"])}
            where = (name, recipe, g, out, snr)
            assert snr["exact~torch"] >= min_snr, where
            assert snr["exact~interp"] >= min(min_snr, snr["interp~torch"] - 3), where
            # QuantizeLinear's x/scale flips a code now and then, and a flip before NWC's
            # `nearest` moves a whole bin: measured 41 dB here (docs/export-onnx.md). A real
            # translation bug (gate order, weight layout, grid) lands near 0 dB.
            assert snr["qdq~torch"] >= 25, where
    return qdq


def test_zoo_rnnt_mixed_runs_in_onnxruntime(tmp_path):
    rep = check_zoo(tmp_path, "rnnt", "mixed")
    storages = {row["storage"].split(" ")[0] for row in rep["layers"]}
    assert storages == {"DequantizeLinear", "Gather"}     # uniform 8-bit ends, Lloyd-Max rest
    assert any("5-bit codes stored as UINT8" in w for row in rep["layers"] for w in row["widened"])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["int8", "int4", "mixed"])
@pytest.mark.parametrize("name", ["conformer", "conmer", "nwc", "nwc-cmrl", "rnnt"])
def test_zoo_every_model_runs_in_onnxruntime(tmp_path, name, recipe):
    check_zoo(tmp_path, name, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conformer", "conmer", "nwc", "nwc-cmrl", "rnnt"])
def test_zoo_small_size_rule(tmp_path, name):
    """Issue 8: for the `small` models the int4 ONNX file <= 0.55x the int8 one, 2-bit <= 0.35x.

    Per-channel uniform weights (`edgekit export --bits N`). The built-in `int4` recipe keeps a
    float32 scale per 64 weights (+0.5 bit/weight), so it cannot get under 4.5/8 = 0.5625x in
    any exact format (EKM included); scripts/measure_onnx.py reports it."""
    size = {b: ek_onnx.export(zoo_ir(name, b, size="small", calib=1)[0],
                              tmp_path / f"{b}.onnx")["file_bytes"] for b in (8, 4, 2)}
    print(f"{name} small ONNX bytes by bits: {size}")   # shown with -s; quoted in the docs
    # The codecs are the tight case: ~350k weights per module, so the fp32 per-channel scales
    # and biases and the graph's own bytes are ~9 % of the int8 file (docs/export-onnx.md).
    assert size[4] <= 0.55 * size[8], size
    assert size[2] <= 0.35 * size[8], size


def test_packed_data_read_through_mmap_is_accepted(tmp_path):
    """Readers may hand packed data as a memoryview (mmap): same file as from bytes."""
    w_t, _ = packed("W", 16, 64, 2, seed=9)
    m, _ = qlinear_model(w_t, 16, 64, bias=False)
    a = ek_onnx.export(m, tmp_path / "a.onnx")
    m.tensors["W"].data = memoryview(bytearray(w_t.data))
    b = ek_onnx.export(m, tmp_path / "b.onnx")
    assert a["opset"] == b["opset"] == 25   # 2-bit codes: INT2 needs opset 25
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


# ---------------------------------------------------------------- 2-bit convs in onnxruntime

def _conv_chain(bits, codebook="affine", group_size=0):
    """Bias-less qconv1d -> qconv_transpose1d -> qconv1d -> qconv1d: every conv but the last
    feeds the next q-op's QuantizeLinear (the pattern onnxruntime fuses into QLinearConv)."""
    C, T, k = (64 if group_size else 16), 20, 3
    T2 = (T - 1) * 2 - 2 + k + 1
    ts, ops = [act("x", (1, C, T), "input")], []
    for i, (kind, ints, t_out) in enumerate([
            ("qconv1d", [1, 1, 1, 1, 1, k, 0, 0], T),
            ("qconv_transpose1d", [2, 1, 1, 1, 1, k, 0, 0], T2),
            ("qconv1d", [1, 1, 1, 1, 1, k, 0, 0], T2),
            ("qconv1d", [1, 1, 1, 1, 1, k, 0, 0], T2)]):
        w_t, _ = packed(f"c{i}.W", C, C * k, bits, codebook=codebook, group_size=group_size,
                        seed=20 + i)
        x, y = ts[-1].name if i else "x", f"y{i}"
        ops.append(ir.Op(kind, f"c{i}", [x, w_t.name, None], [y], ints, [0.05]))
        ts += [w_t, act(y, (1, C, t_out), "output" if i == 3 else "activation")]
    return model(ops, ts, ["x"], ["y3"])


def _ort_default(path, tmp_path):
    """A session with onnxruntime's default options (one thread) and its optimized graph."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s, onnx.load(so.optimized_model_filepath).graph


@pytest.mark.parametrize("bits,codebook,group_size", [
    (2, "affine", 0), (2, "uint", 0), (2, "affine", 64), (8, "affine", 0), (4, "affine", 0)])
def test_2bit_conv_weights_are_not_fused_into_qlinearconv(tmp_path, bits, codebook,
                                                          group_size):
    """onnxruntime 1.32 fuses DequantizeLinear(weight) -> Conv -> QuantizeLinear into a
    QLinearConv, which has no INT2/UINT2 kernel: such a file fails to load with default options.
    A 2-bit weight that would feed Conv directly goes through a one-input Sum (a copy), which
    onnxruntime keeps; grouped scales (Reshape) and ConvTranspose (regrouping) already have a
    node in between. INT8/INT4 weights get nothing (their conv fusion must stay)."""
    m = _conv_chain(bits, codebook, group_size)
    rep = ek_onnx.export(m, tmp_path / "m.onnx")
    g = onnx.load(rep["files"]["step"]["path"]).graph
    n_sum = sum(n.op_type == "Sum" for n in g.node)
    assert n_sum == (3 if bits == 2 and not group_size else 0)
    for n in g.node:
        if n.op_type == "Sum":
            assert len(n.input) == 1
            assert next(c for c in g.node if n.output[0] in c.input).op_type == "Conv"
    s, opt = _ort_default(rep["files"]["step"]["path"], tmp_path)
    ops = [n.op_type for n in opt.node]
    assert ops.count("Sum") == n_sum   # neither removed nor folded
    assert ("QLinearConv" in ops) == (bits == 8), ops
    x = RNG.standard_normal((1, m.tensors["x"].shape[1], 20)).astype(np.float32)
    out = s.run(None, {"x": x})[0]
    # same values as the unoptimized graph (where no fusion happens at all)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(rep["files"]["step"]["path"], so,
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    if bits != 8:   # QLinearConv rounds its output onto the int8 grid itself
        np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())
    if bits == 2:   # and the IR interpreter agrees (an SNR bar, not equality: QuantizeLinear
        # divides by the scale where the IR multiplies by its reciprocal, see check_zoo)
        assert snr_db(interp(m, {"x": x})["y3"], out) > 60


def check_zoo_2bit_default_options(tmp_path, name):
    """`edgekit export NAME --bits 2 --format onnx` (both flavors) loads and runs in
    onnxruntime with its default session options (what a user gets: graph optimizations on,
    accuracy level 4), step after step with state fed back. Returns the worst SNR vs the
    compressed model per flavor, at the default options and at accuracy level 0."""
    from edgekit.export.lower.models import example_feeds
    from edgekit.export.parity import OrtRunner, TorchRunner, run_steps

    mir, fp32, specs, compressed = zoo_ir(name, 2, calib=1)
    feeds = example_feeds(name, fp32, specs, 2, 0)
    ref = {s.name: run_steps(TorchRunner(compressed, s), feeds[s.name]) for s in specs}
    worst = {}
    for flavor in ("qdq", "ort"):
        rep = ek_onnx.export(mir, tmp_path / f"{flavor}.onnx", flavor=flavor)
        assert rep["opset"] == 25 and any(r["container_bits"] == 2 for r in rep["layers"])
        for level in (None, "0"):
            snrs = []
            for spec in specs:
                r = OrtRunner(rep["files"][spec.name]["path"], mir, spec.name,
                              accuracy_level=level)
                got = run_steps(r, feeds[spec.name])
                for out, vals in ref[spec.name].items():
                    g = np.concatenate([v.ravel() for v in got[out]])
                    assert np.isfinite(g).all(), (name, flavor, spec.name, out)
                    snrs.append(snr_db(np.concatenate([v.ravel() for v in vals]), g))
            worst[(flavor, level or "default")] = min(snrs)
    print(f"{name} tiny --bits 2 worst SNR vs compressed: {worst}")   # -s; quoted in the docs
    return worst


@pytest.mark.parametrize("name", ["nwc", *(pytest.param(n, marks=pytest.mark.slow)
                                           for n in ("nwc-cmrl", "conformer", "conmer", "rnnt"))])
def test_zoo_2bit_runs_in_onnxruntime_default_options(tmp_path, name):
    """Every zoo model (tiny, `--bits 2`): measured 136 dB (nwc, nwc-cmrl, conmer), 134 dB
    (rnnt), 50 dB (conformer: QuantizeLinear's x/scale, see check_zoo); issue 4's bar is 40."""
    worst = check_zoo_2bit_default_options(tmp_path, name)
    assert min(worst.values()) >= 40, worst
