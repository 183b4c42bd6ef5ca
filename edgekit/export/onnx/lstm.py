"""LSTM ops -> ONNX without unrolling over time.

`lstm` (float) maps onto the ONNX LSTM op: torch's gate rows i,f,g,o are reordered to ONNX's
i,o,f,c and the two biases concatenated. `qlstm` cannot: its recurrent input h is rounded onto
an int8 grid every step (§2.6), which the ONNX LSTM has no place for. It becomes a Scan whose
body is one cell step (QDQ(h) · W_hh + the precomputed input projection, then the gates); the
input projection of all T steps is one MatMul outside the loop. State stays explicit: h0/c0
are Scan's initial state and h_T/c_T its final state.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from edgekit.export.onnx.builder import Builder

_ONNX_GATES = [0, 3, 1, 2]   # torch blocks (i, f, g, o) in ONNX order (i, o, f, c)


def _reorder(a: np.ndarray, H: int) -> np.ndarray:
    return np.concatenate([a[g * H:(g + 1) * H] for g in _ONNX_GATES], axis=0)


def _shapes(e, op):
    x, h0 = op.inputs[0], op.inputs[1]
    _, T, _ = e.model.tensors[x].shape
    H = e.model.tensors[h0].shape[-1]
    return T, H


def lstm(e, op):
    """Float LSTM as one ONNX LSTM node (layout 0: time-major, batch 1)."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = op.inputs
    T, H = _shapes(e, op)
    b = e.b
    W = b.const(_reorder(e.array(w_ih), H)[None], hint=w_ih)
    R = b.const(_reorder(e.array(w_hh), H)[None], hint=w_hh)
    zeros = np.zeros(4 * H, np.float32)
    bias = np.concatenate([_reorder(e.array(b_ih) if b_ih else zeros, H),
                           _reorder(e.array(b_hh) if b_hh else zeros, H)])
    B = b.const(bias[None], hint=f"{op.name}.bias")
    ax0 = b.const([0], np.int64)
    xt = b.one("Transpose", [e.value(x)], op.name, perm=[1, 0, 2])
    h = b.one("Unsqueeze", [e.value(h0), ax0], op.name)
    c = b.one("Unsqueeze", [e.value(c0), ax0], op.name)
    Y, Yh, Yc = b.node("LSTM", [xt, W, R, B, "", h, c], 3, op.name, hidden_size=H)
    y, hT, cT = op.outputs
    b.node("Reshape", [Y, b.const([1, T, H], np.int64)], [y], op.name)
    b.node("Reshape", [Yh, b.const([1, H], np.int64)], [hT], op.name)
    b.node("Reshape", [Yc, b.const([1, H], np.int64)], [cT], op.name)


def qlstm(e, op):
    """Quantized LSTM: input projection for all steps, then a Scan over time (§2.6 row 7)."""
    from edgekit.export.onnx.ops import act_quant

    x, h0, c0, w_ih, w_hh, b_ih, b_hh = op.inputs
    act_mode, x_zp, h_zp = op.ints
    x_scale, h_scale = op.floats
    T, H = _shapes(e, op)
    b = e.b
    xd = act_quant(e, e.value(x), act_mode, x_zp, x_scale, op.name)
    gx = e.qmatmul(xd, w_ih, op)                                          # (1, T, 4H)
    biases = [e.value(v) for v in (b_ih, b_hh) if v is not None]         # outer scope too

    cell = Builder(prefix=f"{op.name}/cell/", opset=b.opset)
    # Body names carry the op's prefix: a subgraph must not shadow a name of the outer graph.
    h_in, c_in, gx_t, h_out, c_out, y_t = (cell.prefix + n for n in
                                           ("h_in", "c_in", "gx_t", "h_out", "c_out", "y_t"))
    e.b = cell   # nodes for h go into the body; weights stay in the outer graph (e.outer)
    try:
        hq = act_quant(e, h_in, 0, h_zp, h_scale, f"{op.name}.h")
        gh = e.qmatmul(hq, w_hh, op)
    finally:
        e.b = b
    g = cell.one("Add", [gx_t, gh])
    for bias in biases:   # summed in §2.6's order: W_ih·x + W_hh·h + b_ih + b_hh
        g = cell.one("Add", [g, bias])
    i, f, gg, o = cell.node("Split", [g], 4, axis=1, num_outputs=4)

    def sig(v):
        return cell.one("Sigmoid", [v])

    c_new = cell.one("Add", [cell.one("Mul", [sig(f), c_in]),
                             cell.one("Mul", [sig(i), cell.one("Tanh", [gg])])])
    cell.node("Identity", [c_new], [c_out])
    cell.node("Mul", [sig(o), cell.one("Tanh", [c_new])], [h_out])
    cell.node("Identity", [h_out], [y_t])

    def vi(n, d):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, d])

    body = helper.make_graph(cell.nodes, f"{op.name}.cell",
                             [vi(h_in, H), vi(c_in, H), vi(gx_t, 4 * H)],
                             [vi(h_out, H), vi(c_out, H), vi(y_t, H)],
                             list(cell.inits.values()))
    y, hT, cT = op.outputs
    b.node("Scan", [e.value(h0), e.value(c0), gx], [hT, cT, y], op.name, body=body,
           num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1])
