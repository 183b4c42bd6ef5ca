"""TFLite exporter: the lowered IR (`edgekit.export.ir`) → .tflite files LiteRT runs.

`export(model, path, calib=None, **opts)` writes one .tflite per IR graph and returns a
report. Pipeline per graph: emit the calibration twin (float, integer weights dequantized) →
run it in LiteRT on calibration inputs to get every integer op's output range → emit the
integer graph → run it with the default (XNNPACK) and reference resolvers on the same inputs
and compare (with the twin, and with each other) → write atomically. See
docs/export-tflite.md.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from edgekit._io import atomic_write_bytes
from edgekit.export import ir
from edgekit.export.parity import snr_db
from edgekit.export.tflite import builder, fullint
from edgekit.export.tflite.ops import Emitter
from edgekit.export.tflite.runner import Stream, survives

__all__ = ["export", "build_graph", "Stream", "graph_paths"]

OPTS = {"lossless": False, "min_bits": None, "split_groups": True, "calib_steps": 4, "seed": 0,
        "verify": True, "min_layer_snr_db": 10.0, "low_first": True, "full_integer": True,
        "io": "int8", "norm_bits": 8}


def graph_paths(model: ir.Model, path) -> dict[str, Path]:
    """Where each graph goes: `path` itself for a one-graph model, else
    `<stem>.<graph>.tflite` beside it (e.g. model.encoder.tflite, model.joiner.tflite)."""
    path = Path(path)
    if len(model.graphs) == 1:
        return {next(iter(model.graphs)): path}
    stem = path.name[:-len(".tflite")] if path.name.endswith(".tflite") else path.name
    return {g: path.with_name(f"{stem}.{g}.tflite") for g in model.graphs}


def build_graph(model: ir.Model, graph: str, *, calibrating: bool, ranges=None, plans=None,
                **opts) -> tuple[bytes, Emitter, bytes]:
    """Emit one graph (the calibration twin or the integer model).

    Returns (file bytes, emitter, probed bytes): the probed variant is the same graph with
    every probed tensor (integer op outputs, twin ranges) appended to the outputs, so they
    can be read from any resolver — delegated or not — without preserving all tensors."""
    o = {**OPTS, **opts}
    mb = builder.ModelBuilder(f"edgekit {graph}" + (" (calibration twin)" if calibrating else ""))
    em = Emitter(model, model.graphs[graph], mb, calibrating=calibrating,
                 ranges=ranges or {}, plans={} if plans is None else plans, opts=o)
    em.emit()
    return _finish(em)


def _finish(em: Emitter) -> tuple[bytes, Emitter, bytes]:
    """(file bytes, emitter, probed bytes) of the emitter's model as it is now."""
    data = em.mb.finish()
    ins, outs = list(em.sg._g.inputs), list(em.sg._g.outputs)
    em.exposed = {k: i for k, i in em.probes.items() if i not in ins and i not in outs}
    em.sg.set_io(ins, outs + list(em.exposed.values()))
    probed = em.mb.finish()
    em.sg.set_io(ins, outs)
    return data, em, probed


