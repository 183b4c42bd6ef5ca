"""Roofline estimate of one graph's step time on a profiled device, from the lowered model.

Every op costs max(compute, memory): compute = MACs / (per-core MACs/cycle · f · cores used),
at the int8 rate for the q-ops and the f32 rate for float ops (elementwise ops count one op
per output element); memory = the constant bytes the op reads (packed weights, biases) /
bandwidth, where the bandwidth is the L2's when all of the model's constants fit in L2 (they
stay resident between streaming steps) and DRAM's otherwise. Activations are ignored (they
are small at batch 1 and live in L1/L2). This is a lower bound a tuned kernel approaches,
not a measurement: every output carries kind "estimated".
"""

from __future__ import annotations

import math

from edgekit.export.ir import OPS, Model

_MATMUL_LIKE = {"qlinear", "linear"}
_CONV = {"qconv1d", "conv1d"}
_CONVT = {"qconv_transpose1d", "conv_transpose1d"}
_LSTM = {"qlstm", "lstm"}
# Shared with the accelerator simulator (edgekit/sim/cost.py): one MAC count, one set of
# ops that only move data, so the roofline and the simulator never disagree on either.
MAC_OPS = frozenset(_MATMUL_LIKE | _CONV | _CONVT | _LSTM | {"matmul"})
SHAPE_ONLY = frozenset({"reshape", "transpose", "concat", "slice", "pad", "gather", "copy",
                        "cast"})


def _numel(shape) -> int:
    return int(math.prod(shape)) if shape else 1


def op_macs(model: Model, op) -> int:
    """Multiply-accumulates of one call of `op` (0 for ops outside MAC_OPS)."""
    t = model.tensors
    if op.type not in MAC_OPS:
        return 0
    x, w, out = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    if op.type in _MATMUL_LIKE:
        n, k = w.shape
        return _numel(x.shape[:-1]) * n * k
    if op.type in _CONV:
        return _numel(w.shape) * out.shape[-1]
    if op.type in _CONVT:
        return _numel(w.shape) * x.shape[-1]
    if op.type in _LSTM:
        return x.shape[1] * (_numel(t[op.inputs[3]].shape) + _numel(t[op.inputs[4]].shape))
    return _numel(out.shape) * x.shape[-1]  # matmul


def op_cost(model: Model, op) -> tuple[int, int, int]:
    """(MACs, elementwise ops, constant bytes read) of one op of `model`."""
    t = model.tensors
    ins = [t[n] if n is not None else None for n in op.inputs]
    const_bytes = sum(x.nbytes for x in ins if x is not None and x.kind == "const")
    elem = 0
    if op.type in _LSTM:
        elem = ins[0].shape[1] * 10 * ins[1].shape[-1]  # gate nonlinearities, c/h updates
    elif op.type not in MAC_OPS and op.type not in SHAPE_ONLY:
        elem = _numel(t[op.outputs[0]].shape)
    return op_macs(model, op), elem, const_bytes


def graph_name(model: Model, graph: str | None) -> str:
    """`graph`, else META's streaming graph, else the only graph."""
    if graph is not None:
        if graph not in model.graphs:
            raise ValueError(f"no graph {graph!r}; graphs: {', '.join(model.graphs)}")
        return graph
    g = (model.meta.get("streaming") or {}).get("graph")
    if g in model.graphs:
        return g
    if len(model.graphs) == 1:
        return next(iter(model.graphs))
    raise ValueError(f"several graphs ({', '.join(model.graphs)}); pick one with --graph")


def estimate(model: Model, profile: dict, threads: int = 1, graph: str | None = None) -> dict:
    """The `estimate` block of a bench result for `graph` on `profile` (see module doc)."""
    name = graph_name(model, graph)
    cpu, mem = profile["cpu"], profile["memory"]
    cores = max(1, min(int(threads), int(cpu["cores"])))
    fmin, fmax = (float(f) * 1e9 for f in cpu["freq_ghz"])
    total_const = sum(x.nbytes for x in model.tensors.values() if x.kind == "const")
    in_l2 = total_const <= cpu["l2_kib"] * 1024
    bw = (mem["l2_bandwidth_gbs"] if in_l2 else mem["dram_bandwidth_gbs"]) * 1e9
    rows, total = [], {"fmax": 0.0, "fmin": 0.0}
    macs_sum = bytes_sum = 0
    for op in model.graphs[name].ops:
        macs, elem, nbytes = op_cost(model, op)
        rate = cpu["int8_macs_per_cycle"] if OPS[op.type].quantized else cpu["f32_flops_per_cycle"]
        times = {}
        for key, f in (("fmax", fmax), ("fmin", fmin)):
            compute = macs / (rate * f * cores) + elem / (cpu["f32_flops_per_cycle"] * f * cores)
            times[key] = max(compute, nbytes / bw) * 1e6
            total[key] += times[key]
        macs_sum += macs
        bytes_sum += nbytes
        if macs or elem or nbytes:
            bound = "memory" if nbytes / bw * 1e6 >= times["fmax"] - 1e-12 and nbytes else \
                "compute"
            rows.append({"op": op.type, "name": op.name, "macs": macs, "stored_bytes": nbytes,
                         "us": times["fmax"], "bound": bound})
    return {
        "method": "roofline",
        "graph": name,
        "total_us": total["fmax"],
        "total_us_at_min_freq": total["fmin"],
        "macs": int(macs_sum),
        "stored_bytes": int(bytes_sum),
        "per_layer": rows,
        "assumptions": {
            "cores_used": cores, "freq_ghz": cpu["freq_ghz"],
            "int8_macs_per_cycle": cpu["int8_macs_per_cycle"],
            "f32_flops_per_cycle": cpu["f32_flops_per_cycle"],
            "bandwidth_gbs": bw / 1e9,
            "weights_resident_in_l2": in_l2,
            "activations": "ignored",
        },
    }
