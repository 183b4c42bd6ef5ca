"""edgekit::* custom op -> quantized IR op (qlinear, qconv1d, qconv_transpose1d, qlstm, nearest).

The packed weight is written exactly as `kernels.pack(**matrix.packed_args()).to_bytes()`
would write it, through the numpy writer (`edgekit.kernels.packing`) so that lowering does not
need the C++ extension. The activation grid is the layer's calibrated one (`act_mode` 0,
`act_scale`, `act_zero_point`); an uncalibrated layer gets the dynamic grid (`act_mode` 1).
"""

from __future__ import annotations

from edgekit import EdgekitError
from edgekit.compress.layers import H_SCALE, H_ZERO_POINT, QuantLayer, QuantMatrix
from edgekit.export.lower import capture
from edgekit.export.lower.aten import out_shape
from edgekit.export.lower.graph import Builder, Const
from edgekit.kernels import packing


def _grid(layer: QuantLayer) -> tuple[list[int], list[float]]:
    if layer.act_quant:
        return [0, int(layer.act_zero_point)], [float(layer.act_scale)]
    return [1, 0], [1.0]


def _packed(b: Builder, name: str, qm: QuantMatrix, layer_path: str, type_: str,
            layer: QuantLayer):
    pw = packing.pack_arrays(**qm.packed_args())
    data = packing.serialize(pw)
    n, k = qm.codes.shape
    if not any(r["name"] == name for r in b.layers):
        row = {"name": name, "type": type_, "shape": [int(n), int(k)], "bits": qm.bits,
               "quantizer": qm.quantizer, "sparsity": round(qm.sparsity(), 4),
               "nm": None if qm.nm is None else f"{qm.nm[0]}:{qm.nm[1]}",
               "group_size": qm.group_size, "bytes": pw.nbytes, "serialized_bytes": len(data),
               "act": ("static" if layer.act_quant else "dynamic")}
        if layer.act_quant:
            row.update(act_scale=float(layer.act_scale), act_zero_point=int(layer.act_zero_point))
        # "bytes" is the §1.8 stored size (what `edgekit inspect` shows for the same tensor),
        # not the serialized buffer, whose header and 64-byte alignment are per tensor
        b.layers.append(row)
    return b.packed(name, data, int(n), int(k))


def _bias(b: Builder, path: str, t, name: str = "bias"):
    return None if t is None else b.const(t.detach().float(), f"{path}.{name}")


def _check_quant(layer, path):
    if not isinstance(layer, QuantLayer):
        raise EdgekitError(f"internal: {path} is not a quantized layer")


def _qlinear(b, node, x, layer_id):
    path, layer = capture.layer(layer_id)
    _check_quant(layer, path)
    b.path = path
    w = _packed(b, f"{path}.weight", layer.q, path, "linear", layer)
    ints, floats = _grid(layer)
    return b.op1("qlinear", [x, w, _bias(b, path, layer.base.bias)], out_shape(node), ints=ints,
                 floats=floats)


def _qconv1d(b, node, x, layer_id):
    path, layer = capture.layer(layer_id)
    _check_quant(layer, path)
    b.path = path
    conv = layer.base
    pl, pr = capture.conv_pads(conv)
    w = _packed(b, f"{path}.weight", layer.q, path, "conv1d", layer)
    (mode, zp), floats = _grid(layer)
    ints = [conv.stride[0], pl, pr, conv.dilation[0], conv.groups, conv.kernel_size[0], mode, zp]
    return b.op1("qconv1d", [x, w, _bias(b, path, conv.bias)], out_shape(node), ints=ints,
                 floats=floats)


def _qconv_t(b, node, x, layer_id):
    path, layer = capture.layer(layer_id)
    _check_quant(layer, path)
    b.path = path
    c = layer.base
    w = _packed(b, f"{path}.weight", layer.q, path, "conv_transpose1d", layer)
    (mode, zp), floats = _grid(layer)
    ints = [c.stride[0], c.padding[0], c.output_padding[0], c.dilation[0], c.groups,
            c.kernel_size[0], mode, zp]
    return b.op1("qconv_transpose1d", [x, w, _bias(b, path, c.bias)], out_shape(node),
                 ints=ints, floats=floats)


def _lstm(b, node, x, h0, c0, layer_id, index):
    path, mod = capture.layer(layer_id)
    b.path = path
    base = mod.base if isinstance(mod, QuantLayer) else mod
    sfx = f"l{index}"
    biases = [_bias(b, path, getattr(base, f"bias_{g}_{sfx}", None), f"bias_{g}_{sfx}")
              for g in ("ih", "hh")]
    outs = [(out_shape(node, i), "f32") for i in range(3)]
    if not isinstance(mod, QuantLayer):
        ws = [b.const(getattr(base, f"weight_{g}_{sfx}").detach().float(),
                      f"{path}.weight_{g}_{sfx}") for g in ("ih", "hh")]
        for g in ("ih", "hh"):
            b.report_float(f"{path}.weight_{g}_{sfx}", "lstm",
                           tuple(getattr(base, f"weight_{g}_{sfx}").shape))
        return tuple(b.op("lstm", [x, h0, c0, *ws, *biases], outs))
    ws = [_packed(b, f"{path}.weight_{g}_{sfx}", mod.matrices[f"weight_{g}_{sfx}"], path,
                  "lstm", mod) for g in ("ih", "hh")]
    if index > 0 and mod.act_quant:
        ints, floats = [0, H_ZERO_POINT], [H_SCALE]   # upper layers read the lower layer's h
    else:
        ints, floats = _grid(mod)
    return tuple(b.op("qlstm", [x, h0, c0, *ws, *biases], outs,
                      ints=ints + [H_ZERO_POINT], floats=floats + [H_SCALE]))


def _nearest(b, node, x, values):
    if not isinstance(values, Const):
        raise EdgekitError(f"unsupported run-time quantizer bins at {b.path}")
    return b.op1("nearest", [x, values.value.detach().float().reshape(-1)], out_shape(node))


HANDLERS = {
    "edgekit.qlinear.default": _qlinear,
    "edgekit.qconv1d.default": _qconv1d,
    "edgekit.qconv_transpose1d.default": _qconv_t,
    "edgekit.lstm.default": _lstm,
    "edgekit.nearest.default": _nearest,
}
