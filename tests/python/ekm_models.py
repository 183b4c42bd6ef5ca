"""Hand-built `ir.Model`s for the EKM tests and the golden files (until the lowering exists).

numpy only (packed weights via `edgekit.kernels.packing`, byte-identical to
`kernels.pack(...).to_bytes()`), so the golden generator runs without the C++ extension.
"""

from __future__ import annotations

import numpy as np

from edgekit.export import ir
from edgekit.export.ekm.packed_check import packing


def packed(rng, N: int, K: int, bits: int, *, nm=None, sparse=False, per_row=False,
           group_size=0, affine=False) -> bytes:
    """Serialized packed weights with random codes, codebook and scales."""
    codes = rng.integers(0, 1 << bits, size=(N, K))
    if affine:
        codebook = packing.affine_table(bits)
    else:
        shape = (N, 1 << bits) if per_row else (1 << bits,)
        codebook = rng.integers(-128, 128, size=shape).astype(np.int8)
    ngroups = 1 if group_size == 0 else -(-K // group_size)
    scale = rng.uniform(0.001, 0.02, size=(N, ngroups)).astype(np.float32)
    mask = None
    if nm is not None:
        n, m = nm
        keep = np.argsort(rng.random((N, K // m, m)), axis=2) < n
        mask = keep.reshape(N, K)
    elif sparse:
        mask = rng.random((N, K)) < 0.4
        mask[0] = False  # an empty row: a sparse corner case the readers must accept
    s = packing.pack_arrays(codes, bits, codebook, scale, mask=mask, nm=nm, group_size=group_size)
    return packing.serialize(s)


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def streaming_model(seed: int = 0) -> ir.Model:
    """A small streaming 'step' graph: qlinear -> silu -> cached depthwise qconv1d -> qlstm
    -> layer_norm -> linear, with three state pairs (conv cache, LSTM h and c)."""
    rng = np.random.default_rng(seed)
    T, F, D, H, V = 4, 16, 32, 8, 5
    t = {}

    def add(name, dtype, shape, kind, data=None):
        t[name] = ir.Tensor(name, dtype, tuple(shape), kind, data)

    add("chunk", "f32", (1, T, F), "input")
    add("fc1.W", "packed", (D, F), "const", packed(rng, D, F, 4, affine=True))
    add("fc1.b", "f32", (D,), "const", _f32(rng, D))
    add("fc1.y", "f32", (1, T, D), "activation")
    add("act.y", "f32", (1, T, D), "activation")
    add("act.yt", "f32", (1, D, T), "activation")
    add("conv.cache", "f32", (1, D, 2), "state")
    add("conv.cat", "f32", (1, D, T + 2), "activation")
    add("conv.cache_next", "f32", (1, D, 2), "activation")
    add("conv.W", "packed", (D, 3), "const", packed(rng, D, 3, 3, per_row=True))
    add("conv.y", "f32", (1, D, T), "activation")
    add("conv.yt", "f32", (1, T, D), "activation")
    add("lstm.h", "f32", (1, H), "state")
    add("lstm.c", "f32", (1, H), "state")
    add("lstm.W_ih", "packed", (4 * H, D), "const", packed(rng, 4 * H, D, 8, nm=(2, 4)))
    add("lstm.W_hh", "packed", (4 * H, H), "const", packed(rng, 4 * H, H, 5, sparse=True))
    add("lstm.b_ih", "f32", (4 * H,), "const", _f32(rng, 4 * H))
    add("lstm.y", "f32", (1, T, H), "activation")
    add("lstm.h_next", "f32", (1, H), "activation")
    add("lstm.c_next", "f32", (1, H), "activation")
    add("norm.g", "f32", (H,), "const", _f32(rng, H))
    add("norm.y", "f32", (1, T, H), "activation")
    add("out.W", "f32", (V, H), "const", _f32(rng, V, H))
    add("logits", "f32", (1, T, V), "output")
    ops = [
        ir.Op("qlinear", "encoder.fc1", ["chunk", "fc1.W", "fc1.b"], ["fc1.y"], [0, 3], [0.05]),
        ir.Op("silu", "encoder.act", ["fc1.y"], ["act.y"]),
        ir.Op("transpose", "encoder.conv", ["act.y"], ["act.yt"], [0, 2, 1]),
        ir.Op("concat", "encoder.conv", ["conv.cache", "act.yt"], ["conv.cat"], [2]),
        ir.Op("slice", "encoder.conv", ["conv.cat"], ["conv.cache_next"], [2, T, T + 2, 1]),
        ir.Op("qconv1d", "encoder.conv", ["conv.cat", "conv.W", None], ["conv.y"],
              [1, 0, 0, 1, D, 3, 1, 0], [1.0]),
        ir.Op("transpose", "encoder.conv", ["conv.y"], ["conv.yt"], [0, 2, 1]),
        ir.Op("qlstm", "encoder.lstm", ["conv.yt", "lstm.h", "lstm.c", "lstm.W_ih", "lstm.W_hh",
                                        "lstm.b_ih", None],
              ["lstm.y", "lstm.h_next", "lstm.c_next"], [0, 0, 0], [0.04, 1 / 127]),
        ir.Op("layer_norm", "encoder.norm", ["lstm.y", "norm.g", None], ["norm.y"], [], [1e-5]),
        ir.Op("linear", "head", ["norm.y", "out.W", None], ["logits"]),
    ]
    g = ir.Graph("step", ops, ["chunk"], ["logits"],
                 [("conv.cache", "conv.cache_next"), ("lstm.h", "lstm.h_next"),
                  ("lstm.c", "lstm.c_next")])
    meta = {"edgekit_version": "0.1.0",
            "source": {"model": "hand-built", "size": "tiny", "seed": seed, "factory": None},
            "recipe": {"name": "mixed", "text": "bits: mixed\n"},
            "streaming": {"graph": "step", "input": "chunk", "time_axis": 1, "chunk": T,
                          "output_time_axis": 1}}
    return ir.Model(t, {"step": g}, meta)


def two_graph_model(seed: int = 1) -> ir.Model:
    """Two graphs over shared constants (an RNN-T-like encoder/joiner split), int attributes
    only in one graph, and an i64 gather."""
    rng = np.random.default_rng(seed)
    t = {
        "x": ir.Tensor("x", "f32", (1, 3, 64), "input"),
        "W": ir.Tensor("W", "packed", (16, 64), "const", packed(rng, 16, 64, 2, group_size=64)),
        "enc": ir.Tensor("enc", "f32", (1, 3, 16), "output"),
        "tok": ir.Tensor("tok", "i64", (1, 1), "input"),
        "emb": ir.Tensor("emb", "f32", (10, 16), "const", _f32(rng, 10, 16)),
        "e": ir.Tensor("e", "f32", (1, 1, 16), "activation"),
        "pred": ir.Tensor("pred", "f32", (1, 1, 16), "output"),
    }
    enc = ir.Graph("encoder", [ir.Op("qlinear", "enc.fc", ["x", "W", None], ["enc"], [1, 0], [1.0])],
                   ["x"], ["enc"])
    pred = ir.Graph("predictor", [ir.Op("gather", "pred.embed", ["emb", "tok"], ["e"], [0]),
                                  ir.Op("tanh", "pred.act", ["e"], ["pred"])], ["tok"], ["pred"])
    return ir.Model(t, {"encoder": enc, "predictor": pred},
                    {"source": {"model": "hand-built"}})


def size_model(seed: int = 2, layers: int = 6) -> tuple[ir.Model, int, int]:
    """A stack of qlinear layers with mixed bits and sparsity; also returns the sum of the
    packed buffers' stored bytes (format §1.8) and of the float constants' bytes."""
    rng = np.random.default_rng(seed)
    D = 256
    kinds = [dict(bits=8), dict(bits=4, affine=True), dict(bits=3, group_size=128),
             dict(bits=4, nm=(2, 4)), dict(bits=6, per_row=True), dict(bits=5, sparse=True)]
    t = {"x": ir.Tensor("x", "f32", (1, 8, D), "input")}
    ops, prev, packed_bytes, float_bytes = [], "x", 0, 0
    for i in range(layers):
        w = packed(rng, D, D, **kinds[i % len(kinds)])
        packed_bytes += packing.deserialize(w).nbytes
        b = _f32(rng, D)
        float_bytes += b.nbytes
        out = "y" if i == layers - 1 else f"h{i}"
        t[f"l{i}.W"] = ir.Tensor(f"l{i}.W", "packed", (D, D), "const", w)
        t[f"l{i}.b"] = ir.Tensor(f"l{i}.b", "f32", (D,), "const", b)
        t[out] = ir.Tensor(out, "f32", (1, 8, D), "output" if out == "y" else "activation")
        ops.append(ir.Op("qlinear", f"layers.{i}", [prev, f"l{i}.W", f"l{i}.b"], [out], [1, 0], [1.0]))
        prev = out
    return ir.Model(t, {"main": ir.Graph("main", ops, ["x"], ["y"])}, {}), packed_bytes, float_bytes
