"""The C++ ops (csrc/runtime/ops) end to end: one-op EKM models run by `edgekit.runtime.Session`
against torch.

q-ops are compared with torch applied to the exact dequantized weights and the input
fake-quantized by `torch.fake_quantize_per_tensor_affine` (the compressed model's arithmetic):
the only difference left is float summation order, so tolerances are float-rounding sized.
Bit-exact checks against loops, every kernel variant and threads live in ek-test
(tests/cpp/test_ops*.cc).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekit.export import ekm, ir
from edgekit.export.ekm.packed_check import packing
from edgekit.runtime import RuntimeModelError, Session, available

pytestmark = pytest.mark.skipif(not available(), reason="edgekit._C runtime not built (make build)")


def _packed(rng, N, K, bits, *, group_size=0, sparse=False, nm=None):
    """(serialized packed bytes, dequantized float32 (N, K) weight)."""
    codes = rng.integers(0, 1 << bits, size=(N, K))
    codebook = rng.integers(-128, 128, size=(1 << bits,)).astype(np.int8)
    ngroups = 1 if group_size == 0 else -(-K // group_size)
    scale = rng.uniform(0.002, 0.02, size=(N, ngroups)).astype(np.float32)
    mask = None
    if nm is not None:
        n, m = nm
        mask = (np.argsort(rng.random((N, K // m, m)), axis=2) < n).reshape(N, K)
    elif sparse:
        mask = rng.random((N, K)) < 0.5
    s = packing.pack_arrays(codes, bits, codebook, scale, mask=mask, nm=nm, group_size=group_size)
    g = np.arange(K) // (group_size or K)
    w = scale[:, g] * codebook[codes].astype(np.float32)
    if mask is not None:
        w = np.where(mask, w, 0.0)
    return packing.serialize(s), w.astype(np.float32)


def _run(tmp_path, op: ir.Op, consts: dict, inputs: dict, outputs: dict, threads=1, isa=None):
    """One-op model: consts name -> (dtype, array or packed bytes with its (N, K)),
    inputs name -> array, outputs name -> (dtype, shape). Returns the Session's outputs."""
    t = {}
    for name, (dtype, data, *shape) in consts.items():
        shp = tuple(shape[0]) if shape else tuple(np.shape(data))
        t[name] = ir.Tensor(name, dtype, shp, "const", data)
    for name, a in inputs.items():
        t[name] = ir.Tensor(name, {np.float32: "f32", np.int64: "i64", np.int32: "i32",
                                   np.uint8: "u8"}[a.dtype.type], a.shape, "input")
    for name, (dtype, shape) in outputs.items():
        t[name] = ir.Tensor(name, dtype, tuple(shape), "output")
    g = ir.Graph("g", [op], list(inputs), list(outputs))
    path = tmp_path / "op.ekm"
    ekm.write(ir.Model(t, {"g": g}, {}), path)
    return Session(path, threads=threads, isa=isa).run(inputs)


def _fq(x, scale, zp):
    return torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), scale, zp, -128, 127)


def _close(got, want, rel=2e-5):
    want = np.asarray(want, np.float32)
    tol = rel * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("bits,group,sparse,threads", [(8, 0, False, 1), (4, 64, True, 2), (3, 0, False, 2)])
