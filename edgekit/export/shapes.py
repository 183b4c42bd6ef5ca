"""Output dtype and shape of every op of docs/format.md §2.6, from its inputs and attributes.

One function, `infer`, used by the EKM writer (to validate a model before writing it), by the
EKM reader (a file whose stored output shape differs is rejected) and by anyone who builds an
`ir.Model` by hand. The C++ ops' `infer` (csrc/runtime/op.h) must accept and reject exactly the
same signatures, so the rules here are strict and spelled out: axes are already normalised to
[0, rank) by the exporter, attributes that are enums or sizes are range-checked, and no
output may exceed rank 6 or 2^31 elements.

No torch and no C++ module: this must stay importable everywhere.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from edgekit.export.ir import MAX_RANK, OPS

Sig = tuple[str, tuple[int, ...]]  # (dtype name, shape)
MAX_NUMEL = 1 << 31
_NUMERIC = ("f32", "i32", "i8", "u8", "i64")
_CAST_CODES = {1: "f32", 2: "i32", 3: "i8", 4: "u8", 5: "i64"}


class _Bad(ValueError):
    pass


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise _Bad(msg)


def _sig(inputs, i: int, what: str, dtypes=("f32",), rank: int | None = None,
         min_rank: int = 0) -> tuple[int, ...]:
    dt, shape = inputs[i]
    _need(dt in dtypes, f"input {i} ({what}) must be {'/'.join(dtypes)}, got {dt}")
    if rank is not None:
        _need(len(shape) == rank, f"input {i} ({what}) must have rank {rank}, got shape {list(shape)}")
    _need(len(shape) >= min_rank, f"input {i} ({what}) must have rank >= {min_rank}, got shape {list(shape)}")
    return tuple(shape)


def _vector(inputs, i: int, what: str, n: int) -> None:
    """An optional float vector of length n (bias, gamma, beta)."""
    if inputs[i] is not None:
        shape = _sig(inputs, i, what, rank=1)
        _need(shape[0] == n, f"input {i} ({what}) must have shape [{n}], got {list(shape)}")


def _act(ints, at: int, floats, fat: int) -> None:
    """act_mode / x_zp / x_scale of a quantized op (§2.6 static or dynamic grid)."""
    mode, zp, scale = ints[at], ints[at + 1], floats[fat]
    _need(mode in (0, 1), f"act_mode must be 0 (static) or 1 (dynamic), got {mode}")
    _need(-128 <= zp <= 127, f"x_zp must be in [-128, 127], got {zp}")
    if mode == 0:
        _need(math.isfinite(scale) and scale > 0, f"x_scale must be finite and > 0, got {scale}")


def _axis(ints, i: int, rank: int, name: str = "axis") -> int:
    a = ints[i]
    _need(0 <= a < rank, f"{name} must be in [0, {rank}) for rank {rank}, got {a}")
    return a


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = []
    for d in range(rank):
        dims = {s[len(s) - rank + d] for s in shapes if len(s) - rank + d >= 0}
        dims.discard(1)
        _need(len(dims) <= 1, f"shapes {[list(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _qlinear(inp, ints, floats):
    x = _sig(inp, 0, "x", min_rank=1)
    w = _sig(inp, 1, "W", ("packed",), rank=2)
    _need(x[-1] == w[1], f"x's last dim {x[-1]} != W's K {w[1]}")
    _vector(inp, 2, "bias", w[0])
    _act(ints, 0, floats, 0)
    return [("f32", x[:-1] + (w[0],))]


def _linear(inp, ints, floats):
    x = _sig(inp, 0, "x", min_rank=1)
    w = _sig(inp, 1, "W", rank=2)
    _need(x[-1] == w[1], f"x's last dim {x[-1]} != W's K {w[1]}")
    _vector(inp, 2, "bias", w[0])
    return [("f32", x[:-1] + (w[0],))]


def _conv_geometry(ints, cin: int, cout: int):
    stride, pl, pr, dil, groups = ints[:5]
    _need(stride >= 1 and dil >= 1, f"stride and dilation must be >= 1, got {stride}, {dil}")
    _need(pl >= 0 and pr >= 0, f"padding must be >= 0, got {pl}, {pr}")
    _need(groups >= 1 and cin % groups == 0 and cout % groups == 0,
          f"groups {groups} must divide Cin {cin} and Cout {cout}")
    return stride, pl, pr, dil, groups


def _conv_out(x, cout, ints, k):
    stride, pl, pr, dil, _ = ints[:5]
    span = x[2] + pl + pr - dil * (k - 1) - 1
    _need(span >= 0, f"input length {x[2]} is shorter than the kernel's span {dil * (k - 1) + 1}")
    return [("f32", (1, cout, span // stride + 1))]


def _qconv1d(inp, ints, floats):
    x = _sig(inp, 0, "x", rank=3)
    w = _sig(inp, 1, "W", ("packed",), rank=2)
    _need(x[0] == 1, f"batch must be 1, got {x[0]}")
    cout, k = w[0], ints[5]
    _, _, _, _, g = _conv_geometry(ints, x[1], cout)
    _need(k >= 1 and w[1] == x[1] // g * k, f"W's K {w[1]} != Cin/groups*k = {x[1] // g}*{k}")
    _vector(inp, 2, "bias", cout)
    _act(ints, 6, floats, 0)
    return _conv_out(x, cout, ints, k)


def _conv1d(inp, ints, floats):
    x = _sig(inp, 0, "x", rank=3)
    w = _sig(inp, 1, "W", rank=3)
    _need(x[0] == 1, f"batch must be 1, got {x[0]}")
    _, _, _, _, g = _conv_geometry(ints, x[1], w[0])
    _need(w[1] == x[1] // g, f"W's dim 1 {w[1]} != Cin/groups {x[1] // g}")
    _vector(inp, 2, "bias", w[0])
    return _conv_out(x, w[0], ints, w[2])


def _tconv_out(x, cout, ints, k):
    stride, padding, out_pad, dil, groups = ints[:5]
    _need(stride >= 1 and dil >= 1, f"stride and dilation must be >= 1, got {stride}, {dil}")
    _need(padding >= 0, f"padding must be >= 0, got {padding}")
    _need(0 <= out_pad < max(stride, dil),
          f"output_padding must be in [0, max(stride, dilation)), got {out_pad}")
    t = (x[2] - 1) * stride - 2 * padding + dil * (k - 1) + out_pad + 1
    _need(t >= 1, f"output length {t} < 1")
    return [("f32", (1, cout, t))]


def _qconv_transpose1d(inp, ints, floats):
    x = _sig(inp, 0, "x", rank=3)
    w = _sig(inp, 1, "W", ("packed",), rank=2)
    _need(x[0] == 1, f"batch must be 1, got {x[0]}")
    cout, groups, k = w[0], ints[4], ints[5]
    _need(groups >= 1 and x[1] % groups == 0 and cout % groups == 0,
          f"groups {groups} must divide Cin {x[1]} and Cout {cout}")
    _need(k >= 1 and w[1] == x[1] // groups * k, f"W's K {w[1]} != Cin/groups*k = {x[1] // groups}*{k}")
    _vector(inp, 2, "bias", cout)
    _act(ints, 6, floats, 0)
    return _tconv_out(x, cout, ints, k)


def _conv_transpose1d(inp, ints, floats):
    x = _sig(inp, 0, "x", rank=3)
    w = _sig(inp, 1, "W", rank=3)
    _need(x[0] == 1, f"batch must be 1, got {x[0]}")
    groups = ints[4]
    _need(w[0] == x[1], f"W's dim 0 {w[0]} != Cin {x[1]}")
    _need(groups >= 1 and x[1] % groups == 0, f"groups {groups} must divide Cin {x[1]}")
    _vector(inp, 2, "bias", w[1] * groups)
    return _tconv_out(x, w[1] * groups, ints, w[2])


def _lstm_common(inp, wdtype):
    x = _sig(inp, 0, "x", rank=3)
    h0 = _sig(inp, 1, "h0", rank=2)
    c0 = _sig(inp, 2, "c0", rank=2)
    _need(x[0] == 1 and h0[0] == 1 and c0 == h0, f"need x (1,T,I), h0 = c0 (1,H); got "
          f"{list(x)}, {list(h0)}, {list(c0)}")
    hid = h0[1]
    wih = _sig(inp, 3, "W_ih", (wdtype,), rank=2)
    whh = _sig(inp, 4, "W_hh", (wdtype,), rank=2)
    _need(wih == (4 * hid, x[2]), f"W_ih must be [{4 * hid}, {x[2]}], got {list(wih)}")
    _need(whh == (4 * hid, hid), f"W_hh must be [{4 * hid}, {hid}], got {list(whh)}")
    _vector(inp, 5, "b_ih", 4 * hid)
    _vector(inp, 6, "b_hh", 4 * hid)
    return [("f32", (1, x[1], hid)), ("f32", h0), ("f32", h0)]


def _qlstm(inp, ints, floats):
    out = _lstm_common(inp, "packed")
    _act(ints, 0, floats, 0)
    _need(-128 <= ints[2] <= 127, f"h_zp must be in [-128, 127], got {ints[2]}")
    _need(math.isfinite(floats[1]) and floats[1] > 0, f"h_scale must be finite and > 0, got {floats[1]}")
    return out


def _layer_norm(inp, ints, floats):
    x = _sig(inp, 0, "x", min_rank=1)
    _vector(inp, 1, "gamma", x[-1])
    _vector(inp, 2, "beta", x[-1])
    _need(math.isfinite(floats[0]) and floats[0] > 0, f"eps must be finite and > 0, got {floats[0]}")
    return [("f32", x)]


def _softmax(inp, ints, floats):
    x = _sig(inp, 0, "x", min_rank=1)
    _axis(ints, 0, len(x))
    return [("f32", x)]


def _matmul(inp, ints, floats):
    a = _sig(inp, 0, "a", min_rank=2)
    b = _sig(inp, 1, "b", min_rank=2)
    _need(a[-1] == b[-2], f"a's last dim {a[-1]} != b's second-to-last {b[-2]}")
    return [("f32", _broadcast(a[:-2], b[:-2]) + (a[-2], b[-1]))]


def _binary(out_dtype: str | None):
    def infer(inp, ints, floats):
        (da, a), (db, b) = inp
        _need(da in _NUMERIC and da == db, f"inputs must share one numeric dtype, got {da}, {db}")
        return [(out_dtype or da, _broadcast(a, b))]
    return infer


def _where(inp, ints, floats):
    c = _sig(inp, 0, "cond", ("u8",))
    (da, a), (db, b) = inp[1], inp[2]
    _need(da in _NUMERIC and da == db, f"a and b must share one numeric dtype, got {da}, {db}")
    return [(da, _broadcast(c, a, b))]


def _unary(dtypes=("f32",)):
    def infer(inp, ints, floats):
        return [(inp[0][0], _sig(inp, 0, "x", dtypes))]
    return infer


def _leaky_relu(inp, ints, floats):
    _need(math.isfinite(floats[0]), f"slope must be finite, got {floats[0]}")
    return [("f32", _sig(inp, 0, "x"))]


def _glu(inp, ints, floats):
    x = _sig(inp, 0, "x", min_rank=1)
    a = _axis(ints, 0, len(x))
    _need(x[a] % 2 == 0, f"glu axis {a} has odd size {x[a]}")
    return [("f32", x[:a] + (x[a] // 2,) + x[a + 1:])]


def _clamp(inp, ints, floats):
    lo, hi = floats
    _need(not (math.isnan(lo) or math.isnan(hi)) and lo <= hi, f"clamp needs lo <= hi, got {lo}, {hi}")
    return [("f32", _sig(inp, 0, "x"))]


def _reshape(inp, ints, floats):
    dt, x = inp[0]
    _need(dt in _NUMERIC, f"input 0 (x) must be numeric, got {dt}")
    _need(len(ints) <= MAX_RANK and all(d >= 1 for d in ints),
          f"reshape target must be <= {MAX_RANK} dims >= 1, got {list(ints)}")
    _need(math.prod(ints) == math.prod(x), f"cannot reshape {list(x)} to {list(ints)}")
    return [(dt, tuple(ints))]


def _transpose(inp, ints, floats):
    dt, x = inp[0]
    _need(dt in _NUMERIC, f"input 0 (x) must be numeric, got {dt}")
    _need(sorted(ints) == list(range(len(x))), f"perm {list(ints)} is not a permutation of rank {len(x)}")
    return [(dt, tuple(x[p] for p in ints))]


def _concat(inp, ints, floats):
    dt, first = inp[0]
    _need(dt in _NUMERIC, f"input 0 must be numeric, got {dt}")
    a = _axis(ints, 0, len(first))
    total = 0
    for i, (d, s) in enumerate(inp):
        _need(d == dt and len(s) == len(first) and s[:a] == first[:a] and s[a + 1:] == first[a + 1:],
              f"input {i} ({d} {list(s)}) does not concatenate with {dt} {list(first)} on axis {a}")
        total += s[a]
    return [(dt, first[:a] + (total,) + first[a + 1:])]


def _slice(inp, ints, floats):
    dt, x = inp[0]
    _need(dt in _NUMERIC, f"input 0 (x) must be numeric, got {dt}")
    a = _axis(ints, 0, len(x))
    start, end, step = ints[1:]
    _need(0 <= start < end <= x[a] and step >= 1,
          f"slice needs 0 <= start < end <= {x[a]} and step >= 1, got {start}, {end}, {step}")
    return [(dt, x[:a] + (-(-(end - start) // step),) + x[a + 1:])]


def _pad(inp, ints, floats):
    dt, x = inp[0]
    _need(dt == "f32", f"input 0 (x) must be f32, got {dt}")
    a = _axis(ints, 0, len(x))
    before, after = ints[1:]
    _need(before >= 0 and after >= 0, f"pad amounts must be >= 0, got {before}, {after}")
    return [(dt, x[:a] + (x[a] + before + after,) + x[a + 1:])]


def _gather(inp, ints, floats):
    dt, table = inp[0]
    _need(dt in _NUMERIC, f"input 0 (table) must be numeric, got {dt}")
    idx = _sig(inp, 1, "idx", ("i32", "i64"))
    a = _axis(ints, 0, len(table))
    return [(dt, table[:a] + idx + table[a + 1:])]


def _cast(inp, ints, floats):
    dt, x = inp[0]
    _need(dt in _NUMERIC, f"input 0 (x) must be numeric, got {dt}")
    _need(ints[0] in _CAST_CODES, f"cast dtype must be one of {sorted(_CAST_CODES)}, got {ints[0]}")
    return [(_CAST_CODES[ints[0]], x)]


def _nearest(inp, ints, floats):
    x = _sig(inp, 0, "x")
    _sig(inp, 1, "values", rank=1)
    return [("f32", x)]


def _reduce_mean(inp, ints, floats):
    x = _sig(inp, 0, "x", min_rank=1)
    a = _axis(ints, 0, len(x))
    _need(ints[1] in (0, 1), f"keepdim must be 0 or 1, got {ints[1]}")
    return [("f32", x[:a] + ((1,) if ints[1] else ()) + x[a + 1:])]


_RULES: dict[str, Callable] = {
    "qlinear": _qlinear, "linear": _linear, "qconv1d": _qconv1d, "conv1d": _conv1d,
    "qconv_transpose1d": _qconv_transpose1d, "conv_transpose1d": _conv_transpose1d,
    "qlstm": _qlstm, "lstm": lambda inp, ints, floats: _lstm_common(inp, "f32"),
    "layer_norm": _layer_norm, "softmax": _softmax, "matmul": _matmul,
    "add": _binary(None), "sub": _binary(None), "mul": _binary(None), "div": _binary(None),
    "where": _where, "equal": _binary("u8"),
    "relu": _unary(), "leaky_relu": _leaky_relu, "silu": _unary(), "sigmoid": _unary(),
    "tanh": _unary(), "glu": _glu, "clamp": _clamp, "exp": _unary(), "log": _unary(),
    "sqrt": _unary(), "neg": _unary(("f32", "i32", "i64")), "abs": _unary(("f32", "i32", "i64")),
    "reshape": _reshape, "transpose": _transpose, "concat": _concat, "slice": _slice,
    "pad": _pad, "gather": _gather, "copy": _unary(_NUMERIC), "cast": _cast,
    "nearest": _nearest, "reduce_mean": _reduce_mean,
}
assert set(_RULES) == set(OPS), "every op of ir.OPS needs a shape rule"


def check_arity(op: str, n_in: int, n_out: int, n_ints: int, n_floats: int) -> None:
    """Raise ValueError unless the operand and attribute counts fit the op's row of §2.6."""
    spec = OPS.get(op)
    if spec is None:
        raise ValueError(f"unknown op type {op!r}")
    hi = spec.max_in if spec.max_in >= 0 else n_in
    if not spec.min_in <= n_in <= hi:
        want = spec.min_in if spec.min_in == spec.max_in else f">= {spec.min_in}"
        raise ValueError(f"{op} takes {want} inputs, got {n_in}")
    if n_out != spec.n_out:
        raise ValueError(f"{op} has {spec.n_out} outputs, got {n_out}")
    if spec.n_ints >= 0 and n_ints != spec.n_ints:
        raise ValueError(f"{op} takes {spec.n_ints} int attributes, got {n_ints}")
    if n_floats != spec.n_floats:
        raise ValueError(f"{op} takes {spec.n_floats} float attributes, got {n_floats}")


