"""Conv1d and transposed Conv1d as TFLite 2-D convolutions over a (1, 1, T, C) NHWC view.

The IR is NCW; TFLite is NHWC, so the input is transposed to (1, T, C), padded (explicitly:
the IR's left and right padding can differ, TFLite's SAME cannot express that), viewed as
(1, 1, T, C) and convolved with a VALID CONV_2D / DEPTHWISE_CONV_2D; grouped convs that are not
depthwise are split into one CONV_2D per group. A transposed conv is the equivalent direct conv
(zero insertion for the stride, edge padding dil·(k−1)−padding, flipped taps), which keeps
dilation and output padding that TRANSPOSE_CONV lacks. On the integer path all these layout
moves act on the int8 tensor (padding with its zero point, i.e. real 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgekit.export.tflite import builder


def _filters(wmat: np.ndarray, cout: int, cig: int, k: int, flip: bool, depthwise: bool):
    """(filter array in TFLite layout, per-channel axis) from the IR's (Cout, Cin/g·k) matrix
    in torch's (ci, tap) order."""
    w3 = np.asarray(wmat).reshape(cout, cig, k)
    if flip:
        w3 = w3[:, :, ::-1]
    if depthwise:
        return np.ascontiguousarray(w3.reshape(cout, k).T.reshape(1, 1, k, cout)), 3
    return np.ascontiguousarray(w3.transpose(0, 2, 1).reshape(cout, 1, k, cig)), 0


def _options(depthwise: bool, stride: int, dil: int, mult: int):
    fb = builder._fb()
    o = fb.DepthwiseConv2DOptionsT() if depthwise else fb.Conv2DOptionsT()
    o.padding = fb.Padding.VALID
    o.strideW, o.strideH = int(stride), 1
    o.dilationWFactor, o.dilationHFactor = int(dil), 1
    if depthwise:
        o.depthMultiplier = int(mult)
    return o


