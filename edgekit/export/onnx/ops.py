"""IR ops (docs/format.md §2.6) -> ONNX nodes. One function per op family; `OPS` maps names.

Each function gets the `Emitter` (tensor lookup, builder, weights) and the IR op, and must
produce ONNX values named exactly like the op's IR outputs, so later ops find them.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from edgekit.export import ir
from edgekit.export.onnx.builder import ELEM
from edgekit.export.onnx import lstm

_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log",
          "sqrt": "Sqrt", "neg": "Neg", "abs": "Abs", "copy": "Identity"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "matmul": "MatMul"}
_DTYPE_NAMES = {code: name for name, code in ir.DTYPES.items()}


def act_quant(e, x: str, act_mode: int, zp: int, scale: float, hint: str) -> str:
    """The q-op input grid: x rounded onto int8 and back to float (the value the kernels see).

    act_mode 0 is QuantizeLinear/DequantizeLinear (ONNX divides by the scale; the IR multiplies
    by its float32 reciprocal — `exact_act=True` emits Mul/Round/Clip instead, which rounds
    exactly like the IR). act_mode 1 (per-row dynamic grid) has no ONNX op and is built from
    ReduceMax/Round/Clip.
    """
    # Two consumers of one tensor on one grid (a gated conv's filter and gate) share one QDQ.
    key = ("act", e.b, x, act_mode, zp, float(scale), e.exact_act)
    return e.cached(key, lambda: _act_quant(e, x, act_mode, zp, scale, hint))


def _act_quant(e, x: str, act_mode: int, zp: int, scale: float, hint: str) -> str:
    b = e.b
    if act_mode == 0:
        if not np.isfinite(scale) or scale <= 0 or not -128 <= zp <= 127:
            raise ValueError(f"{hint}: bad activation grid scale={scale}, zp={zp}")
        s = b.const(np.float32(scale))
        if e.exact_act:
            inv = b.const(np.float32(1.0) / np.float32(scale))
            zf = b.const(np.float32(zp))
            r = b.one("Add", [b.one("Round", [b.one("Mul", [x, inv], hint)], hint), zf], hint)
            q = b.one("Clip", [r, b.const(np.float32(-128)), b.const(np.float32(127))], hint)
            return b.one("Mul", [b.one("Sub", [q, zf], hint), s], hint)
        # The uint8 grid shifted by 128 rounds and clamps identically; an int8 one trips
        # onnxruntime 1.31's S8->U8 rewrite + MatMul/Gemm fusion on x86 (the session fails
        # to load: "output_dtype INT8 does not match y_zero_point type UINT8").
        z = b.const(np.uint8(zp + 128), np.uint8)
        q = b.one("QuantizeLinear", [x, s, z], hint)
        return b.one("DequantizeLinear", [q, s, z], hint)
    if act_mode == 1:
        m = b.one("ReduceMax", [b.one("Abs", [x], hint), b.const([-1], np.int64)], hint,
                  keepdims=1)
        s = b.one("Div", [m, b.const(np.float32(127))], hint)
        zero = b.one("Equal", [s, b.const(np.float32(0))], hint)
        s = b.one("Where", [zero, b.const(np.float32(1)), s], hint)
        r = b.one("Round", [b.one("Mul", [x, b.one("Reciprocal", [s], hint)], hint)], hint)
        q = b.one("Clip", [r, b.const(np.float32(-128)), b.const(np.float32(127))], hint)
        return b.one("Mul", [q, s], hint)
    raise ValueError(f"{hint}: unknown act_mode {act_mode}")


def _out(e, op, onnx_op, inputs, **attrs):
    e.b.node(onnx_op, inputs, [op.outputs[0]], op.name, **attrs)


def unary(e, op):
    _out(e, op, _UNARY[op.type], [e.value(op.inputs[0])])


def binary(e, op):
    _out(e, op, _BINARY[op.type], [e.value(i) for i in op.inputs])


def qlinear(e, op):
    x, w, bias = op.inputs
    act_mode, zp = op.ints
    xd = act_quant(e, e.value(x), act_mode, zp, op.floats[0], op.name)
    y = e.qmatmul(xd, w, op)
    if bias is None:
        _out(e, op, "Identity", [y])
    else:
        _out(e, op, "Add", [y, e.value(bias)])


def linear(e, op):
    x, w, bias = op.inputs
    wt = e.cached(("T", w), lambda: e.b.const(e.array(w).T, hint=w))
    if bias is None:
        _out(e, op, "MatMul", [e.value(x), wt])
    else:
        _out(e, op, "Add", [e.b.one("MatMul", [e.value(x), wt], op.name), e.value(bias)])


def _conv(e, op, onnx_op, x, w, ints):
    bias = op.inputs[2]
    inputs = [x, w] + ([e.value(bias)] if bias is not None else [])
    if onnx_op == "Conv":
        stride, pl, pr, dil, groups = ints[:5]
        attrs = {"strides": [stride], "pads": [pl, pr], "dilations": [dil], "group": groups}
    else:
        stride, pad, opad, dil, groups = ints[:5]
        attrs = {"strides": [stride], "pads": [pad, pad], "output_padding": [opad],
                 "dilations": [dil], "group": groups}
    # Absent strides/dilations mean 1 and absent pads/output_padding 0 (no schema default
    # to strip them by): ~40 bytes per conv on a small codec.
    unit = {"strides": [1], "dilations": [1], "pads": [0, 0], "output_padding": [0]}
    _out(e, op, onnx_op, inputs, **{k: v for k, v in attrs.items() if unit.get(k) != v})


def conv1d(e, op):
    _conv(e, op, "Conv", e.value(op.inputs[0]), e.value(op.inputs[1]), op.ints)


def conv_transpose1d(e, op):
    _conv(e, op, "ConvTranspose", e.value(op.inputs[0]), e.value(op.inputs[1]), op.ints)


def _qconv_input(e, op):
    act_mode, zp = op.ints[6], op.ints[7]
    if act_mode != 0:
        # A per-output-position grid quantizes each input element differently for every
        # window it falls in: not expressible without an explicit im2col.
        raise ValueError(f"{op.name}: {op.type} with act_mode {act_mode} (dynamic) has no ONNX "
                         "lowering; calibrate the activations (static grid)")
    return act_quant(e, e.value(op.inputs[0]), act_mode, zp, op.floats[0], op.name)


def qconv1d(e, op):
    xd = _qconv_input(e, op)
    k = op.ints[5]
    cout, kk = e.model.tensors[op.inputs[1]].shape
    w = e.weight(op.inputs[1], op, kn=False, shape=(cout, kk // k, k))
    _conv(e, op, "Conv", xd, w, op.ints)


def qconv_transpose1d(e, op):
    xd = _qconv_input(e, op)
    cin = e.model.tensors[op.inputs[0]].shape[1]
    cout, kk = e.model.tensors[op.inputs[1]].shape
    groups, k = op.ints[4], op.ints[5]
    b = e.b
    # Packed rows are (group, out-in-group); ONNX wants (in, out/groups, k): regroup the view.
    w2 = e.weight(op.inputs[1], op, kn=False)
    w4 = b.one("Reshape", [w2, b.const([groups, cout // groups, cin // groups, k], np.int64)],
               op.name)
    wt = b.one("Transpose", [w4], op.name, perm=[0, 2, 1, 3])
    w = b.one("Reshape", [wt, b.const([cin, cout // groups, k], np.int64)], op.name)
    _conv(e, op, "ConvTranspose", xd, w, op.ints)


def layer_norm(e, op):
    x, gamma, beta = op.inputs
    D = e.model.tensors[x].shape[-1]
    g = e.value(gamma) if gamma is not None else e.b.const(np.ones(D, np.float32))
    inputs = [e.value(x), g] + ([e.value(beta)] if beta is not None else [])
    _out(e, op, "LayerNormalization", inputs, axis=-1, epsilon=float(op.floats[0]))


def softmax(e, op):
    _out(e, op, "Softmax", [e.value(op.inputs[0])], axis=int(op.ints[0]))


def where(e, op):
    c, a, b_ = op.inputs
    cond = e.b.one("Cast", [e.value(c)], op.name, to=TensorProto.BOOL)
    _out(e, op, "Where", [cond, e.value(a), e.value(b_)])


def equal(e, op):
    eq = e.b.one("Equal", [e.value(i) for i in op.inputs], op.name)
    _out(e, op, "Cast", [eq], to=TensorProto.UINT8)


def leaky_relu(e, op):
    _out(e, op, "LeakyRelu", [e.value(op.inputs[0])], alpha=float(op.floats[0]))


def silu(e, op):
    x = e.value(op.inputs[0])
    _out(e, op, "Mul", [x, e.b.one("Sigmoid", [x], op.name)])


def glu(e, op):
    a, g = e.b.node("Split", [e.value(op.inputs[0])], 2, op.name, axis=int(op.ints[0]),
                    num_outputs=2)
    _out(e, op, "Mul", [a, e.b.one("Sigmoid", [g], op.name)])


def clamp(e, op):
    lo, hi = (np.float32(v) for v in op.floats)
    _out(e, op, "Clip", [e.value(op.inputs[0]), e.b.const(lo), e.b.const(hi)])


def reshape(e, op):
    _out(e, op, "Reshape", [e.value(op.inputs[0]), e.b.const(list(op.ints), np.int64)])


def transpose(e, op):
    _out(e, op, "Transpose", [e.value(op.inputs[0])], perm=[int(p) for p in op.ints])


def concat(e, op):
    _out(e, op, "Concat", [e.value(i) for i in op.inputs], axis=int(op.ints[0]))


def slice_(e, op):
    axis, start, end, step = (int(v) for v in op.ints)
    c = e.b.const
    _out(e, op, "Slice", [e.value(op.inputs[0]), c([start], np.int64), c([end], np.int64),
                          c([axis], np.int64), c([step], np.int64)])


def pad(e, op):
    axis, before, after = (int(v) for v in op.ints)
    rank = len(e.model.tensors[op.inputs[0]].shape)
    axis = axis + rank if axis < 0 else axis
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    _out(e, op, "Pad", [e.value(op.inputs[0]), e.b.const(pads, np.int64),
                        e.b.const(np.float32(op.floats[0]))], mode="constant")


def gather(e, op):
    _out(e, op, "Gather", [e.value(i) for i in op.inputs], axis=int(op.ints[0]))


def cast(e, op):
    name = _DTYPE_NAMES.get(int(op.ints[0]))
    if name not in ELEM:
        raise ValueError(f"{op.name}: cast to dtype code {op.ints[0]} is not supported")
    _out(e, op, "Cast", [e.value(op.inputs[0])], to=ELEM[name])


def nearest(e, op):
    b = e.b
    x, values = (e.value(i) for i in op.inputs)
    d = b.one("Abs", [b.one("Sub", [b.one("Unsqueeze", [x, b.const([-1], np.int64)], op.name),
                                    values], op.name)], op.name)
    # ArgMin returns the first minimum: the lower index on ties, as §2.6 asks.
    idx = b.one("ArgMin", [d], op.name, axis=-1, keepdims=0, select_last_index=0)
    _out(e, op, "Gather", [values, idx], axis=0)


def reduce_mean(e, op):
    axis, keep = (int(v) for v in op.ints)
    _out(e, op, "ReduceMean", [e.value(op.inputs[0]), e.b.const([axis], np.int64)],
         keepdims=keep)


OPS = {
    **{k: unary for k in _UNARY}, **{k: binary for k in _BINARY},
    "qlinear": qlinear, "linear": linear, "conv1d": conv1d, "qconv1d": qconv1d,
    "conv_transpose1d": conv_transpose1d, "qconv_transpose1d": qconv_transpose1d,
    "lstm": lstm.lstm, "qlstm": lstm.qlstm, "layer_norm": layer_norm, "softmax": softmax,
    "where": where, "equal": equal, "leaky_relu": leaky_relu, "silu": silu, "glu": glu,
    "clamp": clamp, "reshape": reshape, "transpose": transpose, "concat": concat,
    "slice": slice_, "pad": pad, "gather": gather, "cast": cast, "nearest": nearest,
    "reduce_mean": reduce_mean,
}
assert set(OPS) == set(ir.OPS), sorted(set(ir.OPS) ^ set(OPS))
