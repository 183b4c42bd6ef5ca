"""aten op -> IR op handlers (docs/format.md §2.6), one small function per aten op family.

A handler gets the builder, the fx node (for its output shape/dtype in `node.meta["val"]`)
and the node's arguments with fx nodes replaced by `Val`/`Const`. Anything not in `HANDLERS`
fails with "unsupported op aten.xxx at <module path>".
"""

from __future__ import annotations

import math

import torch

from edgekit import EdgekitError
from edgekit.export.lower.graph import Builder, Const, Val, ir_dtype

HANDLERS: dict = {}


def _reg(*names):
    def deco(fn):
        for n in names:
            HANDLERS[n] = fn
        return fn
    return deco


def out_shape(node, i: int | None = None) -> tuple:
    v = node.meta["val"]
    v = v[i] if i is not None else v
    return tuple(int(d) for d in v.shape)


def out_dtype(b: Builder, node) -> str:
    return ir_dtype(node.meta["val"].dtype, b.path)


def _axis(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _shape_of(x) -> tuple:
    return tuple(x.value.shape) if isinstance(x, Const) else x.shape


def reshape(b: Builder, x, shape) -> Val:
    shape = tuple(int(s) for s in shape)
    if isinstance(x, Val) and x.shape == shape:
        return x
    return b.op1("reshape", [x], shape, b.val(x).dtype, ints=shape)


# -- elementwise ---------------------------------------------------------------------------
_UNARY = {"relu": "relu", "silu": "silu", "sigmoid": "sigmoid", "tanh": "tanh", "exp": "exp",
          "log": "log", "sqrt": "sqrt", "neg": "neg", "abs": "abs"}
for _aten, _ir in _UNARY.items():
    def _unary(b, node, x, *_, _ir=_ir):
        return b.op1(_ir, [x], out_shape(node))
    HANDLERS[f"aten.{_aten}.default"] = _unary


@_reg("aten.leaky_relu.default")
def _leaky(b, node, x, slope=0.01):
    return b.op1("leaky_relu", [x], out_shape(node), floats=[slope])


@_reg("aten.clamp.default", "aten.hardtanh.default")
def _clamp(b, node, x, lo=None, hi=None):
    lo = -math.inf if lo is None else lo
    hi = math.inf if hi is None else hi
    return b.op1("clamp", [x], out_shape(node), floats=[lo, hi])


def _scalar(b: Builder, v, like) -> Val:
    dt = {"f32": torch.float32, "i64": torch.int64, "i32": torch.int32, "u8": torch.uint8}
    return b.const(torch.tensor(v, dtype=dt.get(b.val(like).dtype, torch.float32)))


def _binary(ir_op):
    def h(b, node, x, y, alpha=1):
        if not isinstance(y, (Val, Const)):
            y = _scalar(b, y, x)
        if not isinstance(x, (Val, Const)):
            x = _scalar(b, x, y)
        if alpha != 1:
            y = b.op1("mul", [y, _scalar(b, alpha, y)], _shape_of(y))
        return b.op1(ir_op, [x, y], out_shape(node), out_dtype(b, node))
    return h


for _aten, _ir in {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}.items():
    HANDLERS[f"aten.{_aten}.Tensor"] = _binary(_ir)
    HANDLERS[f"aten.{_aten}.Scalar"] = _binary(_ir)


@_reg("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(b, node, x, y, alpha=1):
    return _binary("sub")(b, node, y if isinstance(y, (Val, Const)) else _scalar(b, y, x), x,
                          alpha)


@_reg("aten.eq.Scalar", "aten.eq.Tensor")
def _eq(b, node, x, y):
    if not isinstance(y, (Val, Const)):
        y = _scalar(b, y, x)
    return b.op1("equal", [x, y], out_shape(node), "u8")


@_reg("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(b, node, x, mask, value):
    if not isinstance(value, (Val, Const)):
        value = _scalar(b, value, x)
    return b.op1("where", [mask, value, x], out_shape(node), out_dtype(b, node))


@_reg("aten.where.self")
def _where(b, node, cond, x, y):
    return b.op1("where", [cond, x, y], out_shape(node), out_dtype(b, node))


# -- shape ---------------------------------------------------------------------------------
@_reg("aten.reshape.default", "aten.view.default", "aten._unsafe_view.default",
      "aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default",
      "aten.flatten.using_ints", "aten.unflatten.int")
def _reshape(b, node, x, *_):
    return reshape(b, x, out_shape(node))


@_reg("aten.clone.default", "aten.contiguous.default", "aten.alias.default",
      "aten.detach.default", "aten.dropout.default", "aten.lift_fresh_copy.default")
def _identity(b, node, x, *_, **__):
    return x


@_reg("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten.type_as.default")
def _to(b, node, x, *_, **__):
    want = out_dtype(b, node)
    if b.val(x).dtype == want:
        return x
    codes = {"f32": 1, "i32": 2, "u8": 4, "i64": 5}
    if want not in codes:
        raise EdgekitError(f"unsupported op cast to {want} at {b.path}")
    return b.op1("cast", [x], out_shape(node), want, ints=[codes[want]])


@_reg("aten.transpose.int")
def _transpose(b, node, x, d0, d1):
    rank = len(_shape_of(x))
    perm = list(range(rank))
    d0, d1 = _axis(d0, rank), _axis(d1, rank)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return transpose(b, x, perm, out_shape(node))


@_reg("aten.permute.default")
def _permute(b, node, x, dims):
    rank = len(_shape_of(x))
    return transpose(b, x, [_axis(d, rank) for d in dims], out_shape(node))


@_reg("aten.t.default")
def _t(b, node, x):
    return transpose(b, x, [1, 0], out_shape(node))


def transpose(b: Builder, x, perm, shape) -> Val:
    if list(perm) == sorted(perm):
        return x
    # moving only size-1 axes does not reorder data: a reshape is enough (and free)
    src = _shape_of(x)
    if [p for p in perm if src[p] != 1] == sorted(p for p in perm if src[p] != 1):
        return reshape(b, x, shape)
    return b.op1("transpose", [x], shape, b.val(x).dtype, ints=perm)


@_reg("aten.cat.default")
def _cat(b, node, xs, dim=0):
    rank = len(out_shape(node))
    xs = [x for x in xs if 0 not in _shape_of(x)]   # torch allows empty pieces
    return b.op1("concat", xs, out_shape(node), out_dtype(b, node), ints=[_axis(dim, rank)])


@_reg("aten.stack.default")
def _stack(b, node, xs, dim=0):
    shape = out_shape(node)
    d = _axis(dim, len(shape))
    parts = [reshape(b, x, shape[:d] + (1,) + shape[d + 1:]) for x in xs]
    if len(parts) == 1:
        return parts[0]
    return b.op1("concat", parts, shape, out_dtype(b, node), ints=[d])


def slice_(b: Builder, x, axis: int, start: int, end: int, step: int = 1):
    shape = list(_shape_of(x))
    n = shape[axis]
    start, end = max(0, min(start, n)), max(0, min(end, n))
    if start == 0 and end == n and step == 1:
        return x
    shape[axis] = len(range(start, end, step))
    if shape[axis] == 0:   # an empty piece (e.g. "all frames but the last" of one frame):
        return Const(torch.zeros(shape))   # §2.2 has no empty tensors; concat drops it
    return b.op1("slice", [x], tuple(shape), b.val(x).dtype, ints=[axis, start, end, step])


@_reg("aten.slice.Tensor")
def _slice(b, node, x, dim=0, start=None, end=None, step=1):
    shape = _shape_of(x)
    d = _axis(dim, len(shape))
    n = shape[d]
    start = 0 if start is None else (start + n if start < 0 else start)
    end = n if end is None else (end + n if end < 0 else end)
    return slice_(b, x, d, start, end, step)


@_reg("aten.select.int")
def _select(b, node, x, dim, index):
    shape = _shape_of(x)
    d = _axis(dim, len(shape))
    i = index + shape[d] if index < 0 else index
    return reshape(b, slice_(b, x, d, i, i + 1), out_shape(node))


@_reg("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default")
def _split(b, node, x, sizes, dim=0):
    shape = _shape_of(x)
    d = _axis(dim, len(shape))
    outs, start = [], 0
    for i in range(len(node.meta["val"])):
        size = out_shape(node, i)[d]
        outs.append(slice_(b, x, d, start, start + size))
        start += size
    return outs


@_reg("aten.unfold.default")
def _unfold(b, node, x, dim, size, step):
    """Frames of `size` every `step` along `dim`, new last axis: slices + concat."""
    shape = _shape_of(x)
    d = _axis(dim, len(shape))
    out = out_shape(node)
    rank = len(shape)
    perm = [i for i in range(rank) if i != d] + [d]
    frames = []
    for i in range(out[d]):
        piece = slice_(b, x, d, i * step, i * step + size)
        pshape = tuple(_shape_of(piece)[p] for p in perm)
        piece = transpose(b, piece, perm, pshape)
        frames.append(reshape(b, piece, out[:d] + (1,) + out[d + 1:]))
    if len(frames) == 1:
        return frames[0]
    return b.op1("concat", frames, out, out_dtype(b, node), ints=[d])


@_reg("aten.expand.default")
def _expand(b, node, x, *_):
    shape = out_shape(node)
    if _shape_of(x) == shape:
        return x
    return b.op1("add", [x, b.const(torch.zeros(shape))], shape)


@_reg("aten.pad.default", "aten.constant_pad_nd.default")
def _pad(b, node, x, pad, mode="constant", value=None):
    if mode != "constant":
        raise EdgekitError(f"unsupported op aten.pad (mode {mode}) at {b.path}")
    value = 0.0 if value is None else float(value)
    shape = list(_shape_of(x))
    for i in range(len(pad) // 2):
        axis = len(shape) - 1 - i
        before, after = int(pad[2 * i]), int(pad[2 * i + 1])
        if before < 0 or after < 0:
            raise EdgekitError(f"unsupported negative padding at {b.path}")
        if before or after:
            shape[axis] += before + after
            x = b.op1("pad", [x], tuple(shape), ints=[axis, before, after], floats=[value])
    return x


# -- layers --------------------------------------------------------------------------------
@_reg("aten.layer_norm.default")
def _layer_norm(b, node, x, normalized_shape, weight=None, bias=None, eps=1e-5, *_):
    if len(normalized_shape) != 1:
        raise EdgekitError(f"unsupported op aten.layer_norm over {len(normalized_shape)} "
                           f"dims at {b.path}")
    return b.op1("layer_norm", [x, weight, bias], out_shape(node), floats=[eps])


@_reg("aten.softmax.int", "aten._softmax.default")
def _softmax(b, node, x, dim, *_):
    return b.op1("softmax", [x], out_shape(node), ints=[_axis(dim, len(_shape_of(x)))])


@_reg("aten.log_softmax.int", "aten._log_softmax.default")
def _log_softmax(b, node, x, dim, *_):
    return b.op1("log", [_softmax(b, node, x, dim)], out_shape(node))


@_reg("aten.glu.default")
def _glu(b, node, x, dim=-1):
    return b.op1("glu", [x], out_shape(node), ints=[_axis(dim, len(_shape_of(x)))])


@_reg("aten.matmul.default", "aten.bmm.default", "aten.mm.default")
def _matmul(b, node, x, y):
    if len(_shape_of(x)) < 2 or len(_shape_of(y)) < 2:
        raise EdgekitError(f"unsupported op aten.matmul on 1-D operands at {b.path}")
    return b.op1("matmul", [x, y], out_shape(node))


@_reg("aten.mean.dim")
def _mean(b, node, x, dims, keepdim=False, **_):
    rank = len(_shape_of(x))
    dims = sorted((_axis(d, rank) for d in ([dims] if isinstance(dims, int) else dims)),
                  reverse=True)
    shape = list(_shape_of(x))
    for d in dims:
        shape[d] = 1
        x = b.op1("reduce_mean", [x], tuple(shape), ints=[d, 1])
    return reshape(b, x, out_shape(node))


@_reg("aten.linear.default")
def _linear(b, node, x, w, bias=None):
    b.report_float(b.path, "linear", tuple(_shape_of(w)))
    return b.op1("linear", [x, w, bias], out_shape(node))


@_reg("aten.conv1d.default", "aten.conv1d.padding")
def _conv1d(b, node, x, w, bias=None, stride=(1,), padding=(0,), dilation=(1,), groups=1):
    k = _shape_of(w)[2]
    dil = dilation[0] if isinstance(dilation, (list, tuple)) else dilation
    if isinstance(padding, str):
        if padding != "same":
            pl = pr = 0
        else:
            total = dil * (k - 1)
            pl, pr = total // 2, total - total // 2
    else:
        pl = pr = padding[0] if isinstance(padding, (list, tuple)) else padding
    st = stride[0] if isinstance(stride, (list, tuple)) else stride
    b.report_float(b.path, "conv1d", tuple(_shape_of(w)))
    return b.op1("conv1d", [x, w, bias], out_shape(node), ints=[st, pl, pr, dil, groups])


@_reg("aten.conv_transpose1d.default", "aten.conv_transpose1d.input")
def _conv_t(b, node, x, w, bias=None, stride=(1,), padding=(0,), output_padding=(0,), groups=1,
            dilation=(1,)):
    first = (lambda v: v[0] if isinstance(v, (list, tuple)) else v)
    b.report_float(b.path, "conv_transpose1d", tuple(_shape_of(w)))
    return b.op1("conv_transpose1d", [x, w, bias], out_shape(node),
                 ints=[first(stride), first(padding), first(output_padding), first(dilation),
                       groups])


@_reg("aten.embedding.default")
def _embedding(b, node, table, idx, *_):
    return b.op1("gather", [table, idx], out_shape(node), ints=[0])


@_reg("aten._native_batch_norm_legit_no_training.default", "aten.batch_norm.default")
def _batch_norm(b, node, x, weight, bias, mean, var, *rest):
    """Eval BatchNorm = per-channel y = a·x + shift. Folded into the per-row scales and bias
    of the quantized conv that feeds it when nothing else reads that conv's output (exact up
    to float rounding, codes untouched); otherwise a `mul` + `add` with constants."""
    native = node.target.__name__.startswith("_native")
    eps = rest[-1] if native else rest[2]
    mean, var = mean.value.detach().float(), var.value.detach().float()
    g = torch.ones_like(mean) if weight is None else weight.value.detach().float()
    beta = torch.zeros_like(mean) if bias is None else bias.value.detach().float()
    a = g / torch.sqrt(var + eps)
    shift = beta - mean * a
    y = _fold_into_conv(b, node, x, a, shift)
    if y is None:
        bshape = (1, -1) + (1,) * (len(_shape_of(x)) - 2)
        y = b.op1("mul", [x, b.const(a.reshape(bshape))], _shape_of(x))
        y = b.op1("add", [y, b.const(shift.reshape(bshape))], _shape_of(x))
    if native:
        return (y, Const(torch.zeros(0)), Const(torch.zeros(0)))
    return y


def _fold_into_conv(b: Builder, node, x, a: torch.Tensor, shift: torch.Tensor):
    import dataclasses

    from edgekit.kernels import packing
    src = node.args[0]
    if not isinstance(x, Val) or len(src.users) != 1:
        return None
    prod = next((op for op in b.ops if x.name in op.outputs), None)
    if prod is None or prod.type not in ("qconv1d", "qconv_transpose1d"):
        return None
    wname, bname = prod.inputs[1], prod.inputs[2]
    if sum(wname in op.inputs for op in b.ops) != 1:
        return None   # a weight shared by several ops cannot take one op's BatchNorm
    w = b.tensors[wname]
    sec = packing.deserialize(bytes(w.data))
    an = a.numpy().astype("float32")
    w.data = packing.serialize(dataclasses.replace(
        sec, scales=(sec.scales * an[:, None]).astype("float32")))
    old = torch.zeros_like(a) if bname is None else torch.from_numpy(b.tensors[bname].data)
    new_bias = (old * a + shift).float()
    if bname is not None and sum(bname in op.inputs for op in b.ops) == 1:
        b.tensors[bname].data = new_bias.numpy()
    else:
        prod.inputs[2] = b.const(new_bias, f"{prod.name}.bias_bn").name
    for row in b.layers:
        if row["name"] == wname:
            row["bn_folded"] = True
    return x


@_reg("aten.scaled_dot_product_attention.default")
def _sdpa(b, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    """softmax(q·kᵀ·scale + mask)·v as matmul, mul, add/where, softmax, matmul (what
    nn.MultiheadAttention with need_weights=False and F.scaled_dot_product_attention call)."""
    if dropout_p:
        raise EdgekitError(f"unsupported attention dropout {dropout_p} at {b.path} "
                           f"(export the model in eval mode)")
    qs, ks, vs = _shape_of(q), _shape_of(k), _shape_of(v)
    if enable_gqa or qs[:-2] != ks[:-2] or ks[:-1] != vs[:-1]:
        raise EdgekitError(f"unsupported attention shapes q{qs} k{ks} v{vs} at {b.path}")
    lq, s_len, e = qs[-2], ks[-2], qs[-1]
    perm = list(range(len(ks) - 2)) + [len(ks) - 1, len(ks) - 2]
    kt = transpose(b, k, perm, ks[:-2] + (e, s_len))
    scores_shape = qs[:-1] + (s_len,)
    s = b.op1("matmul", [q, kt], scores_shape)
    scale = 1.0 / math.sqrt(e) if scale is None else float(scale)
    s = b.op1("mul", [s, b.const(torch.tensor(scale))], scores_shape)
    if is_causal:
        if attn_mask is not None:
            raise EdgekitError(f"attention with both a mask and is_causal at {b.path}")
        # torch aligns the causal triangle to the top-left corner (query i sees keys <= i)
        attn_mask = Const(torch.ones(lq, s_len, dtype=torch.bool).tril())
    if attn_mask is not None:
        if _mask_dtype(b, attn_mask) == "u8":   # boolean: True = may attend
            neg = b.const(torch.tensor(-math.inf))
            s = b.op1("where", [attn_mask, s, neg], scores_shape)
        else:
            s = b.op1("add", [s, attn_mask], scores_shape)
    p = b.op1("softmax", [s], scores_shape, ints=[len(scores_shape) - 1])
    return b.op1("matmul", [p, v], out_shape(node))


def _mask_dtype(b: Builder, mask) -> str:
    if isinstance(mask, Const):
        return "u8" if mask.value.dtype == torch.bool else "f32"
    return b.val(mask).dtype
