"""LSTM as FULLY_CONNECTED + elementwise ops inside one WHILE loop (no unrolling over time).

The input projection W_ih·x for all T steps is one integer FULLY_CONNECTED before the loop.
The loop body (a second subgraph) does one step: GATHER row t of that projection, the
recurrent integer FULLY_CONNECTED W_hh·q(h) on the IR's static h grid, the gates
(i, f, g, o, torch order) in float, and DYNAMIC_UPDATE_SLICE of h into the output sequence.
h0/c0 are graph inputs and h_T/c_T graph outputs, so streaming state stays explicit.

Why not UNIDIRECTIONAL_SEQUENCE_LSTM: LiteRT keeps its state in variable tensors that are
neither inputs nor outputs (c_T cannot be read), and its integer form needs 16-bit cell
state quantization the IR does not have.

In the calibration twin the body also collects every step's recurrent projection (and its
per-group partial sums), so their int8 grids cover all steps.
"""

from __future__ import annotations

import numpy as np

from edgekit.export.tflite import builder, fc


def _fb():
    return builder._fb()


def _float_fc(em, name, x, m, w, b, n_out):
    out = em.new(name + "/y", (m, n_out))
    o = _fb().FullyConnectedOptionsT()
    o.keepNumDims = True
    em.op("FULLY_CONNECTED", [x, em.f32(name + "/w", em.m.tensors[w].data),
                              -1 if b is None else em.f32(name + "/b", em.m.tensors[b].data)],
          [out], o)
    return out


def _proj(em, name, x, shape_in, w, b, n_out, q_in, key, quantized):
    """One projection of float tensor `x` → float32 (M, n_out): float FC for `lstm`; for
    `qlstm` the integer FC of `fc.emit` between QUANTIZE and DEQUANTIZE (in the twin: the
    input fake-quantized unless `q_in` is None, i.e. a dynamic grid)."""
    m = shape_in[0]
    if not quantized:
        return _float_fc(em, name, x, m, w, b, n_out)
    p = em.weight_plan(w, "fc")
    if em.calibrating:
        xin = x if q_in is None else em.fake_quant(x, shape_in, q_in, name + "/x")
        return fc.emit(em, name, xin, shape_in, p, b, None, key, (m, n_out), w)
    xq = em.quantize(x, shape_in, q_in, name + "/xq")
    yq = fc.emit(em, name, xq, shape_in, p, b, q_in, key, (m, n_out), w)
    return em.dequantize(yq, (m, n_out), name + "/deq")


