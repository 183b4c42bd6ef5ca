"""`edgekit.export.shapes.infer` against an oracle: the shape numpy or torch computes for the
same op on zero tensors, for every op of ir.OPS; and its rejections of bad signatures."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.export import ir, shapes

torch = pytest.importorskip("torch")
F = torch.nn.functional

P = "packed"


def z(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def t(*shape):
    return torch.zeros(shape)


def _lstm(x, hid):
    y, _ = torch.nn.LSTM(x.shape[2], hid, batch_first=True)(torch.from_numpy(x))
    return y.detach().numpy(), z(1, hid), z(1, hid)


# (op, inputs as (dtype, shape) or None, ints, floats, oracle giving the output arrays)
CASES = [
    ("qlinear", [("f32", (1, 7, 48)), (P, (20, 48)), None], [0, 3], [0.1], lambda: [z(1, 7, 20)]),
    ("linear", [("f32", (2, 3, 48)), ("f32", (20, 48)), ("f32", (20,))], [], [],
     lambda: [F.linear(t(2, 3, 48), t(20, 48), t(20)).numpy()]),
    ("qconv1d", [("f32", (1, 12, 30)), (P, (8, 12 // 4 * 5)), None], [3, 2, 1, 2, 4, 5, 1, 0], [1.0],
     lambda: [F.conv1d(F.pad(t(1, 12, 30), (2, 1)), t(8, 3, 5), stride=3, dilation=2, groups=4).numpy()]),
    ("conv1d", [("f32", (1, 6, 17)), ("f32", (6, 1, 3)), ("f32", (6,))], [1, 2, 0, 1, 6], [],
     lambda: [F.conv1d(F.pad(t(1, 6, 17), (2, 0)), t(6, 1, 3), groups=6).numpy()]),
    ("qconv_transpose1d", [("f32", (1, 8, 10)), (P, (12, 8 // 2 * 4)), ("f32", (12,))],
     [2, 1, 1, 1, 2, 4, 1, 0], [1.0],
     lambda: [F.conv_transpose1d(t(1, 8, 10), t(8, 6, 4), stride=2, padding=1, output_padding=1,
                                 groups=2).numpy()]),
    ("conv_transpose1d", [("f32", (1, 4, 9)), ("f32", (4, 3, 5)), None], [3, 0, 2, 2, 1], [],
     lambda: [F.conv_transpose1d(t(1, 4, 9), t(4, 3, 5), stride=3, output_padding=2,
                                 dilation=2).numpy()]),
    ("qlstm", [("f32", (1, 5, 12)), ("f32", (1, 6)), ("f32", (1, 6)), (P, (24, 12)), (P, (24, 6)),
               None, ("f32", (24,))], [1, 0, 0], [1.0, 1 / 127], lambda: _lstm(z(1, 5, 12), 6)),
    ("lstm", [("f32", (1, 5, 12)), ("f32", (1, 6)), ("f32", (1, 6)), ("f32", (24, 12)),
              ("f32", (24, 6)), ("f32", (24,)), ("f32", (24,))], [], [], lambda: _lstm(z(1, 5, 12), 6)),
    ("layer_norm", [("f32", (1, 4, 10)), ("f32", (10,)), None], [], [1e-5],
     lambda: [F.layer_norm(t(1, 4, 10), (10,)).numpy()]),
    ("softmax", [("f32", (2, 3, 4))], [1], [], lambda: [z(2, 3, 4)]),
    ("matmul", [("f32", (4, 1, 3, 5)), ("f32", (2, 5, 7))], [], [],
     lambda: [np.matmul(z(4, 1, 3, 5), z(2, 5, 7))]),
    ("add", [("f32", (3, 1, 5)), ("f32", (4, 1))], [], [], lambda: [z(3, 1, 5) + z(4, 1)]),
    ("sub", [("i32", (2, 3)), ("i32", (3,))], [], [],
     lambda: [z(2, 3, dtype=np.int32) - z(3, dtype=np.int32)]),
    ("mul", [("f32", (1,)), ("f32", (2, 2))], [], [], lambda: [z(1) * z(2, 2)]),
    ("div", [("f32", (6,)), ("f32", ())], [], [], lambda: [z(6) / np.float32(1)]),
    ("where", [("u8", (1, 4)), ("f32", (3, 1)), ("f32", ())], [], [],
     lambda: [np.where(z(1, 4, dtype=np.uint8), z(3, 1), np.float32(0))]),
    ("equal", [("i64", (2, 1)), ("i64", (1, 3))], [], [], lambda: [z(2, 3, dtype=np.uint8)]),
    *[(op, [("f32", (2, 3))], [], [], lambda: [z(2, 3)])
      for op in ("relu", "silu", "sigmoid", "tanh", "exp", "log", "sqrt", "neg", "abs")],
    ("leaky_relu", [("f32", (5,))], [], [0.1], lambda: [z(5)]),
    ("glu", [("f32", (1, 8, 3))], [1], [], lambda: [F.glu(t(1, 8, 3), dim=1).numpy()]),
    ("clamp", [("f32", (4,))], [], [-1.0, 1.0], lambda: [z(4)]),
    ("reshape", [("f32", (2, 3, 4))], [6, 4], [], lambda: [z(2, 3, 4).reshape(6, 4)]),
    ("transpose", [("i8", (2, 3, 4))], [2, 0, 1], [],
     lambda: [z(2, 3, 4, dtype=np.int8).transpose(2, 0, 1)]),
    ("concat", [("f32", (1, 2, 5)), ("f32", (1, 3, 5)), ("f32", (1, 1, 5))], [1], [],
     lambda: [np.concatenate([z(1, 2, 5), z(1, 3, 5), z(1, 1, 5)], axis=1)]),
    ("slice", [("f32", (2, 10))], [1, 1, 8, 3], [], lambda: [z(2, 10)[:, 1:8:3]]),
    ("pad", [("f32", (2, 3))], [0, 1, 2], [0.0], lambda: [np.pad(z(2, 3), ((1, 2), (0, 0)))]),
    ("gather", [("f32", (10, 4)), ("i64", (2, 3))], [0], [],
     lambda: [np.take(z(10, 4), z(2, 3, dtype=np.int64), axis=0)]),
    ("gather", [("f32", (2, 10, 4)), ("i32", (3,))], [1], [],
     lambda: [np.take(z(2, 10, 4), z(3, dtype=np.int32), axis=1)]),
    ("copy", [("u8", (3,))], [], [], lambda: [z(3, dtype=np.uint8)]),
    ("cast", [("f32", (3,))], [5], [], lambda: [z(3, dtype=np.int64)]),
    ("nearest", [("f32", (2, 6)), ("f32", (9,))], [], [], lambda: [z(2, 6)]),
    ("reduce_mean", [("f32", (2, 3, 4))], [1, 1], [], lambda: [z(2, 3, 4).mean(axis=1, keepdims=True)]),
    ("reduce_mean", [("f32", (2, 3, 4))], [2, 0], [], lambda: [z(2, 3, 4).mean(axis=2)]),
]
_NP_NAMES = {np.dtype(v): k for k, v in ir.NP_DTYPES.items()}


def test_every_op_has_a_case():
    assert {c[0] for c in CASES} == set(ir.OPS)


@pytest.mark.parametrize("op,inputs,ints,floats,oracle", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_infer_matches_oracle(op, inputs, ints, floats, oracle):
    want = [(_NP_NAMES[np.asarray(a).dtype] if np.asarray(a).dtype != np.float64 else "f32",
             tuple(np.shape(a))) for a in oracle()]
    assert shapes.infer(op, inputs, ints, floats) == want


BAD = [
    ("qlinear", [("f32", (1, 47)), (P, (20, 48)), None], [0, 0], [0.1], "last dim 47 != W's K 48"),
    ("qlinear", [("f32", (1, 48)), ("f32", (20, 48)), None], [0, 0], [0.1], "W\\) must be packed"),
    ("qlinear", [("f32", (1, 48)), (P, (20, 48)), None], [2, 0], [0.1], "act_mode must be 0"),
    ("qlinear", [("f32", (1, 48)), (P, (20, 48)), None], [0, -129], [0.1], "x_zp must be in"),
    ("qlinear", [("f32", (1, 48)), (P, (20, 48)), None], [0, 0], [float("nan")], "x_scale must be"),
    ("qlinear", [None, (P, (20, 48)), None], [0, 0], [1.0], "input 0 is required"),
    ("qconv1d", [("f32", (1, 12, 3)), (P, (8, 15)), None], [1, 0, 0, 1, 4, 5, 1, 0], [1.0],
     "shorter than the kernel's span 5"),
    ("qconv1d", [("f32", (1, 12, 30)), (P, (8, 15)), None], [1, 0, 0, 1, 5, 5, 1, 0], [1.0],
     "groups 5 must divide"),
    ("conv1d", [("f32", (2, 6, 17)), ("f32", (6, 1, 3)), None], [1, 0, 0, 1, 6], [], "batch must be 1"),
    ("conv1d", [("f32", (1, 6, 17)), ("f32", (6, 1, 3)), None], [0, 0, 0, 1, 6], [], "stride and dilation"),
    ("conv_transpose1d", [("f32", (1, 4, 9)), ("f32", (4, 3, 5)), None], [2, 0, 2, 1, 1], [],
     "output_padding must be in"),
    ("lstm", [("f32", (1, 5, 12)), ("f32", (1, 6)), ("f32", (1, 7)), ("f32", (24, 12)),
              ("f32", (24, 6)), None, None], [], [], "h0 = c0"),
    ("qlstm", [("f32", (1, 5, 12)), ("f32", (1, 6)), ("f32", (1, 6)), (P, (24, 12)), (P, (24, 6)),
               None, None], [0, 0, 0], [1.0, 0.0], "h_scale must be"),
    ("layer_norm", [("f32", (1, 4, 10)), ("f32", (9,)), None], [], [1e-5], "gamma\\) must have shape"),
    ("softmax", [("f32", (2, 3))], [-1], [], "axis must be in \\[0, 2\\)"),
    ("matmul", [("f32", (3, 5)), ("f32", (4, 7))], [], [], "a's last dim 5"),
    ("add", [("f32", (3,)), ("f32", (4,))], [], [], "do not broadcast"),
    ("add", [("f32", (3,)), ("i32", (3,))], [], [], "share one numeric dtype"),
    ("where", [("f32", (3,)), ("f32", (3,)), ("f32", (3,))], [], [], "cond\\) must be u8"),
    ("relu", [("i32", (3,))], [], [], "must be f32"),
    ("relu", [(P, (3, 64))], [], [], "must be f32"),
    ("glu", [("f32", (1, 7))], [1], [], "odd size 7"),
    ("clamp", [("f32", (4,))], [], [1.0, -1.0], "lo <= hi"),
    ("reshape", [("f32", (2, 3))], [5], [], "cannot reshape"),
    ("reshape", [("f32", (2, 3))], [1] * 5 + [2, 3], [], "<= 6 dims"),
    ("transpose", [("f32", (2, 3))], [0, 0], [], "not a permutation"),
    ("concat", [("f32", (1, 2)), ("f32", (2, 2))], [1], [], "does not concatenate"),
    ("concat", [("f32", (1, 2)), ("i32", (1, 2))], [1], [], "does not concatenate"),
    ("slice", [("f32", (2, 10))], [1, 5, 5, 1], [], "0 <= start < end"),
    ("slice", [("f32", (2, 10))], [1, 0, 11, 1], [], "0 <= start < end"),
    ("pad", [("f32", (2, 3))], [0, -1, 0], [0.0], "pad amounts"),
    ("gather", [("f32", (10, 4)), ("f32", (2,))], [0], [], "idx\\) must be i32/i64"),
    ("gather", [("f32", (10, 4, 1, 1, 1, 1)), ("i32", (2, 2))], [0], [], "out of range"),
    ("cast", [("f32", (3,))], [6], [], "cast dtype must be"),
    ("reduce_mean", [("f32", (2, 3))], [0, 2], [], "keepdim must be"),
    ("silu", [("f32", (2,)), ("f32", (2,))], [], [], "takes 1 inputs, got 2"),
    ("concat", [], [0], [], "takes >= 1 inputs"),
    ("softmax", [("f32", (2,))], [], [], "takes 1 int attributes, got 0"),
    ("gelu", [("f32", (2,))], [], [], "unknown op type 'gelu'"),
    ("add", [("f32", (1 << 16, 1)), ("f32", (1, 1 << 16))], [], [], "2\\^31 elements"),
]


@pytest.mark.parametrize("op,inputs,ints,floats,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_infer_rejects(op, inputs, ints, floats, message):
    with pytest.raises(ValueError, match=message):
        shapes.infer(op, inputs, ints, floats)
