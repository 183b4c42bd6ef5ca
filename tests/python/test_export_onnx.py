"""ONNX exporter: every IR op run in onnxruntime against a numpy reference of docs/format.md
§2.6, storage widths and sizes of packed weights, file naming/determinism, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgekit.export import ir  # noqa: E402
from edgekit.export import onnx as ek_onnx  # noqa: E402
from edgekit.kernels import packing  # noqa: E402

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- building IR models

def packed(name, N, K, bits, *, codebook="affine", per_row=False, group_size=0, sparse=0.0,
           seed=0):
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
    scale = rng.uniform(0.001, 0.01, (N, ng)).astype(np.float32)
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


def snr_db(ref, got):
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - got) ** 2), 1e-30))


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
    (row,) = rep["layers"]
    assert row["storage"].startswith(storage), row
    assert row["container_bits"] == cbits
    assert bool(row["widened"]) == (cbits > bits or sparse > 0)
    # The codes really are stored at the container width: N·K·cbits/8 bytes plus small tables.
    assert N * K * cbits / 8 <= row["onnx_bytes"] <= N * K * cbits / 8 + N * 4 * (K // 64 + 1) \
        + N * (1 << bits) + N + 64
