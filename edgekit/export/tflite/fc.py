"""Integer FULLY_CONNECTED for one packed IR weight, per-group scales included.

LiteRT's integer FULLY_CONNECTED has one weight scale per output channel. An IR weight with a
scale per group of K columns is written exactly as one FC per group (its slice of the input,
its columns, that group's scales as the per-channel scales) and the int8 partial outputs are
summed with ADD; each partial and running sum gets its own calibrated int8 grid. The IR
computes the same sum of per-group products, so only activation rounding differs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgekit.export.tflite import builder


def _opts():
    o = builder._fb().FullyConnectedOptionsT()
    o.keepNumDims = True
    return o


def emit(em, name: str, x: int, xs: tuple, p, bias: str | None, q_in, key: str, ys: tuple,
         weight_name: str | None = None) -> int:
    """The FC of plan `p` on `x` (shape `xs`) → output of shape `ys`.

    Integer path: `x` is int8 on grid `q_in`; returns the int8 output on the grid calibrated
    for `key + "/out"`. Calibration twin: `x` is float (already fake-quantized); returns the
    float output and probes every partial and sum for their ranges."""
    groups = p.groups()
    r = len(xs)
    parts = []
    for j, (k0, k1, q, sc) in enumerate(groups):
        single = len(groups) == 1
        xj = x if single else em.strided_slice(
            x, [0] * (r - 1) + [k0], list(xs[:-1]) + [k1], tuple(xs[:-1]) + (k1 - k0,),
            f"{name}/x{j}")
        bj = bias if j == 0 else None
        pkey = key + "/out" if single else f"{key}/part{j}"
        wname = (weight_name or name + "/w") + ("" if single else f"/g{j}")
        if em.calibrating:
            w = em.f32(wname, (q.astype(np.float64) * sc[:, None]).astype(np.float32))
            b = -1 if bj is None else em.f32(name + "/bias", em.m.tensors[bj].data)
            y = em.new(f"{name}/y{j}", ys)
            em.op("FULLY_CONNECTED", [xj, w, b], [y], _opts())
            em.probe(pkey, y)
        else:
            pj = dataclasses.replace(p, q=q, scale=sc, group_size=0)
            w = em.int_weight(wname, pj, q, q.shape, 0)
            b = em.int_bias(f"{name}/bias", bj, q_in[0], sc)
            y = em.new(f"{name}/yq{j}", ys, "i8", em.grid(pkey))
            em.op("FULLY_CONNECTED", [xj, w, b], [y], _opts())
        parts.append(y)
    acc = parts[0]
    for j in range(1, len(parts)):
        skey = key + "/out" if j == len(parts) - 1 else f"{key}/sum{j}"
        if em.calibrating:
            o = em.new(f"{name}/sum{j}", ys)
        else:
            o = em.new(f"{name}/sumq{j}", ys, "i8", em.grid(skey))
        em.op("ADD", [acc, parts[j]], [o], builder._fb().AddOptionsT())
        if em.calibrating:
            em.probe(skey, o)
        acc = o
    if not em.calibrating:
        em.probe(key + "/out_q", acc)
    return acc
