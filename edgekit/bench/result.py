"""Building one bench result (result.schema.json) from a runner's raw JSON.

A measured result carries every sample, its statistics and, for streaming runs, RTF and the
paced-mode lag; the harness builds estimated results from `base` + the estimate block.
"""

from __future__ import annotations

import time

import numpy as np

from edgekit import EdgekitError
from edgekit.bench import facts, schema, stats


def _backend_block(backend: str, raw: dict, opts) -> dict:
    from importlib import import_module

    name = "edgekit" if backend in ("edgekit", "session") else backend
    mod = import_module(f"edgekit.bench.backends.{'edgekit' if name == 'edgekit' else name}")
    return {"name": name, "runner": raw.get("runner", backend),
            "version": raw.get("version") or raw.get("ek_run_version") or mod.version(),
            "isa": raw.get("isa"), "kernel": raw.get("kernel"),
            "graph": raw.get("graph") or opts.graph, "options": raw.get("options") or {}}


def base(backend, model, profile, t, opts, meta, dev_facts, kind, notes) -> dict:
    """The blocks every result has: schema, kind, model, device, host, flags, notes."""
    fmt = "torch" if backend == "torch" else model.suffix[1:]
    return {
        "schema": schema.SCHEMA_ID, "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"path": str(model), "format": fmt, "bytes": model.stat().st_size,
                  "sha256": facts.sha256(model), "label": model.stem,
                  "source": meta.get("source"), "recipe": (meta.get("recipe") or {}).get("name")},
        "device": {"profile": profile["name"],
                   "transport": t.describe() if t is not None else {"kind": "none"},
                   "cpu": profile["cpu"], **dev_facts},
        "host": facts.host(),
        "flags": {"threads": opts.threads, "affinity": opts.affinity, "warmup": opts.warmup,
                  "warmup_time_s": opts.warmup_time_s, "min_runs": opts.min_runs,
                  "min_time_s": opts.min_time_s, "max_time_s": opts.max_time_s,
                  "stream": opts.stream, "paced": opts.paced, "seed": opts.seed,
                  "graph": opts.graph, "isa": opts.isa},
        "accuracy": None, "notes": notes,
    }


def measured(backend, model, profile, t, opts, meta, raw, chunk_ms, dev_facts, notes) -> dict:
    """A measured result from a runner's raw JSON (ek-run keys); validated."""
    samples = [float(v) for v in raw["iters_us"]]
    if not samples:
        raise EdgekitError(f"{backend} on {model.name} returned no samples")
    res = base(backend, model, profile, t, opts, meta, dev_facts, "measured", notes)
    st = stats.summarize(samples, seed=opts.seed)
    streaming = None
    if opts.stream and chunk_ms:
        paced = None
        if raw.get("lag_us"):
            lag = [max(0.0, float(v)) for v in raw["lag_us"]]
            half = len(lag) // 2
            # Keeping up: the lag does not grow over the run. Scheduler wake-up jitter makes
            # single lags noisy, so compare the medians of the two halves; falling behind
            # adds (step − chunk) per chunk and soon exceeds one chunk.
            growth = (float(np.median(lag[half:])) - float(np.median(lag[:half]))
                      if half else 0.0)
            paced = {"lag_us": lag, "lag": stats.summarize(lag, seed=opts.seed),
                     "final_lag_us": lag[-1], "keeps_up": bool(growth < chunk_ms * 1e3)}
        streaming = {"chunk_ms": chunk_ms, "rtf": st["p50"] / (chunk_ms * 1e3),
                     "chunk_latency": st, "paced": paced}
    res.update({
        "backend": _backend_block(backend, raw, opts),
        "phases": {"load_us": raw.get("load_us"), "first_us": raw.get("first_us")},
        "samples_us": samples, "stats": st, "streaming": streaming,
        "memory": {"peak_rss_kb": raw.get("peak_rss_kb"), "arena_bytes": raw.get("arena_bytes"),
                   "state_bytes": raw.get("state_bytes"), "model_file_bytes": model.stat().st_size},
        "per_op": raw.get("per_op") if raw.get("per_op") else None,
        "estimate": None,
    })
    return schema.validate(res, f"{backend} result for {model.name}")
