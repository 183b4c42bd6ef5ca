"""Measure the ONNX exporter on zoo models (issue 8 closing note); writes JSON to out/.

Per model: the fp32 graph (the float IR through the same exporter) and, per recipe, the
compressed model exported three ways — `qdq` (QuantizeLinear activations), `qdq-exact`
(`exact_act=True`: IR rounding) and `ort` (MatMulNBits flavor) — each with file bytes, bytes
vs theoretical, SNR vs the compressed PyTorch model and vs fp32 (worst output over a few
streaming steps), and one-thread latency of the streaming graph per step, at onnxruntime's
`session.qdq_matmulnbits_accuracy_level` 0 and 4. Peers on the same fp32 ONNX graph:
onnxruntime's `quantize_static` (QDQ int8, per-channel) and `MatMulNBitsQuantizer` (4-bit).
When the C++ runtime is built, the EKM file's `Session.step` latency on the same host too.

    .venv/bin/python scripts/measure_onnx.py --size small --models rnnt,conformer
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit import EdgekitError
from edgekit._io import atomic_write_json

LEVELS = ("0", "4")


def worst_snrs(got: dict, ref_q: dict | None, ref_f: dict) -> tuple:
    """(worst SNR vs the compressed model or None, worst vs fp32) over graphs and outputs."""
    from edgekit.export.parity import compare, worst
    par = {g: compare(got[g], (ref_q or ref_f)[g], ref_f[g]) for g in ref_f}
    return (worst(par) if ref_q else None), worst(par, "snr_vs_fp32_db")


def run_files(files: dict, mir, feeds: dict, level) -> dict:
    from edgekit.export.parity import OrtRunner, run_steps
    return {g: run_steps(OrtRunner(files[g], mir, g, level), feeds[g]) for g in mir.graphs}


def latency_us(path, mir, graph: str, feed: dict, level, iters: int) -> dict:
    """Steady-state time of one streaming step (state carried), one thread."""
    from edgekit.export.parity import OrtRunner
    st = OrtRunner(path, mir, graph, level)
    for _ in range(5):
        st.step(feed)
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        st.step(feed)
        t.append((time.perf_counter() - t0) * 1e6)
    return {"p50_us": round(float(np.median(t)), 1),
            "p90_us": round(float(np.percentile(t, 90)), 1)}


def _r(v):
    return None if v is None else round(float(v), 2)


def measure_files(files, mir, feeds, ref_q, ref_f, stream_graph, iters) -> dict:
    out = {}
    for level in LEVELS:
        vs_q, vs_f = worst_snrs(run_files(files, mir, feeds, level), ref_q, ref_f)
        out[f"level{level}"] = {
            "snr_vs_compressed_db": _r(vs_q), "snr_vs_fp32_db": _r(vs_f),
            "latency": latency_us(files[stream_graph], mir, stream_graph,
                                  feeds[stream_graph][0], level, iters)}
    return out


def peers(fp32_files: dict, mir, feeds, calib_feeds, ref_f, stream_graph, iters, tmp: Path):
    """onnxruntime's own quantizers on the fp32 ONNX graphs (the same graph edgekit starts from)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    class Reader(CalibrationDataReader):
        def __init__(self, path, g):
            from edgekit.export.parity import OrtRunner
            st = OrtRunner(path, mir, g, None)
            self.items = []
            for f in calib_feeds[g]:
                self.items.append({**f, **st.state})
                st.step(f)
            self.it = iter(self.items)

        def get_next(self):
            return next(self.it, None)

    rows = []
    variants = {
        "ORT quantize_static QDQ int8 per-channel (S8S8, MinMax)": "static",
        "ORT MatMulNBitsQuantizer 4-bit b32 sym": dict(bits=4, block_size=32, is_symmetric=True),
        "ORT MatMulNBitsQuantizer 4-bit b128 asym (defaults)":
            dict(bits=4, block_size=128, is_symmetric=False),
    }
    for label, kw in variants.items():
        files, size = {}, 0
        try:
            for g, path in fp32_files.items():
                dst = tmp / f"peer.{len(rows)}.{g}.onnx"
                if kw == "static":
                    quantize_static(str(path), str(dst), Reader(path, g),
                                    quant_format=QuantFormat.QDQ, per_channel=True,
                                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
                else:
                    q = MatMulNBitsQuantizer(onnx.load(str(path)), **kw)
                    q.process()
                    onnx.save(q.model.model, str(dst))
                files[g] = dst
                size += dst.stat().st_size
            row = {"method": label, "file_bytes": size}
            row.update(measure_files(files, mir, feeds, None, ref_f, stream_graph, iters))
        except Exception as exc:   # a peer that fails on this graph is reported, not fatal
            row = {"method": label, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
        rows.append(row)
    return rows


def edgekit_runtime_latency(mir, path: Path, graph: str, feed: dict, iters: int):
    """Session.step latency of the EKM file, or why it could not be measured."""
    try:
        from edgekit.export import ekm
        from edgekit.runtime import Session
        ekm.write(mir, path)
        s = Session(str(path), graph=graph, threads=1)
        x = feed[mir.graphs[graph].inputs[0]]
        for _ in range(5):
            s.step(x)
        t = []
        for _ in range(iters):
            t0 = time.perf_counter()
            s.step(x)
            t.append((time.perf_counter() - t0) * 1e6)
        return {"p50_us": round(float(np.median(t)), 1),
                "p90_us": round(float(np.percentile(t, 90)), 1), "file_bytes": path.stat().st_size}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def measure_model(name, size, recipes, steps, calib, iters, tmp: Path,
                  sizes_only: bool = False) -> dict:
    from edgekit.compress import compress
    from edgekit.export import onnx as ek_onnx
    from edgekit.export import pipeline
    from edgekit.export.lower import lower
    from edgekit.export.lower.models import example_feeds
    from edgekit.export.parity import TorchRunner, run_steps

    cfg = pipeline.ExportConfig(model=name, out="unused", size=size, calib=calib)
    _, fp32, specs, batches, _ = pipeline.load_source(cfg)
    feeds = example_feeds(name, fp32, specs, steps, 0)
    calib_feeds = example_feeds(name, fp32, specs, max(steps, 4), 1000)
    ref_f = {s.name: run_steps(TorchRunner(fp32, s), feeds[s.name]) for s in specs}
    fir = lower(fp32, specs, {})
    stream = next((s.name for s in specs if s.streaming), specs[0].name)
    rep = ek_onnx.export(fir, tmp / f"{name}.fp32.onnx")
    fp32_files = {g: f["path"] for g, f in rep["files"].items()}
    # sizes_only: file bytes without onnxruntime runs, peers or latency (minutes less).
    measure = (lambda *a: {}) if sizes_only else measure_files
    res = {"model": name, "size": size, "stream_graph": stream,
           "fp32": {"file_bytes": rep["file_bytes"],
                    **measure(fp32_files, fir, feeds, None, ref_f, stream, iters)},
           "recipes": {}}
    if not sizes_only:
        res["peers"] = peers(fp32_files, fir, feeds, calib_feeds, ref_f, stream, iters, tmp)
    for recipe in recipes:
        rcfg = pipeline.ExportConfig(model=name, out="unused", size=size, recipe=recipe,
                                     calib=calib)
        model = compress(fp32, pipeline.make_recipe(rcfg)[0], calib=batches)
        pipeline.calibrate_activations(model, batches)
        mir = lower(model, specs, {})
        ref_q = {} if sizes_only else {s.name: run_steps(TorchRunner(model, s), feeds[s.name])
                                       for s in specs}
        rows = {}
        for label, kw in (("qdq", {}), ("qdq-exact", {"exact_act": True}),
                          ("ort", {"flavor": "ort"})):
            r = ek_onnx.export(mir, tmp / f"{name}.{recipe}.{label}.onnx", **kw)
            files = {g: f["path"] for g, f in r["files"].items()}
            rows[label] = {"file_bytes": r["file_bytes"],
                           "theoretical_bytes": r["theoretical_bytes"],
                           "vs_theoretical": _r(r["file_bytes"] / r["theoretical_bytes"]),
                           "widened_layers": len(r["widened_layers"]), "opset": r["opset"],
                           "storage": sorted({row["storage"] for row in r["layers"]}),
                           **measure(files, mir, feeds, ref_q, ref_f, stream, iters)}
        if not sizes_only:
            rows["edgekit_runtime"] = edgekit_runtime_latency(
                mir, tmp / f"{name}.{recipe}.ekm", stream, feeds[stream][0], iters)
        res["recipes"][recipe] = rows
        print(json.dumps({name: {recipe: {k: (v.get("file_bytes"), v.get("level0"))
                                         for k, v in rows.items()}}}), flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--models", default="rnnt,conformer,conmer,nwc,nwc-cmrl")
    ap.add_argument("--recipes", default="int8,int4,mixed")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--calib", type=int, default=4)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default="out/measure_onnx.json")
    ap.add_argument("--sizes-only", action="store_true", help="file sizes only (no runs)")
    a = ap.parse_args(argv)
    if min(a.steps, a.calib, a.iters) < 1:
        print("error: --steps, --calib and --iters must be >= 1", file=sys.stderr)
        return 2
    import onnxruntime
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    result = {"host": platform.processor() or platform.machine(),
              "onnxruntime": onnxruntime.__version__, "threads": 1,
              "accuracy_levels": "session.qdq_matmulnbits_accuracy_level per row: level0, level4",
              "command": " ".join(sys.argv), "models": []}
    with tempfile.TemporaryDirectory() as d:
        for name in a.models.split(","):
            try:
                result["models"].append(measure_model(name, a.size, a.recipes.split(","), a.steps,
                                                      a.calib, a.iters, Path(d), a.sizes_only))
            except (EdgekitError, ValueError) as exc:
                print(f"error: {name}: {exc}", file=sys.stderr)
                return 2
            atomic_write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
