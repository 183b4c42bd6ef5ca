"""LSTM as FULLY_CONNECTED + elementwise ops inside one WHILE loop (no unrolling over time).

The input projection W_ih·x for all T steps is one integer FULLY_CONNECTED before the loop.
The loop body (a second subgraph) does one step: GATHER row t of that projection, the
recurrent integer FULLY_CONNECTED W_hh·q(h) on the IR's static h grid, the gates
(i, f, g, o, torch order) in float, and DYNAMIC_UPDATE_SLICE of h into the output sequence.
h0/c0 are graph inputs and h_T/c_T graph outputs, so streaming state stays explicit.

Why not UNIDIRECTIONAL_SEQUENCE_LSTM: LiteRT keeps its state in variable tensors that are
neither inputs nor outputs (c_T cannot be read), and its integer form needs 16-bit cell
state quantization the IR does not have.

In the calibration twin the body also collects every step's recurrent projection, so its
output range (the recurrent FC's int8 grid) is known.
"""

from __future__ import annotations

import numpy as np

from edgekit.export.tflite import builder


def _fb():
    return builder._fb()


def _fc_opts():
    o = _fb().FullyConnectedOptionsT()
    o.keepNumDims = True
    return o


def _fc(em, name, x, shape_in, w, b, n_out, q_in, key, quantized):
    """One projection on tensor `x` of the current subgraph → float32 (M, n_out).

    quantized=False: float weights `w` (IR tensor name). Otherwise `w` is the packed IR weight;
    on the integer path (`q_in` the int8 grid) it is an integer FC; in the twin the input is
    fake-quantized and the weights are the stored integers dequantized, and the output is
    returned for probing."""
    m = shape_in[0]
    out = em.new(name + "/y", (m, n_out))
    if not quantized:
        em.op("FULLY_CONNECTED", [x, em.f32(name + "/w", em.m.tensors[w].data),
                                  -1 if b is None else em.f32(name + "/b", em.m.tensors[b].data)],
              [out], _fc_opts())
        return out
    p = em.weight_plan(w, "fc")
    if em.calibrating:
        xin = em.fake_quant(x, shape_in, q_in, name + "/x")
        bf = -1 if b is None else em.f32(name + "/b", em.m.tensors[b].data)
        em.op("FULLY_CONNECTED", [xin, em.f32(name + "/w", p.dequantized()), bf], [out], _fc_opts())
        return out
    xq = em.quantize(x, shape_in, q_in, name + "/xq")
    wq = em.int_weight(name + "/w", p, p.q, p.q.shape, 0)
    bq = em.int_bias(name + "/bias", b, q_in[0], p.scale)
    yq = em.new(name + "/yq", (m, n_out), "i8", em.grid(key))
    em.op("FULLY_CONNECTED", [xq, wq, bq], [yq], _fc_opts())
    if em.sg is em.main_sg:
        em.probe(key + "_q", yq)
    return em.dequantize(yq, (m, n_out), name + "/deq", out)