def emit(em, op, x: int, wmat: np.ndarray, plan, bias: str | None, stride: int, pl: int, pr: int,
         dil: int, groups: int, k: int, upsample: int, flip: bool, qin, qout) -> int:
    """Emit the conv of IR op `op` on TFLite tensor `x` (1, Cin, T); returns the tensor of
    the IR output. `plan` (a WeightPlan) and `qin`/`qout` (int8 grids) select the integer
    path, where `wmat` holds the integer weights; otherwise `wmat` is float32."""
    n = op.name
    _, cin, T = em.sg.shapes[x]
    cout = wmat.shape[0]
    if groups < 1 or cin % groups or cout % groups:
        raise ValueError(f"{n}: groups {groups} does not divide channels {cin}->{cout}")
    cig = cin // groups
    cur, L = _prepare(em, n, x, cin, T, pl, pr, upsample)
    tout = (L - dil * (k - 1) - 1) // stride + 1
    if tout < 1:
        raise ValueError(f"{n}: input of {L} frames is shorter than the kernel's reach")
    cur = em.reshape(cur, (1, 1, L, cin), n + "/nhwc")
    quant = plan is not None
    depthwise = groups > 1 and cig == 1
    out_shape = (1, 1, tout, cout)
    y = em.new(n + "/conv", out_shape, "i8" if quant else "f32", qout if quant else None)
    if depthwise or groups == 1:
        _one(em, n, cur, y, wmat, plan, bias, slice(0, cout), cig, k, flip, depthwise,
             stride, dil, cout // cin, qin)
    else:
        cog = cout // groups
        parts = [em.like(cur, (1, 1, L, cig), f"{n}/in{g}") for g in range(groups)]
        opt = builder._fb().SplitOptionsT()
        opt.numSplits = groups
        em.op("SPLIT", [em.i32(n + "/axis", 3), cur], parts, opt)
        outs = []
        for g in range(groups):
            o = em.new(f"{n}/conv{g}", (1, 1, tout, cog), "i8" if quant else "f32",
                       qout if quant else None)
            rows = slice(g * cog, (g + 1) * cog)
            _one(em, f"{n}/g{g}", parts[g], o, wmat[rows], plan, bias, rows, cig, k, flip,
                 False, stride, dil, 1, qin)
            outs.append(o)
        c = builder._fb().ConcatenationOptionsT()
        c.axis = 3
        em.op("CONCATENATION", outs, [y], c)
    y3 = em.reshape(y, (1, tout, cout), n + "/ntc")
    out_ir = op.outputs[0]
    if quant:
        ncw = em.transpose(y3, [0, 2, 1], (1, cout, tout), n + "/ncw")
        em.probe(em.key + "/out_q", ncw)
        return em.dequantize(ncw, (1, cout, tout), n + "/y", em.tout(out_ir))
    return em.transpose(y3, [0, 2, 1], (1, cout, tout), n + "/ncw", em.tout(out_ir))


def _one(em, n, x, y, wmat, plan, bias, rows, cig, k, flip, depthwise, stride, dil, mult, qin):
    cout = wmat.shape[0]
    filt, axis = _filters(wmat, cout, cig, k, flip, depthwise)
    # LiteRT's DEPTHWISE_CONV_2D rejects an absent bias, so a missing one is written as zeros.
    if plan is not None:
        p = dataclasses.replace(plan, scale=plan.scale[rows])
        w = em.int_weight(n + "/w", p, filt, filt.shape, axis)
        b = em.int_bias(n + "/bias", bias, qin[0], p.scale, rows)
        if b < 0:
            b = em.sg.tensor(n + "/bias", (cout,), "i32", np.zeros(cout, np.int32),
                             scale=qin[0] * p.scale, axis=0)
    else:
        w = em.f32(n + "/w", filt)
        bv = (np.zeros(cout, np.float32) if bias is None
              else np.asarray(em.m.tensors[bias].data, np.float32).reshape(-1)[rows])
        b = em.f32(n + "/bias", bv)
    name = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    em.op(name, [x, w, b], [y], _options(depthwise, stride, dil, mult))


def _prepare(em, n, x, cin, T, pl, pr, upsample):
    """(1, Cin, T) → (1, L, Cin): transpose, zero insertion for a transposed conv's stride,
    crop (negative padding) and zero padding. Returns the tensor and L."""
    cur = em.transpose(x, [0, 2, 1], (1, T, cin), n + "/nwc")
    L = T
    if upsample > 1:
        s = upsample
        cur = em.reshape(cur, (1, T, 1, cin), n + "/up")
        cur = em.pad(cur, [[0, 0], [0, 0], [0, s - 1], [0, 0]], (1, T, s, cin), n + "/zeros")
        cur = em.reshape(cur, (1, T * s, cin), n + "/interleaved")
        L, pr = T * s, pr - (s - 1)  # the last s-1 inserted zeros are not in the IR's input
    b0, e0 = max(-pl, 0), L - max(-pr, 0)
    if b0 or e0 != L:
        if e0 <= b0:
            raise ValueError(f"{n}: padding leaves no input")
        cur = em.strided_slice(cur, [0, b0, 0], [1, e0, cin], (1, e0 - b0, cin), n + "/crop")
        L = e0 - b0
    if pl > 0 or pr > 0:
        a, z = max(pl, 0), max(pr, 0)
        cur = em.pad(cur, [[0, 0], [a, z], [0, 0]], (1, L + a + z, cin), n + "/pad")
        L += a + z
    return cur, L


def emit_im2col(em, op, x: int, plan, bias, stride, pl, pr, dil, k, upsample, flip, qin) -> int:
    """A conv (groups 1) as FULLY_CONNECTED over unfolded input (1, Tout, Cin·k) in the IR's
    (ci, tap) column order, so per-group weight scales stay exact (fc.py). The unfolding (a
    GATHER of frames and a TRANSPOSE) acts on the int8 tensor. Returns the IR output."""
    from edgekit.export.tflite import fc

    n = op.name
    _, cin, T = em.sg.shapes[x]
    cur, L = _prepare(em, n, x, cin, T, pl, pr, upsample)
    tout = (L - dil * (k - 1) - 1) // stride + 1
    if tout < 1:
        raise ValueError(f"{n}: input of {L} frames is shorter than the kernel's reach")
    # Unfold with a DEPTHWISE_CONV_2D whose filter is one-hot: output channel ci·k + t is
    # input channel ci at tap t, i.e. (1, 1, Tout, Cin·k) in the IR's (ci, tap) order. Weight 1,
    # scale 1 and the input's grid on the output make it exact on int8; its filter costs
    # k·Cin·k bytes, independent of T.
    eye = np.zeros((1, 1, k, cin * k), np.float32)
    for t in range(k):
        eye[0, 0, k - 1 - t if flip else t, np.arange(cin) * k + t] = 1.0
    x4 = em.reshape(cur, (1, 1, L, cin), n + "/nhwc")
    cols4 = em.like(cur, (1, 1, tout, cin * k), n + "/unfold")
    if em.sg.quant_of(cur) is None:
        w = em.f32(n + "/unfold_w", eye)
        b = em.f32(n + "/unfold_b", np.zeros(cin * k, np.float32))
    else:
        w = em.sg.tensor(n + "/unfold_w", eye.shape, "i8", eye, scale=1.0)
        b = em.sg.tensor(n + "/unfold_b", (cin * k,), "i32", np.zeros(cin * k, np.int32),
                         scale=em.sg.quant_of(cur)[0][0])
    em.op("DEPTHWISE_CONV_2D", [x4, w, b], [cols4], _options(True, stride, dil, k))
    cols = em.reshape(cols4, (1, tout, cin * k), n + "/cols")
    cout = plan.q.shape[0]
    y = fc.emit(em, n, cols, (1, tout, cin * k), plan, bias, qin, em.key, (1, tout, cout),
                op.inputs[1])
    out_ir = em.tout(op.outputs[0])
    if em.calibrating:
        return em.transpose(y, [0, 2, 1], (1, cout, tout), n + "/ncw", out_ir)
    yt = em.transpose(y, [0, 2, 1], (1, cout, tout), n + "/ncw")
    return em.dequantize(yt, (1, cout, tout), n + "/y", out_ir)
