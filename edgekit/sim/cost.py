"""Per-layer cost model of an int8 accelerator (docs/sim.md §Cost model).

Each op of a graph gets the resources it needs for one call — MAC-array cycles (from the
array shape, so small or depthwise layers waste lanes), DRAM and SRAM bytes, weight-decoder
cycles (b-bit codebook lookup and zero-weight bitmap expansion) or activation-unit cycles —
and costs `max(compute, dram, sram, decoder) + overhead` cycles; the largest term is the
binding resource. Ops the profile does not accelerate run on the host CPU and pay their
activations' round trip through DRAM. Weights stay resident in SRAM across streaming steps
when the profile allows it and they fit (greedily, in execution order); otherwise every
step re-reads them from DRAM. Everything is integer arithmetic on shapes and stored bytes,
so the same model and profile always give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from edgekit.bench.estimate import MAC_OPS as _MAC_OPS
from edgekit.bench.estimate import SHAPE_ONLY as _SHAPE_ONLY
from edgekit.bench.estimate import op_cost, op_macs
from edgekit.export.ir import Model, Op
from edgekit.kernels.packing import FLAG_AFFINE, FLAG_SPARSE, parse_header
# Activation-unit passes per output element: transcendental ops take a LUT pass plus a
# multiply; normalisation and softmax read their row twice (statistics, then scale).
_ACT_PASSES = {"silu": 2, "glu": 2, "softmax": 3, "layer_norm": 3, "reduce_mean": 1}


@dataclass(frozen=True)
class PackedInfo:
    """What the decoder and the memory system see of one §1 packed weight."""

    bits: int
    n: int
    k: int
    sparse: bool
    affine: bool
    stored_bytes: int    # §1.8: codes + bitmaps + offsets + codebook + scales
    stored_codes: int    # codes actually stored (nonzero weights for sparse layouts)


def packed_info(buf) -> PackedInfo:
    """Parse the header of a §1 serialized weight (the EKM reader has already validated it)."""
    b = bytes(buf[:64])
    if len(b) < 64 or b[:4] != b"EKPW":
        raise ValueError("not a packed weight (EKPW header)")
    h = parse_header(b)
    bits, codes, bitmap = h["bits"], h["codes_bytes"], h["bitmap_bytes"]
    sparse = bool(h["flags"] & FLAG_SPARSE)
    stored = codes * 8 // bits if not sparse else _popcount_bitmaps(buf, codes, bitmap)
    total = codes + bitmap + h["offsets_bytes"] + h["codebook_bytes"] + h["scales_bytes"]
    return PackedInfo(bits, h["N"], h["K"], sparse, bool(h["flags"] & FLAG_AFFINE),
                      int(total), int(stored))


def _popcount_bitmaps(buf, codes_bytes: int, nbytes: int) -> int:
    import numpy as np

    # Sections start at multiples of 64 from the header start; bitmaps follow the codes.
    start = 64 + _ceil(codes_bytes, 64) * 64
    words = np.frombuffer(bytes(buf[start:start + nbytes]), dtype=np.uint8)
    return int(np.unpackbits(words).sum())


@dataclass
class LayerCost:
    """One op's cost for one call of its graph (cycles are accelerator cycles)."""

    graph: str
    op: str
    name: str
    unit: str                 # "mac", "act", "move" or "host"
    macs: int = 0
    weight_stored_bytes: int = 0
    weight_decoded_bytes: int = 0
    act_in_bytes: int = 0
    act_out_bytes: int = 0
    resident: bool = False
    dram_bytes: int = 0
    sram_bytes: int = 0
    compute_cycles: int = 0
    dram_cycles: int = 0
    sram_cycles: int = 0
    decoder_cycles: int = 0
    overhead_cycles: int = 0
    cycles: int = 0
    bound: str = "overhead"

    def as_dict(self) -> dict:
        return asdict(self)


def _numel(shape) -> int:
    return int(math.prod(shape)) if shape else 1


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _tiles(m: int, n: int, k: int, arr: dict) -> int:
    """Cycles of an (m x k) @ (k x n) product on a weight-stationary rows x cols array."""
    return m * _ceil(n, arr["rows"]) * _ceil(k, arr["cols"])