def emit(em, op, quantized: bool) -> None:
    """Emit IR `qlstm` (quantized=True) or `lstm` into the emitter's current subgraph."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = op.inputs
    _, T, I = em.shape(x)
    H = em.shape(h0)[1]
    n, key = op.name, em.key
    if em.shape(w_ih)[0] != 4 * H or em.shape(w_hh) != (4 * H, H):
        raise ValueError(f"{n}: LSTM weights do not match hidden size {H}")
    if quantized:
        act_mode, x_zp, h_zp = op.ints
        x_scale, h_scale = op.floats
        if em.calibrating:
            em.probe(key + "/in", em.tin(x))
        q_x = (x_scale, x_zp) if act_mode == 0 or em.calibrating else em.grid(key + "/in", True)
        q_h = (h_scale, h_zp)
    else:
        q_x = q_h = None
    twin = quantized and em.calibrating
    if twin and act_mode != 0:
        q_x = None  # dynamic grid: the twin keeps x in float (its range is probed above)
    main = em.sg
    em.main_sg = main
    x2 = em.reshape(em.tin(x), (T, I), n + "/x2")
    if twin and q_x is None:
        xw = em.new(n + "/xw", (T, 4 * H))
        p = em.weight_plan(w_ih, "fc")
        bf = -1 if b_ih is None else em.f32(n + "/b_ih", em.m.tensors[b_ih].data)
        em.op("FULLY_CONNECTED", [x2, em.f32(n + "/w_ih", p.dequantized()), bf], [xw], _fc_opts())
    else:
        xw = _fc(em, n + "/ih", x2, (T, I), w_ih, b_ih, 4 * H, q_x, key + "/xw", quantized)
    if twin:
        em.probe(key + "/xw", xw)

    body_sg, cond_sg = em.mb.subgraph(f"{n}/body"), em.mb.subgraph(f"{n}/cond")
    carried = [("t", (1,), "i32"), ("h", (1, H), "f32"), ("c", (1, H), "f32"),
               ("Y", (T, H), "f32"), ("XW", (T, 4 * H), "f32")]
    if twin:
        carried.append(("R", (T, 4 * H), "f32"))
    # ---- cond: t < T
    em.sg = cond_sg
    cin = [em.new(f"{n}/cond/{nm}", s, dt) for nm, s, dt in carried]
    less = em.new(n + "/cond/less", (1,), "bool")
    em.op("LESS", [cin[0], em.i32(n + "/cond/T", [T])], [less])
    cond_sg.set_io(cin, [less])
    # ---- body: one time step
    em.sg = body_sg
    bin_ = [em.new(f"{n}/body/{nm}", s, dt) for nm, s, dt in carried]
    t, h, c, Y, XW = bin_[:5]
    fb = _fb()
    xw_t = em.new(n + "/xw_t", (1, 4 * H))
    em.op("GATHER", [XW, t], [xw_t], fb.GatherOptionsT())
    r = _fc(em, n + "/hh", h, (1, H), w_hh, b_hh, 4 * H, q_h, key + "/hw", quantized)
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
    at = em.new(n + "/at", (2,), "i32")
    cat = fb.ConcatenationOptionsT()
    em.op("CONCATENATION", [t, em.i32(n + "/zero", [0])], [at], cat)
    Y_new = em.new(n + "/Y_new", (T, H))
    em.op("DYNAMIC_UPDATE_SLICE", [Y, h_new, at], [Y_new])
    t_new = em.new(n + "/t_next", (1,), "i32")
    em.op("ADD", [t, em.i32(n + "/one", [1])], [t_new], fb.AddOptionsT())
    bout = [t_new, h_new, c_new, Y_new, XW]
    if twin:
        R_new = em.new(n + "/R_new", (T, 4 * H))
        em.op("DYNAMIC_UPDATE_SLICE", [bin_[5], r, at], [R_new])
        bout.append(R_new)
    body_sg.set_io(bin_, bout)
    # ---- the loop in the main graph
    em.sg = main
    init = [em.i32(n + "/t0", [0]), em.tin(h0), em.tin(c0),
            em.f32(n + "/Y0", np.zeros((T, H), np.float32)), xw]
    if twin:
        init.append(em.f32(n + "/R0", np.zeros((T, 4 * H), np.float32)))
    y_seq, h_t, c_t = op.outputs
    outs = [em.new(n + "/t_end", (1,), "i32"), em.tout(h_t), em.tout(c_t),
            em.new(n + "/Y", (T, H)), em.new(n + "/XW_end", (T, 4 * H))]
    if twin:
        outs.append(em.new(n + "/R", (T, 4 * H)))
    wo = fb.WhileOptionsT()
    wo.condSubgraphIndex, wo.bodySubgraphIndex = cond_sg.index, body_sg.index
    em.op("WHILE", init, outs, wo)
    if twin:
        em.probe(key + "/hw", outs[5])
    em.reshape(outs[3], (1, T, H), n + "/y", em.tout(y_seq))
    if quantized and not em.calibrating:
        for w, what in ((w_ih, "W_ih"), (w_hh, "W_hh")):
            em.record_layer(op, em.weight_plan(w, "fc"), f"FULLY_CONNECTED ({what})", w)
