"""Measure the TFLite exporter on zoo models: sizes, SNRs and LiteRT latency per step.

For each model: the fp32 PyTorch model is the reference. Rows:
* `fp32`: the uncompressed model lowered and written by our exporter (all ops float);
* `aeq-int4`: that float file quantized by ai-edge-quantizer's `dynamic_wi4c_afp32` recipe
  (int4 channelwise weights, float activations quantized on the fly) — the peer;
* `int8`, `int4`, `mixed`: compressed by edgekit's recipe, lowered, exported full-integer
  (int8 activations end to end, int8 I/O; report of float ops and widened layers included);
  `<recipe>-float`: the same model with float ops kept between the integer layers
  (`full_integer=False`); `<recipe>-n16`: full-integer with LayerNorm statistics at int16;
  `int4-pc`: int4 with per-channel re-quantized weights.
SNRs are on the streaming graph's output over a held-out utterance fed chunk by chunk
(states carried): vs fp32 PyTorch and vs the compressed PyTorch model. Calibration uses a
different utterance (seed 1) than the evaluation (seed 0). Latency: LiteRT, one thread,
default resolver (XNNPACK where it takes the nodes), steady-state invoke() per step.

    .venv/bin/python scripts/measure_tflite.py --size small -o out/tflite_measure.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekit import models
from edgekit._io import atomic_write_json
from edgekit.compress import compress
from edgekit.export import tflite
from edgekit.export.lower import lower, zoo_graphs
from edgekit.export.parity import snr_db
from edgekit.export.tflite.runner import Stream


def _chunks(model_name: str, model, seconds: float, seed: int):
    """The streaming input of `model_name`, cut into step-sized chunks (torch tensors)."""
    spec = zoo_graphs(model_name, model)
    st = next(s for s in spec if s.streaming).streaming
    ex = _example(model_name, model, seconds, seed)[0]
    n = ex.shape[1] // st["chunk"]
    return [ex[:, i * st["chunk"]:(i + 1) * st["chunk"]] for i in range(n)], st


_INFO: dict = {}


def _example(name, model, seconds, seed):
    key = (name, getattr(model, "_measure_size", None))
    if key not in _INFO:
        _INFO[key] = models.info(name, model._measure_size)["example_input"]
    return _INFO[key](batch=1, seconds=seconds, seed=seed)


def torch_steps(model, chunks) -> list[np.ndarray]:
    """The model's own streaming step outputs (the PyTorch reference)."""
    state, outs = model.init_state(1), []
    with torch.no_grad():
        for c in chunks:
            y, state = model.step(c, state)
            outs.append(y.numpy().copy())
    return outs


def snr(refs, gots) -> float:
    return round(snr_db(np.concatenate([r.ravel() for r in refs]),
                        np.concatenate([g.ravel() for g in gots])), 2)


def _graph_streams(irm, files: dict, resolver="default"):
    out = {}
    for gname, g in irm.graphs.items():
        outs = list(g.outputs) + [n for _, n in g.states if n not in g.outputs]
        out[gname] = Stream(Path(files[gname]).read_bytes(), g.inputs, [s for s, _ in g.states],
                            outs, dict(g.states), resolver)
    return out


def run_stream(irm, files, chunks, st) -> list[np.ndarray]:
    """The streaming graph's output per chunk, LiteRT default resolver, states carried."""
    s = _graph_streams(irm, files)[st["graph"]]
    g = irm.graphs[st["graph"]]
    return [s.step({st["input"]: c.numpy()})[g.outputs[0]] for c in chunks]


def latency(irm, files, iters: int) -> dict:
    """Median / p90 ms of one invoke() per graph (inputs set once; one thread)."""
    res = {}
    rng = np.random.default_rng(0)
    for gname, s in _graph_streams(irm, files).items():
        feed = {}
        for n in irm.graphs[gname].inputs:
            t = irm.tensors[n]
            feed[n] = (rng.standard_normal(t.shape).astype(np.float32) if t.dtype == "f32"
                       else np.zeros(t.shape, np.int64 if t.dtype == "i64" else np.int32))
        s.step(feed)
        for _ in range(3):
            s.it.invoke()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            s.it.invoke()
            times.append((time.perf_counter_ns() - t0) / 1e6)
        res[gname] = {"p50_ms": round(float(np.median(times)), 4),
                      "p90_ms": round(float(np.percentile(times, 90)), 4), "iters": iters}
    return res


def _sizes(files: dict) -> dict:
    return {g: Path(p).stat().st_size for g, p in files.items()}


def aeq_int4(files: dict, out_dir: Path) -> dict:
    """ai-edge-quantizer dynamic int4 channelwise of each float file; {graph: path} or error."""
    from ai_edge_quantizer import quantizer, recipe

    res = {}
    for gname, p in files.items():
        q = quantizer.Quantizer(str(p))
        q.load_quantization_recipe(recipe.dynamic_wi4c_afp32())
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                data = bytes(q.quantize().quantized_model)
        finally:
            logging.disable(logging.NOTSET)
        dst = out_dir / f"aeq.{gname}.tflite"
        dst.write_bytes(data)
        res[gname] = dst
    return res