def _mac_cycles(model: Model, op: Op, arr: dict) -> tuple[int, list[tuple[str, int]]]:
    """(array cycles, [(packed/float weight name, times its weights are decoded)]); the MAC
    count itself is `estimate.op_macs`, shared with the roofline."""
    t = model.tensors
    x, w = t[op.inputs[0]], t[op.inputs[1]]
    if op.type in ("qlinear", "linear"):
        n, k = w.shape[0], _numel(w.shape[1:])
        return _tiles(_numel(x.shape[:-1]), n, k, arr), [(w.name, 1)]
    if op.type == "matmul":
        out = t[op.outputs[0]]
        m, n = out.shape[-2], out.shape[-1]
        return _numel(out.shape[:-2]) * _tiles(m, n, x.shape[-1], arr), []
    if op.type in ("qconv1d", "conv1d", "qconv_transpose1d", "conv_transpose1d"):
        cin, cout = x.shape[1], t[op.outputs[0]].shape[1]
        groups = op.ints[4]
        ksz = op.ints[5] if op.type.startswith("q") else w.shape[-1]
        # A transposed conv is a direct conv over the input frames scattering k taps each.
        rows = x.shape[-1] if "transpose" in op.type else t[op.outputs[0]].shape[-1]
        ng, kg = cout // groups, cin // groups * ksz
        if "transpose" in op.type:
            ng, kg = cout // groups * ksz, cin // groups
        if groups > 1 and groups == cin and groups == cout and arr["depthwise"] == \
                "channels_on_rows":
            cycles = rows * _ceil(cout, arr["rows"]) * _ceil(ksz, arr["cols"])
        else:
            cycles = groups * _tiles(rows, ng, kg, arr)
        return cycles, [(w.name, 1)]
    if op.type in ("qlstm", "lstm"):
        steps, inp = x.shape[1], x.shape[2]
        w_ih, w_hh = t[op.inputs[3]], t[op.inputs[4]]
        g4, hid = w_ih.shape[0], w_hh.shape[1]
        # x-projections batch over all steps; the recurrence is one row per step and
        # re-streams W_hh through the array (and the decoder) every step.
        cycles = _tiles(steps, g4, inp, arr) + steps * _tiles(1, g4, hid, arr)
        return cycles, [(w_ih.name, 1), (w_hh.name, steps)]
    raise AssertionError(op.type)


def _act_bytes(model: Model, names, per_elem: int) -> int:
    total = 0
    for nm in names:
        if nm is None:
            continue
        tt = model.tensors[nm]
        if tt.kind != "const":
            total += tt.numel * per_elem
    return total


def _weights(model: Model, op: Op) -> list[str]:
    return [n for n in op.inputs if n is not None and model.tensors[n].kind == "const"]


def layer_cost(model: Model, graph: str, op: Op, prof: dict, resident: bool) -> LayerCost:
    """The cost of one call of `op` (see the module doc); `resident`: its constants are
    already in SRAM from an earlier step."""
    arr, dec = prof["mac_array"], prof["decoder"]
    on_acc = op.type in prof["accelerated_ops"]
    elem = prof["activation_bytes"]["accelerator" if on_acc else "host"]
    lc = LayerCost(graph, op.type, op.name, "host")
    lc.act_in_bytes = _act_bytes(model, op.inputs, elem)
    lc.act_out_bytes = _act_bytes(model, op.outputs, elem)
    const_names = _weights(model, op)
    stored = decoded = 0
    decode_cycles = 0.0
    mac_cycles = 0
    uses = {}
    if op.type in _MAC_OPS:
        mac_cycles, uses_l = _mac_cycles(model, op, arr)
        lc.macs, uses = op_macs(model, op), dict(uses_l)
    for nm in const_names:
        tt = model.tensors[nm]
        times = uses.get(nm, 1)
        if tt.dtype == "packed":
            info = packed_info(tt.data)
            stored += info.stored_bytes
            decoded += info.n * info.k * times
            dense_int8 = info.bits == 8 and info.affine and not info.sparse
            if not (dense_int8 and dec["int8_bypass"]):
                decode_cycles += info.stored_codes * times / dec["codes_per_cycle"]
            if info.sparse:
                decode_cycles += info.n * _ceil(info.k, 64) * 64 * times / \
                    dec["bitmap_weights_per_cycle"]
        else:
            stored += tt.nbytes
            decoded += tt.nbytes * times
    lc.weight_stored_bytes, lc.weight_decoded_bytes = stored, decoded
    lc.resident = bool(resident and stored)
    act = lc.act_in_bytes + lc.act_out_bytes
    if not on_acc:
        return _host(lc, model, op, prof, stored)
    if op.type in _MAC_OPS:
        lc.unit = "mac"
        lc.compute_cycles = mac_cycles
        if op.type in ("qlstm", "lstm"):
            # Gate nonlinearities and the c/h updates sit on the recurrence's critical path.
            lc.compute_cycles += _ceil(op_cost(model, op)[1],
                                       int(prof["activation_unit"]["elements_per_cycle"]))
    elif op.type in _SHAPE_ONLY:
        lc.unit = "move"  # a DMA pass through SRAM, no arithmetic
    else:
        lc.unit = "act"
        n_out = sum(model.tensors[o].numel for o in op.outputs)
        lc.compute_cycles = _ceil(n_out * _ACT_PASSES.get(op.type, 1),
                                  int(prof["activation_unit"]["elements_per_cycle"]))
    weight_dram = 0 if lc.resident else stored
    lc.dram_bytes = weight_dram
    # Weights pass through SRAM once per step (staged from DRAM, or read where resident);
    # activations are read and written in SRAM.
    lc.sram_bytes = stored + act
    lc.dram_cycles = math.ceil(weight_dram / prof["dram"]["bytes_per_cycle"]
                               + prof["dram"]["latency_cycles"]) if weight_dram else 0
    lc.sram_cycles = math.ceil(lc.sram_bytes / prof["sram"]["bytes_per_cycle"])
    lc.decoder_cycles = math.ceil(decode_cycles)
    lc.overhead_cycles = math.ceil(prof["overhead_cycles"])
    _bind(lc)
    return lc