def test_qlinear_static_matches_fake_quant_torch(tmp_path, bits, group, sparse, threads):
    rng = np.random.default_rng(bits)
    N, K, M = 48, 200, 6
    wb, w = _packed(rng, N, K, bits, group_size=group, sparse=sparse)
    b = rng.standard_normal(N).astype(np.float32)
    x = rng.standard_normal((1, M, K)).astype(np.float32)
    scale, zp = 0.021, -4
    op = ir.Op("qlinear", "fc", ["x", "W", "b"], ["y"], [0, zp], [scale])
    y = _run(tmp_path, op, {"W": ("packed", wb, (N, K)), "b": ("f32", b)}, {"x": x},
             {"y": ("f32", (1, M, N))}, threads=threads)["y"]
    want = F.linear(_fq(x, scale, zp), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    _close(y, want)


def test_qlinear_dynamic_rows_are_independent(tmp_path):
    rng = np.random.default_rng(1)
    N, K = 16, 72  # K % 4 == 0 so the weight is 2:4 sparse: dynamic rows through the sparse path
    wb, w = _packed(rng, N, K, 8, nm=(2, 4))
    x = rng.standard_normal((1, 3, K)).astype(np.float32)
    x[0, 1] *= 50.0  # a loud row must not change the grid of its neighbours
    op = ir.Op("qlinear", "fc", ["x", "W", None], ["y"], [1, 0], [1.0])
    y = _run(tmp_path, op, {"W": ("packed", wb, (N, K))}, {"x": x}, {"y": ("f32", (1, 3, N))})["y"]
    for m in range(3):
        s = float(np.abs(x[0, m]).max()) / 127.0
        want = F.linear(_fq(x[0, m], s, 0), torch.from_numpy(w)).numpy()
        _close(y[0, m], want)


@pytest.mark.parametrize("cin,cout,k,stride,pads,dil,groups", [
    (8, 12, 3, 1, (1, 1), 1, 1),
    (16, 16, 5, 1, (4, 0), 1, 16),   # causal depthwise, as in a conformer conv module
    (6, 9, 4, 2, (2, 1), 2, 3),
])
def test_qconv1d_matches_torch_conv1d(tmp_path, cin, cout, k, stride, pads, dil, groups):
    rng = np.random.default_rng(cin + k)
    T = 20
    wb, w2 = _packed(rng, cout, cin // groups * k, 6)
    b = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((1, cin, T)).astype(np.float32)
    scale, zp = 0.03, 7
    tout = (T + pads[0] + pads[1] - dil * (k - 1) - 1) // stride + 1
    op = ir.Op("qconv1d", "conv", ["x", "W", "b"], ["y"],
               [stride, pads[0], pads[1], dil, groups, k, 0, zp], [scale])
    y = _run(tmp_path, op, {"W": ("packed", wb, w2.shape), "b": ("f32", b)}, {"x": x},
             {"y": ("f32", (1, cout, tout))}, threads=2)["y"]
    xq = F.pad(_fq(x, scale, zp), pads)  # zero padding == padding with x_zp codes
    want = F.conv1d(xq, torch.from_numpy(w2.reshape(cout, cin // groups, k)), torch.from_numpy(b),
                    stride=stride, dilation=dil, groups=groups).numpy()
    _close(y, want)


@pytest.mark.parametrize("cin,og,k,stride,pad,opad,dil,groups", [
    (8, 6, 4, 2, 1, 0, 1, 1),
    (6, 2, 5, 3, 2, 2, 1, 3),
    (4, 3, 3, 2, 0, 1, 2, 2),
])
def test_qconv_transpose1d_matches_torch(tmp_path, cin, og, k, stride, pad, opad, dil, groups):
    rng = np.random.default_rng(cin * 7 + k)
    T, cg = 9, cin // groups
    wb, w2 = _packed(rng, og * groups, cg * k, 8)
    b = rng.standard_normal(og * groups).astype(np.float32)
    x = rng.standard_normal((1, cin, T)).astype(np.float32)
    scale, zp = 0.025, -9
    tout = (T - 1) * stride - 2 * pad + dil * (k - 1) + opad + 1
    op = ir.Op("qconv_transpose1d", "up", ["x", "W", "b"], ["y"],
               [stride, pad, opad, dil, groups, k, 0, zp], [scale])
    y = _run(tmp_path, op, {"W": ("packed", wb, w2.shape), "b": ("f32", b)}, {"x": x},
             {"y": ("f32", (1, og * groups, tout))})["y"]
    # compress.layers.weight_2d's (g*og, cg*k) view back to torch's (cin, og, k)
    wt = torch.from_numpy(w2).reshape(groups, og, cg, k).permute(0, 2, 1, 3).reshape(cin, og, k)
    want = F.conv_transpose1d(_fq(x, scale, zp), wt, torch.from_numpy(b), stride=stride,
                              padding=pad, output_padding=opad, groups=groups, dilation=dil).numpy()
    _close(y, want)


def test_qlstm_matches_torch_cell_with_quantized_h(tmp_path):
    rng = np.random.default_rng(5)
    T, I, H = 6, 24, 10
    wib, wi = _packed(rng, 4 * H, I, 8)
    whb, wh = _packed(rng, 4 * H, H, 5, sparse=True)
    bi, bh = (rng.standard_normal(4 * H).astype(np.float32) * 0.1 for _ in range(2))
    x = rng.standard_normal((1, T, I)).astype(np.float32)
    h0 = (rng.standard_normal((1, H)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((1, H)) * 0.5).astype(np.float32)
    xs, xzp, hs, hzp = 0.02, 3, 1.0 / 127, 0
    op = ir.Op("qlstm", "lstm", ["x", "h0", "c0", "Wi", "Wh", "bi", "bh"], ["y", "hT", "cT"],
               [0, xzp, hzp], [xs, hs])
    out = _run(tmp_path, op, {"Wi": ("packed", wib, (4 * H, I)), "Wh": ("packed", whb, (4 * H, H)),
                              "bi": ("f32", bi), "bh": ("f32", bh)},
               {"x": x, "h0": h0, "c0": c0},
               {"y": ("f32", (1, T, H)), "hT": ("f32", (1, H)), "cT": ("f32", (1, H))}, threads=2)
    cell = torch.nn.LSTMCell(I, H)
    with torch.no_grad():
        for p, v in ((cell.weight_ih, wi), (cell.weight_hh, wh), (cell.bias_ih, bi), (cell.bias_hh, bh)):
            p.copy_(torch.from_numpy(v))
        h, c = torch.from_numpy(h0), torch.from_numpy(c0)
        xq = _fq(x[0], xs, xzp)
        ys = []
        for t in range(T):
            # the runtime feeds W_hh the int8-rounded h (its static grid); torch's cell, given
            # the same rounded h, must agree
            h, c = cell(xq[t:t + 1], (torch.fake_quantize_per_tensor_affine(h, hs, hzp, -128, 127), c))
            ys.append(h)
    _close(out["y"][0], torch.cat(ys).numpy(), rel=1e-4)
    _close(out["hT"], h.numpy(), rel=1e-4)
    _close(out["cT"], c.numpy(), rel=1e-4)


def test_float_ops_match_torch(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 5, 16)).astype(np.float32)
    g, b = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    y = _run(tmp_path, ir.Op("layer_norm", "ln", ["x", "g", "b"], ["y"], [], [1e-5]),
             {"g": ("f32", g), "b": ("f32", b)}, {"x": x}, {"y": ("f32", x.shape)})["y"]
    _close(y, F.layer_norm(torch.from_numpy(x), (16,), torch.from_numpy(g), torch.from_numpy(b)).numpy())
    y = _run(tmp_path, ir.Op("softmax", "sm", ["x"], ["y"], [2]), {}, {"x": x}, {"y": ("f32", x.shape)})["y"]
    _close(y, torch.softmax(torch.from_numpy(x), 2).numpy())
    y = _run(tmp_path, ir.Op("glu", "glu", ["x"], ["y"], [2]), {}, {"x": x}, {"y": ("f32", (1, 5, 8))})["y"]
    _close(y, F.glu(torch.from_numpy(x), 2).numpy())
    y = _run(tmp_path, ir.Op("silu", "act", ["x"], ["y"]), {}, {"x": x}, {"y": ("f32", x.shape)})["y"]
    _close(y, F.silu(torch.from_numpy(x)).numpy())
    w = rng.standard_normal((8, 16, 3)).astype(np.float32)
    xc = rng.standard_normal((1, 16, 12)).astype(np.float32)
    y = _run(tmp_path, ir.Op("conv1d", "c", ["x", "w", None], ["y"], [2, 1, 1, 1, 2]),
             {"w": ("f32", w[:, :8])}, {"x": xc}, {"y": ("f32", (1, 8, 6))})["y"]
    _close(y, F.conv1d(torch.from_numpy(xc), torch.from_numpy(w[:, :8].copy()), stride=2, padding=1,
                       groups=2).numpy())


def test_gather_index_out_of_range_is_an_error_not_a_crash(tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    op = ir.Op("gather", "emb", ["t", "i"], ["y"], [0])
    ok = _run(tmp_path, op, {"t": ("f32", table)}, {"i": np.array([[3, 0]], np.int64)},
              {"y": ("f32", (1, 2, 3))})["y"]
    np.testing.assert_array_equal(ok, table[[[3, 0]]])
    with pytest.raises(RuntimeModelError, match="out of range"):
        _run(tmp_path, op, {"t": ("f32", table)}, {"i": np.array([[4, 0]], np.int64)},
             {"y": ("f32", (1, 2, 3))})


def _hand_built_graphs():
    import ekm_models  # tests/python: hand-built multi-op models of the EKM tests
    for fn in ("streaming_model", "two_graph_model", "size_model"):
        m = getattr(ekm_models, fn)()
        m = m[0] if isinstance(m, tuple) else m
        for g in m.graphs:
            yield pytest.param(m, g, id=f"{fn}-{g}")


@pytest.mark.parametrize("model,graph", list(_hand_built_graphs()))
def test_multi_op_graphs_agree_with_reference_interpreter(tmp_path, model, graph):
    """Whole graphs (q-ops, cached conv, LSTM state, norms, shape ops) over 3 streaming
    steps against edgekit.export.interp, whose q-ops run the same packed kernels."""
    from edgekit.export.interp import Interpreter
    path = tmp_path / "m.ekm"
    ekm.write(model, path)
    s, it = Session(path, graph=graph), Interpreter(model, graph)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ins = {d["name"]: rng.standard_normal(d["shape"]).astype(np.float32) if d["dtype"] == "f32"
               else np.zeros(d["shape"], ir.NP_DTYPES[d["dtype"]]) for d in s.inputs}
        got, want = s.step(ins), it.step(ins)
        for name, w in want.items():
            _close(got[name], w, rel=1e-5)