def _full_integer(model: ir.Model, g: ir.Graph, data: bytes, em: Emitter, feeds,
                  io: str, norm_bits: int) -> tuple[bytes, bytes, dict]:
    """Calibrate every activation of the integer-island file `data` on `feeds` and convert
    it in place to a full-integer graph (`fullint`). Returns (file, probed file, report)."""
    cal, keys = fullint.probe_model(data)
    base = list(g.outputs) + [n for _, n in g.states if n not in g.outputs]
    names = base + [f"cal:{i}" for i in range(len(keys) - len(base))]
    ins = list(g.inputs) + [s for s, _ in g.states]
    # builtin kernels: XNNPACK refuses some graphs whose inner tensors are all outputs
    stream = Stream(cal, g.inputs, [s for s, _ in g.states], names, dict(g.states), "builtin")
    keys = keys + [("value", 0, em.t[n]) for n in ins if em.t[n] >= 0]
    steps = []
    for f in feeds:
        out = stream.step(f)
        steps.append([out[n] for n in names] + [stream.fed[n] for n in ins if em.t[n] >= 0])
    ranges = fullint.ranges_from(keys, steps)
    sg = em.sg._g
    old_in, old_out = list(sg.inputs), list(sg.outputs)
    index_map, rep = fullint.convert(em.mb._model, ranges, io=io,
                                     wide={k for k, v in em.wide.items()
                                           if v == "lstm" or norm_bits == 16},
                                     hints=em.range_hints,
                                     outputs=[em.t[n] for n in g.outputs])
    # IR names of the graph's inputs/outputs follow their positions; other names and the
    # probes follow the index map (a removed tensor's probe is dropped)
    sg.inputs, sg.outputs = list(sg.inputs), list(sg.outputs)
    fullint.name_io(em.mb._model, ins, base)
    pos = dict(zip(old_in, sg.inputs)) | dict(zip(old_out, sg.outputs))
    em.t = {n: pos.get(i, index_map.get(i, -1)) for n, i in em.t.items()}
    em.t = {n: i for n, i in em.t.items() if i >= 0}
    em.probes = {k: index_map[i] for k, i in em.probes.items() if i in index_map}
    em.lsb = {}
    producer = {int(o): op for op in sg.operators for o in op.outputs}
    for o in sg.outputs:
        src = o
        op = producer.get(int(o))
        if io == "float" and op is not None and int(op.inputs[0]) >= 0:
            src = int(op.inputs[0])
        q = sg.tensors[src].quantization
        if q is not None and q.scale is not None and len(q.scale):
            em.lsb[int(o)] = float(q.scale[0])
    rep["float_ops"] = dict(rep["float_ops"])
    rep["ops"] = dict(Counter(fullint._Model(em.mb._model).name(op)
                              for s in em.mb._model.subgraphs for op in s.operators))
    data, em, probed = _finish(em)
    why = survives(data, g.inputs, [s for s, _ in g.states], base, dict(g.states), feeds[:1])
    if why is not None:
        raise ValueError(f"graph {g.name}: the full-integer file does not run ({why}); "
                         "export with full_integer=False (--tflite-float-ops) to keep float "
                         "ops between the integer layers")
    return data, probed, rep


def _check(model, path, calib, opts) -> None:
    if not isinstance(model, ir.Model):
        raise ValueError(f"model must be an edgekit.export.ir.Model, got {type(model).__name__}")
    if not model.graphs:
        raise ValueError("model has no graphs")
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"path must be a file path, got {path!r}")
    unknown = set(opts) - set(OPTS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(OPTS)}")
    if opts.get("min_bits") not in (None, 2, 4, 8):
        raise ValueError(f"min_bits must be None, 2, 4 or 8, got {opts['min_bits']!r}")
    if opts.get("norm_bits", 8) not in (8, 16):
        raise ValueError(f"norm_bits must be 8 or 16, got {opts['norm_bits']!r}")
    if opts.get("io", "int8") not in ("int8", "float"):
        raise ValueError(f"io must be 'int8' or 'float', got {opts['io']!r}")
    if calib is not None and not isinstance(calib, (list, tuple, dict)):
        raise ValueError("calib must be a list of input dicts, or a dict graph -> list")


def _stream(model: ir.Model, g: ir.Graph, data: bytes, resolver: str, em=None) -> Stream:
    """A Stream over one graph's file; with `em`, over its probed variant (probes are read
    back as extra outputs named "probe:<key>")."""
    outs = list(g.outputs) + [n for _, n in g.states if n not in g.outputs]
    if em is not None:
        outs += ["probe:" + k for k in em.exposed]
    return Stream(data, g.inputs, [s for s, _ in g.states], outs, dict(g.states), resolver)


def _probe_values(em: Emitter, g: ir.Graph, stream: Stream, out: dict) -> dict:
    """Probe key → value of the step just run (probes of input tensors come from the feed)."""
    vals = {}
    fed = {em.t[n]: n for n in list(g.inputs) + [s for s, _ in g.states]}
    outs = {em.t[n]: n for n in stream.outputs if not n.startswith("probe:")}
    for key, idx in em.probes.items():
        vals[key] = (out["probe:" + key] if key in em.exposed else
                     stream.fed[fed[idx]] if idx in fed else out[outs[idx]])
    return vals