def emit(em, op, quantized: bool) -> None:
    """Emit IR `qlstm` (quantized=True) or `lstm` into the emitter's current subgraph."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = op.inputs
    _, T, I = em.shape(x)
    H = em.shape(h0)[1]
    n, key = op.name, em.key
    if em.shape(w_ih)[0] != 4 * H or em.shape(w_hh) != (4 * H, H):
        raise ValueError(f"{n}: LSTM weights do not match hidden size {H}")
    q_x = q_h = None
    if quantized:
        act_mode, x_zp, h_zp = op.ints
        x_scale, h_scale = op.floats
        q_h = (h_scale, h_zp)
        if em.calibrating:
            em.probe(key + "/in", em.tin(x))
            # A dynamic grid (act_mode 1) has no static twin: keep x float there.
            q_x = (x_scale, x_zp) if act_mode == 0 else None
        else:
            q_x = (x_scale, x_zp) if act_mode == 0 else em.grid(key + "/in", True)
    twin = quantized and em.calibrating
    main = em.sg
    x2 = em.reshape(em.tin(x), (T, I), n + "/x2")
    xw = _proj(em, n + "/ih", x2, (T, I), w_ih, b_ih, 4 * H, q_x, key + "/xw", quantized)

    # ---- body: one time step
    body_sg = em.mb.subgraph(f"{n}/body")
    em.sg, em.body_probes = body_sg, []
    carried = [("t", (1,), "i32"), ("h", (1, H), "f32"), ("c", (1, H), "f32"),
               ("Y", (T, H), "f32"), ("XW", (T, 4 * H), "f32")]
    bin_ = [em.new(f"{n}/body/{nm}", s, dt) for nm, s, dt in carried]
    t, h, c, Y, XW = bin_
    fb = _fb()
    xw_t = em.new(n + "/xw_t", (1, 4 * H))
    em.op("GATHER", [XW, t], [xw_t], fb.GatherOptionsT())
    r = _proj(em, n + "/hh", h, (1, H), w_hh, b_hh, 4 * H, q_h, key + "/hw", quantized)
    g = em.new(n + "/gates", (1, 4 * H))
    em.op("ADD", [xw_t, r], [g], fb.AddOptionsT())
    parts = [em.new(f"{n}/gate_{k}", (1, H)) for k in "ifgo"]
    so = fb.SplitOptionsT()
    so.numSplits = 4
    em.op("SPLIT", [em.i32(n + "/axis1", 1), g], parts, so)
    si, sf, tg, sgo = (em.new(f"{n}/act_{k}", (1, H)) for k in "ifgo")
    em.op("LOGISTIC", [parts[0]], [si])
    em.op("LOGISTIC", [parts[1]], [sf])
    em.op("TANH", [parts[2]], [tg])
    em.op("LOGISTIC", [parts[3]], [sgo])
    fc_, ig = em.new(n + "/f_c", (1, H)), em.new(n + "/i_g", (1, H))
    em.op("MUL", [sf, c], [fc_], fb.MulOptionsT())
    em.op("MUL", [si, tg], [ig], fb.MulOptionsT())
    c_new, tc, h_new = (em.new(f"{n}/{k}", (1, H)) for k in ("c_new", "tanh_c", "h_new"))
    em.op("ADD", [fc_, ig], [c_new], fb.AddOptionsT())
    em.op("TANH", [c_new], [tc])
    em.op("MUL", [sgo, tc], [h_new], fb.MulOptionsT())
    # A full-integer file keeps the gates and the cell state at 16 bits (fullint.py), as
    # LiteRT's own integer LSTM does: an int8 cell state drifts over the steps.
    em.wide.update({(body_sg.index, i): "lstm"
                    for i in (g, *parts, si, sf, tg, sgo, fc_, ig, c, c_new, tc)})
    at = em.new(n + "/at", (2,), "i32")
    em.op("CONCATENATION", [t, em.i32(n + "/zero", [0])], [at], fb.ConcatenationOptionsT())
    Y_new = em.new(n + "/Y_new", (T, H))
    em.op("DYNAMIC_UPDATE_SLICE", [Y, h_new, at], [Y_new])
    t_new = em.new(n + "/t_next", (1,), "i32")
    em.op("ADD", [t, em.i32(n + "/one", [1])], [t_new], fb.AddOptionsT())
    bout = [t_new, h_new, c_new, Y_new, XW]
    # The twin collects each probed body tensor over all steps (loop-carried (T, ...)
    # buffers), so the recurrent FC's grids see every step, not just the last.
    extras = list(em.body_probes) if twin else []
    em.body_probes = []
    for j, (pkey, idx) in enumerate(extras):
        shp = em.sg.shapes[idx]
        buf = em.new(f"{n}/body/probe{j}", (T,) + shp[1:])
        nxt = em.new(f"{n}/probe{j}_next", (T,) + shp[1:])
        em.op("DYNAMIC_UPDATE_SLICE", [buf, idx, at], [nxt])
        bin_.append(buf)
        bout.append(nxt)
    body_sg.set_io(bin_, bout)
    # ---- cond: t < T
    cond_sg = em.mb.subgraph(f"{n}/cond")
    em.sg = cond_sg
    cin = [em.new(f"{n}/cond/in{j}", em.mb_shape(body_sg, i), em.mb_dtype(body_sg, i))
           for j, i in enumerate(bin_)]
    less = em.new(n + "/cond/less", (1,), "bool")
    em.op("LESS", [cin[0], em.i32(n + "/cond/T", [T])], [less])
    cond_sg.set_io(cin, [less])
    # ---- the loop in the main graph
    em.sg = main
    init = [em.i32(n + "/t0", [0]), em.tin(h0), em.tin(c0),
            em.f32(n + "/Y0", np.zeros((T, H), np.float32)), xw]
    y_seq, h_t, c_t = op.outputs
    outs = [em.new(n + "/t_end", (1,), "i32"), em.tout(h_t), em.tout(c_t),
            em.new(n + "/Y", (T, H)), em.new(n + "/XW_end", (T, 4 * H))]
    for j, (pkey, idx) in enumerate(extras):
        shp = (T,) + body_sg.shapes[idx][1:]
        init.append(em.f32(f"{n}/probe{j}_0", np.zeros(shp, np.float32)))
        outs.append(em.new(f"{n}/probe{j}", shp))
        em.probe(pkey, outs[-1])
    wo = fb.WhileOptionsT()
    wo.condSubgraphIndex, wo.bodySubgraphIndex = cond_sg.index, body_sg.index
    em.op("WHILE", init, outs, wo)
    em.reshape(outs[3], (1, T, H), n + "/y", em.tout(y_seq))
    if quantized and not em.calibrating:
        for w, what in ((w_ih, "W_ih"), (w_hh, "W_hh")):
            em.record_layer(op, em.weight_plan(w, "fc"), f"FULLY_CONNECTED ({what})", w)