def measure_model(name: str, size: str, recipes, seconds: float, iters: int, work: Path) -> dict:
    torch.manual_seed(0)
    m = models.build(name, size=size, seed=0)
    m._measure_size = size
    eval_chunks, st = _chunks(name, m, seconds, seed=0)
    calib_chunks, _ = _chunks(name, m, seconds, seed=1)
    ref = torch_steps(m, eval_chunks)
    rows = {}
    calib = {st["graph"]: [{st["input"]: c.numpy()} for c in calib_chunks[:8]]}
    t0 = time.time()
    irf = lower(m, zoo_graphs(name, m))
    rep = tflite.export(irf, work / f"{name}.fp32.tflite", calib=calib, full_integer=False)
    files = rep["files"]
    rows["fp32"] = {"bytes": _sizes(files),
                    "snr_vs_fp32_db": snr(ref, run_stream(irf, files, eval_chunks, st)),
                    "latency": latency(irf, files, iters), "seconds": round(time.time() - t0, 1)}
    try:
        t0 = time.time()
        af = aeq_int4(files, work)
        rows["aeq-int4"] = {"bytes": _sizes(af),
                            "snr_vs_fp32_db": snr(ref, run_stream(irf, af, eval_chunks, st)),
                            "latency": latency(irf, af, iters), "seconds": round(time.time() - t0, 1)}
    except Exception as exc:  # the peer tool's own failure is a result, not a crash
        rows["aeq-int4"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    variants = {"-pc": {"split_groups": False}, "-float": {"full_integer": False},
                "-n16": {"norm_bits": 16}}
    base = list(dict.fromkeys(next((r[:-len(k)] for k in variants if r.endswith(k)), r)
                              for r in recipes))
    for r in base:
        t0 = time.time()
        c = compress(m, r, calib=[_example(name, m, seconds, 1)])
        cref = torch_steps(c, eval_chunks)
        irm = lower(c, zoo_graphs(name, c))
        todo = [(r, {})] if r in recipes else []
        todo += [(r + k, o) for k, o in variants.items() if r + k in recipes]
        for row, opts in todo:
            rows[row] = _export_row(name, row, irm, opts, calib, ref, cref, eval_chunks, st,
                                    iters, work, t0)
    return {"size": size, "params": sum(p.numel() for p in m.parameters()),
            "eval_chunks": len(eval_chunks), "streaming": st, "rows": rows}


def _export_row(name, r, irm, opts, calib, ref, cref, eval_chunks, st, iters, work, t0) -> dict:
    """Export one compressed IR with `opts` and measure it."""
    rep = tflite.export(irm, work / f"{name}.{r}.tflite", calib=calib, **opts)
    got = run_stream(irm, rep["files"], eval_chunks, st)
    widened = [l["name"] for l in rep["layers"] if l["widened"]]
    requant = [l for l in rep["layers"] if not l["exact"]]
    row = {
        "bytes": _sizes(rep["files"]),
        "weight_bytes": {g: i["weight_bytes"] for g, i in rep["graphs"].items()},
        "snr_vs_fp32_db": snr(ref, got), "snr_vs_compressed_db": snr(cref, got),
        "compressed_vs_fp32_db": snr(ref, cref), "options": opts,
        "layers": len(rep["layers"]), "widened": len(widened), "requantized": len(requant),
        "requant_weight_snr_db_min": min((l["weight_snr_db"] for l in requant), default=None),
        "float_ops": {g: i["float_ops"] for g, i in rep["graphs"].items()},
        "integer_ops": {g: i["integer_ops"] for g, i in rep["graphs"].items()},
        "xnnpack_vs_ref_max_abs_diff": {g: i["xnnpack_vs_ref_max_abs_diff"]
                                        for g, i in rep["graphs"].items()},
        "xnnpack_vs_ref_max_lsb": {g: i["xnnpack_vs_ref_max_lsb"] for g, i in rep["graphs"].items()},
        "full_integer": all(i.get("full_integer") for i in rep["graphs"].values()),
        "requantize_ops": sum(i.get("requantize_ops", 0) for i in rep["graphs"].values()),
        "latency": latency(irm, rep["files"], iters), "seconds": round(time.time() - t0, 1)}
    keys = ("bytes", "snr_vs_fp32_db", "snr_vs_compressed_db")
    print(f"  {name} {r}: {json.dumps({k: row[k] for k in keys})}", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--models", default="conmer,conformer,nwc,rnnt")
    ap.add_argument("--recipes", default="int8,int8-float,int4,mixed",
                    help="int4-pc: the int4 model exported with split_groups=False; "
                    "<recipe>-float: exported with float ops between the integer layers")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("-o", "--out", default="out/tflite_measure.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import ai_edge_litert

    result = {"host": platform.processor() or platform.machine(), "python": sys.version.split()[0],
              "torch": torch.__version__, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
              "command": " ".join(["scripts/measure_tflite.py"] + (argv or sys.argv[1:])),
              "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            print(f"{name} ({a.size})", flush=True)
            try:
                result["models"][name] = measure_model(name, a.size, a.recipes.split(","),
                                                       a.seconds, a.iters, Path(tmp))
            except Exception as exc:
                result["models"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                print(f"  failed: {result['models'][name]['error']}", flush=True)
            atomic_write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