def _feeds(model: ir.Model, g: ir.Graph, calib, steps: int, seed: int) -> list[dict]:
    """Calibration inputs for graph `g`: the user's, else `steps` deterministic N(0, 1)
    float inputs (integer inputs 0). States are carried from step to step."""
    if isinstance(calib, dict) and not all(isinstance(v, (list, tuple)) for v in calib.values()):
        calib = [calib]
    if isinstance(calib, dict):
        calib = calib.get(g.name)
    if calib is not None:
        feeds = list(calib)
        for f in feeds:
            if not isinstance(f, dict):
                raise ValueError("each calibration step must be a dict input name -> array")
            missing = [n for n in g.inputs if n not in f]
            if missing:
                raise ValueError(f"calibration step misses inputs {missing} of graph {g.name}")
        if not feeds:
            raise ValueError(f"no calibration steps for graph {g.name}")
        return feeds
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(steps):
        f = {}
        for n in g.inputs:
            t = model.tensors[n]
            f[n] = (rng.standard_normal(t.shape).astype(np.float32) if t.dtype == "f32"
                    else np.zeros(t.shape, ir.NP_DTYPES[t.dtype]))
        feeds.append(f)
    return feeds


def _calibrate(twin: Stream, em: Emitter, g: ir.Graph, feeds) -> tuple[dict, list, list]:
    ranges: dict[str, list[float]] = {}
    probes: list[dict] = []
    outs = []
    for f in feeds:
        outs.append(twin.step(f))
        step = {}
        for key, v in _probe_values(em, g, twin, outs[-1]).items():
            step[key] = v
            lo, hi = float(v.min(initial=0)), float(v.max(initial=0))
            r = ranges.setdefault(key, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
        probes.append(step)
    return ranges, probes, outs


def _verify(model, g, data, probed, em, feeds, twin_outs, twin_probes) -> dict:
    """Run the integer file with both resolvers; compare outputs and every integer layer."""
    ref = _stream(model, g, probed, "ref", em)
    xnn = _stream(model, g, data, "default")
    # Per key, (reference, got) arrays over all steps: SNRs are over the whole run.
    layer = {k: ([], []) for k in em.probes}
    out = {n: ([], []) for n in g.outputs}
    max_diff = {n: 0.0 for n in g.outputs}
    lsb_diffs = {n: [] for n in g.outputs}
    for f, want, tp in zip(feeds, twin_outs, twin_probes):
        a, b = ref.step(f), xnn.step(f)
        for n in g.outputs:
            diff = np.abs(a[n].astype(np.float64) - b[n])
            max_diff[n] = max(max_diff[n], float(np.max(diff, initial=0)))
            if em.t[n] in em.lsb:
                lsb_diffs[n].append(np.rint(diff.ravel() / em.lsb[em.t[n]]))
            out[n][0].append(want[n].ravel())
            out[n][1].append(b[n].ravel())
        pv = _probe_values(em, g, ref, a)   # dequantized by the Stream
        for key in em.probes:
            r = tp[key[:-2]]  # "<graph>/<op>/<what>_q" ↔ the twin's "<graph>/<op>/<what>"
            q = em.sg.quant_of(em.probes[key])
            if q is not None:
                # a full-integer file may produce the layer straight on the next layer's
                # input grid (fullint: adoption); what that grid clips, the IR clips too
                (s,), (z,) = q[0][:1], q[1][:1]
                r = np.clip(r, (-128 - z) * s, (127 - z) * s)
            layer[key][0].append(r.ravel())
            layer[key][1].append(np.asarray(pv[key], np.float64).ravel())

    def db(pair) -> float:
        return round(snr_db(np.concatenate(pair[0]), np.concatenate(pair[1])), 2)

    return {"output_snr_vs_twin_db": {n: db(v) for n, v in out.items()},
            "layer_snr_db": {k[:-2]: db(v) for k, v in layer.items()},
            "xnnpack_vs_ref_max_abs_diff": max_diff,
            # Outputs that leave an integer op directly: the same difference in int8 steps.
            "xnnpack_vs_ref_max_lsb": {n: round(max_diff[n] / em.lsb[em.t[n]], 3)
                                       for n in g.outputs if em.t[n] in em.lsb},
            # share of output values on which the two resolvers are within ±1 step
            "xnnpack_vs_ref_within_1lsb": {n: round(float(np.mean(np.concatenate(v) <= 1)), 5)
                                           for n, v in lsb_diffs.items() if v}}


def export(model: ir.Model, path, calib=None, **opts) -> dict:
    """Write `model` as .tflite (one file per graph, see `graph_paths`) and return a report.

    calib: None (deterministic N(0,1) inputs), a list of {input name: array} steps (one-graph
    models), or {graph name: list of steps}; states are carried between steps.
    opts: lossless (widen instead of re-quantizing weights that do not fit exactly),
    min_bits (2, 4, 8: the narrowest stored width; 8 = int8 everywhere), split_groups
    (False: re-quantize per-group scales per channel — smaller, less exact), calib_steps, seed,
    verify (run both resolvers and check every integer layer), min_layer_snr_db,
    full_integer (True: int8 activations end to end, see fullint.py; False: float ops between
    the integer layers), io ("int8" inputs/outputs/states, or "float" with QUANTIZE and
    DEQUANTIZE at the boundary), norm_bits (8, or 16: LayerNorm statistics at int16 — 3.4 dB
    closer on the tiny Conformer, 5x slower in LiteRT, whose int16 ops XNNPACK does not run).
    Raises ValueError for bad input, unsupported ops, and layers that fail the check.
    """
    _check(model, path, calib, opts)
    o = {**OPTS, **opts}
    paths = graph_paths(model, path)
    report = {"format": "tflite", "files": {}, "graphs": {}, "layers": [], "bytes": 0}
    blobs = {}
    for gname, g in model.graphs.items():
        plans: dict = {}
        _, twin_em, twin_probed = build_graph(model, gname, calibrating=True, plans=plans, **o)
        feeds = _feeds(model, g, calib, o["calib_steps"], o["seed"])
        ranges, probes, twin_outs = _calibrate(
            _stream(model, g, twin_probed, "default", twin_em), twin_em, g, feeds)
        data, em, probed = build_graph(model, gname, calibrating=False, ranges=ranges,
                                       plans=plans, **o)
        full = None
        if o["full_integer"]:
            data, probed, full = _full_integer(model, g, data, em, feeds, o["io"],
                                               o["norm_bits"])
        info = {"file": str(paths[gname]), "bytes": len(data), "weight_bytes": em.mb.const_bytes,
                "inputs": list(g.inputs) + [s for s, _ in g.states],
                "outputs": list(g.outputs) + [n for _, n in g.states if n not in g.outputs],
                "states": [list(p) for p in g.states], "float_ops": dict(em.float_ops),
                "integer_ops": dict(em.int_ops), "calibration_steps": len(feeds),
                "output_lsb": {n: em.lsb[em.t[n]] for n in g.outputs if em.t[n] in em.lsb}}
        if full is not None:
            # what is left float after the conversion (TFLite ops), not the IR's float ops
            info.update(full_integer=True, io=o["io"], norm_bits=o["norm_bits"],
                        float_ops=full["float_ops"],
                        tflite_ops=full["ops"], requantize_ops=full["requantize_ops"],
                        requantized_float_layers=full["requantized_float_layers"])
        else:
            info.update(full_integer=False)
        if o["verify"]:
            info.update(_verify(model, g, data, probed, em, feeds, twin_outs, probes))
            bad = {k: v for k, v in info["layer_snr_db"].items() if v < o["min_layer_snr_db"]}
            if bad:
                raise ValueError(f"graph {gname}: integer layers disagree with their float twin "
                                 f"(SNR dB {bad} < {o['min_layer_snr_db']}); not written")
        for layer in em.layers:
            layer["graph"] = gname
        report["layers"] += em.layers
        report["graphs"][gname] = info
        blobs[gname] = data
    for gname, data in blobs.items():
        atomic_write_bytes(paths[gname], data)
        report["files"][gname] = str(paths[gname])
        report["bytes"] += len(data)
    report["file_bytes"] = report["bytes"]
    # One line per layer not stored at its own bits, or not stored exactly.
    report["widened_layers"] = sorted({
        f"{l['name']} ({l['ir_bits']}->{l['bits']}"
        + ("" if l["exact"] else f", re-quantized {l['weight_snr_db']} dB") + ")"
        for l in report["layers"] if l["widened"] or not l["exact"]})
    return report