def infer(op: str, inputs: Sequence[Sig | None], ints: Sequence[int] = (),
          floats: Sequence[float] = ()) -> list[Sig]:
    """Output (dtype, shape) list of `op` for input (dtype, shape) pairs (None = absent
    optional operand) and its int/float attributes. ValueError (one line) if the op,
    its arity, an input's dtype or rank, an attribute or the resulting shape is invalid."""
    check_arity(op, len(inputs), OPS[op].n_out if op in OPS else 0, len(ints), len(floats))
    spec = OPS[op]
    for i, sig in enumerate(inputs):
        if sig is None and i not in spec.optional:
            raise ValueError(f"{op}: input {i} is required")
    ints = [int(v) for v in ints]
    floats = [float(v) for v in floats]
    try:
        outs = _RULES[op](list(inputs), ints, floats)
    except _Bad as exc:
        raise ValueError(f"{op}: {exc}") from None
    for dt, shape in outs:
        if len(shape) > MAX_RANK or any(d < 1 for d in shape) or math.prod(shape) > MAX_NUMEL:
            raise ValueError(f"{op}: output shape {list(shape)} is out of range "
                             f"(rank <= {MAX_RANK}, dims >= 1, <= 2^31 elements)")
    return [(dt, tuple(int(d) for d in shape)) for dt, shape in outs]
