#!/usr/bin/env python
"""Streaming-step latency of the C++ runtime vs PyTorch eager (issue 4, "Measure and report").

For each zoo model (size `small` by default) and each recipe, the model is compressed and
exported to EKM with the pipeline's own stages (`edgekit.export.pipeline`), into a temp dir.
Then, per streaming graph, three runners are timed **interleaved** call by call, one thread:

* `runtime`     — `edgekit.runtime.Session.step` on the EKM file,
* `torch_q`     — the compressed (fake-quantized) PyTorch model's step, eager, no_grad,
* `torch_fp32`  — the fp32 PyTorch model's step.

Interleaving (the order rotates every repeat) means machine load hits all three alike, so
the ratios within one run are meaningful even on a loaded host; absolute numbers are not.
Each runner carries its own streaming state over the zoo's example feeds. The runtime's
per-op profile (`Session.profile()`) over the timed calls is summed by op type.

    python scripts/measure_runtime.py [--models conformer,rnnt] [--recipes int8,int4]
                                      [--repeats 40] [--out out/measure_runtime.json]

Writes one JSON file (atomically) and prints one line per (model, recipe, graph).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# One thread everywhere before torch/numpy start their pools: the comparison is per core.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import torch  # noqa: E402

from edgekit import EdgekitError  # noqa: E402
from edgekit._io import atomic_write_json  # noqa: E402

MODELS = ("conformer", "rnnt", "conmer", "nwc")
RECIPES = {  # label -> ExportConfig fields
    "int8": {"recipe": "int8"},
    "int4": {"recipe": "int4"},
    "mixed": {"recipe": "mixed"},
    "2:4": {"recipe": "int8", "nm": "2:4"},
}


def export_model(model: str, size: str, label: str, calib: int, tmp: Path):
    """Compress + calibrate + lower + write EKM; returns (fp32, compressed, specs, path, mir)."""
    from edgekit.compress import compress
    from edgekit.export import ekm
    from edgekit.export.lower import lower
    from edgekit.export.pipeline import (ExportConfig, calibrate_activations, load_source,
                                         make_recipe)
    cfg = ExportConfig(model=model, size=size, calib=calib, out=str(tmp), **RECIPES[label])
    _, fp32, specs, batches, source = load_source(cfg)
    recipe, text = make_recipe(cfg, fp32)
    q = compress(fp32, recipe, calib=batches)
    calibrate_activations(q, batches)
    mir = lower(q, specs, {"source": source, "recipe": {"name": recipe.get("name"), "text": text}})
    path = tmp / f"{model}-{size}-{label.replace(':', 'of')}.ekm"
    ekm.write(mir, path)
    return fp32, q, specs, path


def _stats(ts: list[float]) -> dict:
    a = np.asarray(ts) * 1e6
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_us": round(float(med), 1), "iqr_us": round(float(q3 - q1), 1),
            "min_us": round(float(a.min()), 1), "n": int(a.size)}


def time_graph(fp32, q, spec, path: Path, feeds: list[dict], repeats: int, warmup: int) -> dict:
    """Interleaved timing of runtime / torch_q / torch_fp32 on one graph."""
    from edgekit.export.parity import SessionRunner, TorchRunner
    runners = {"runtime": SessionRunner(str(path), spec.name),
               "torch_q": TorchRunner(q, spec), "torch_fp32": TorchRunner(fp32, spec)}
    sess = runners["runtime"].s
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup):
        for n in names:
            runners[n].step(feeds[i % len(feeds)])
    sess.reset_profile()
    for r in range(repeats):
        feed = feeds[r % len(feeds)]
        order = names[r % 3:] + names[:r % 3]  # rotate so no runner always goes first
        for n in order:
            t0 = time.perf_counter()
            runners[n].step(feed)
            times[n].append(time.perf_counter() - t0)
    res = {n: _stats(times[n]) for n in names}
    # ratio of medians within this one run, and the median of per-repeat ratios (robust to
    # load that changes between repeats but not within one)
    rt = np.asarray(times["runtime"])
    for n in ("torch_q", "torch_fp32"):
        res[f"speedup_vs_{n}"] = round(res[n]["median_us"] / res["runtime"]["median_us"], 2)
        res[f"speedup_vs_{n}_paired"] = round(float(np.median(np.asarray(times[n]) / rt)), 2)
    by_op: dict[str, float] = {}
    for row in sess.profile():
        by_op[row["op"]] = by_op.get(row["op"], 0.0) + row["total_us"]
    total = sum(by_op.values()) or 1.0
    res["profile_share"] = {k: round(v / total, 3)
                            for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}
    res.update(arena_bytes=int(sess.arena_bytes), state_bytes=int(sess.state_bytes),
               isa=sess.isa)
    return res


def measure(models, recipes, size: str, repeats: int, warmup: int, calib: int,
            steps: int) -> list[dict]:
    """All rows; a model/recipe that fails to export is recorded with its error."""
    from edgekit.export.lower.models import example_feeds
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ek-measure-") as td:
        for model in models:
            for label in recipes:
                base = {"model": model, "size": size, "recipe": label}
                try:
                    fp32, q, specs, path = export_model(model, size, label, calib, Path(td))
                except (EdgekitError, ValueError) as exc:
                    rows.append({**base, "error": str(exc).splitlines()[0]})
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                feeds = example_feeds(model, fp32, specs, steps, 0)
                for spec in specs:
                    row = {**base, "graph": spec.name, "file_bytes": path.stat().st_size,
                           **time_graph(fp32, q, spec, path, feeds[spec.name], repeats, warmup)}
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("model", "recipe", "graph")} |
                                     {k: row[k]["median_us"] for k in
                                      ("runtime", "torch_q", "torch_fp32")} |
                                     {"x_q": row["speedup_vs_torch_q_paired"],
                                      "x_fp32": row["speedup_vs_torch_fp32_paired"]}),
                          flush=True)
                path.unlink()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--size", default="small")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--calib", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="distinct example feeds, cycled")
    ap.add_argument("--out", default="out/measure_runtime.json")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    recipes = [r for r in a.recipes.split(",") if r]
    bad = [r for r in recipes if r not in RECIPES]
    if bad or a.repeats < 1 or a.warmup < 0 or a.steps < 1 or a.calib < 1:
        print(f"error: bad arguments (recipes must be among {list(RECIPES)}; counts positive)",
              file=sys.stderr)
        return 2
    t0 = time.time()
    rows = measure(models, recipes, a.size, a.repeats, a.warmup, a.calib, a.steps)
    load = os.getloadavg()
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": " ".join(["scripts/measure_runtime.py", *(argv or sys.argv[1:])]),
              "torch": torch.__version__, "threads": 1, "loadavg": [round(x, 1) for x in load],
              "cpu_count": os.cpu_count(), "wall_s": round(time.time() - t0, 1), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(a.out), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