def _host(lc: LayerCost, model: Model, op: Op, prof: dict, stored: int) -> LayerCost:
    """A fallback op: host arithmetic plus its activations' DRAM round trip."""
    host = prof["host"]
    ratio = prof["clock_mhz"] / host["clock_mhz"]  # host cycles -> accelerator cycles
    n_out = sum(model.tensors[o].numel for o in op.outputs)
    # ~4 flops per element for elementwise math (exp/div sequences); shape ops only copy.
    flops = 2 * lc.macs if lc.macs else n_out * (0 if op.type in _SHAPE_ONLY else 4)
    lc.compute_cycles = math.ceil(flops / host["flops_per_cycle"] * ratio)
    lc.dram_bytes = lc.act_in_bytes + lc.act_out_bytes + stored
    lc.dram_cycles = math.ceil(lc.dram_bytes / prof["dram"]["bytes_per_cycle"]
                               + prof["dram"]["latency_cycles"])
    lc.overhead_cycles = math.ceil(host["overhead_cycles"] * ratio)
    _bind(lc)
    lc.bound = "host" if lc.bound == "compute" else lc.bound
    return lc


def _bind(lc: LayerCost) -> None:
    terms = {"compute": lc.compute_cycles, "dram": lc.dram_cycles, "sram": lc.sram_cycles,
             "decoder": lc.decoder_cycles}
    # Ties go to the first in this order, so the label is deterministic.
    bound = max(terms, key=lambda k: (terms[k], -list(terms).index(k)))
    lc.bound = bound if terms[bound] > 0 else "overhead"
    lc.cycles = terms[bound] + lc.overhead_cycles


def assign_residency(model: Model, graphs: list[str], prof: dict, enabled: bool) -> set[str]:
    """Constant tensors kept in SRAM across steps: greedily in execution order while they fit
    beside the largest activation working set of any op (which SRAM must also hold)."""
    if not enabled:
        return set()
    elem = prof["activation_bytes"]["accelerator"]
    work = 0
    for g in graphs:
        for op in model.graphs[g].ops:
            work = max(work, _act_bytes(model, op.inputs, elem)
                       + _act_bytes(model, op.outputs, elem))
    budget = prof["sram"]["bytes"] - work - staging_bytes(model, graphs, prof)
    kept: set[str] = set()
    for g in graphs:
        for op in model.graphs[g].ops:
            if op.type not in prof["accelerated_ops"]:
                continue
            names = [n for n in _weights(model, op) if n not in kept]
            need = sum(_const_bytes(model, n) for n in names)
            if names and need <= budget:
                kept.update(names)
                budget -= need
    return kept


def staging_bytes(model: Model, graphs: list[str], prof: dict) -> int:
    """SRAM reserved for streamed weights: a double buffer holding one N-tile (`rows` output
    channels x the full input depth, as int8) of the widest accelerated weight layer."""
    widest = 0
    for g in graphs:
        for op in model.graphs[g].ops:
            if op.type in prof["accelerated_ops"]:
                for n in _weights(model, op):
                    tt = model.tensors[n]
                    if tt.dtype == "packed" or len(tt.shape) >= 2:
                        widest = max(widest, _numel(tt.shape[1:]))
    return 2 * prof["mac_array"]["rows"] * widest


def _const_bytes(model: Model, name: str) -> int:
    tt = model.tensors[name]
    return packed_info(tt.data).stored_bytes if tt.dtype == "packed" else tt.nbytes


def graph_costs(model: Model, graphs: list[str], prof: dict,
                residency: bool | None = None) -> tuple[list[LayerCost], dict]:
    """Per-layer costs of one call of each graph in `graphs` (one streaming step) and the
    residency facts. `residency` None follows the profile's `weight_residency`."""
    enabled = prof["weight_residency"] if residency is None else residency
    kept = assign_residency(model, graphs, prof, enabled)
    rows = []
    peak_act = 0
    elem = prof["activation_bytes"]["accelerator"]
    for g in graphs:
        for op in model.graphs[g].ops:
            ws = _weights(model, op)
            res = bool(ws) and all(n in kept for n in ws)
            rows.append(layer_cost(model, g, op, prof, res))
            peak_act = max(peak_act, _act_bytes(model, op.inputs, elem)
                           + _act_bytes(model, op.outputs, elem))
    resident_bytes = sum(_const_bytes(model, n) for n in kept)
    staged = staging_bytes(model, graphs, prof)
    return rows, {"enabled": bool(enabled), "resident_bytes": resident_bytes,
                  "resident_tensors": len(kept),
                  "staging_bytes": staged,
                  "peak_sram_bytes": resident_bytes + peak_act + staged,
                  "peak_activation_bytes": peak_act}
