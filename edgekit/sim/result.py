"""A simulation as an `edgekit bench` result (edgekit/bench/result.schema.json, kind
"simulated") and its per-layer CSV, so `edgekit report` and `compare` read it beside
measured runs."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from edgekit import __version__
from edgekit._io import atomic_write_text

LAYER_COLUMNS = ["graph", "op", "name", "unit", "macs", "weight_stored_bytes",
                 "weight_decoded_bytes", "act_in_bytes", "act_out_bytes", "resident",
                 "dram_bytes", "sram_bytes", "compute_cycles", "dram_cycles", "sram_cycles",
                 "decoder_cycles", "overhead_cycles", "cycles", "bound"]


def bench_result(path: Path, sim: dict, prof: dict, seed: int, graph: str | None) -> dict:
    """The schema-valid bench result of simulation `sim` of the EKM file `path`."""
    from edgekit.bench import facts, schema

    meta_model = {"path": str(path), "format": "ekm", "bytes": path.stat().st_size,
                  "sha256": facts.sha256(path), "label": path.stem,
                  "source": sim.get("meta_source"), "recipe": sim.get("meta_recipe")}
    steady = sim["steady"]
    block = {
        "method": "simulator", "graph": ",".join(sim["graphs"]),
        "total_us": steady["latency_us"], "cycles": steady["cycles"],
        "first_step_us": sim["first"]["latency_us"],
        "macs": steady["macs"], "stored_bytes": sim["model_stored_bytes"],
        "dram_bytes_per_step": steady["dram_bytes"],
        "dram_bytes_per_s_audio": (sim["streaming"] or {}).get("dram_bytes_per_s_audio"),
        "peak_sram_bytes": sim["residency"]["peak_sram_bytes"],
        "residency": sim["residency"], "cycles_by_bound": steady["cycles_by_bound"],
        "per_layer": sim["layers"],
        "assumptions": {k: v for k, v in prof.items() if k not in ("description",)},
        "functional": sim["functional"] or {"ok": False, "how": "not run"},
    }
    if sim["streaming"]:
        block["rtf"] = sim["streaming"]["rtf"]
        block["chunk_ms"] = sim["streaming"]["chunk_ms"]
    res = {
        "schema": schema.SCHEMA_ID, "kind": "simulated",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": meta_model,
        "backend": {"name": "edgekit", "runner": f"edgekit sim ({prof['name']})",
                    "version": __version__, "isa": "ref", "kernel": None,
                    "graph": block["graph"], "options": {}},
        "device": {"profile": prof["name"], "transport": {"kind": "none"},
                   "cpu": {"model": prof["description"], "arch": "accelerator"},
                   "os": None, "governor": None, "freq_mhz": float(prof["clock_mhz"]),
                   "temperature_c": None},
        "host": facts.host(),
        "flags": {"threads": 1, "affinity": None, "warmup": 0, "warmup_time_s": 0.0,
                  "min_runs": 1, "min_time_s": 0.0, "max_time_s": 1.0, "stream": True,
                  "paced": False, "seed": seed, "graph": graph, "isa": "ref"},
        "phases": {"load_us": None, "first_us": None}, "samples_us": [], "stats": None,
        "streaming": None,
        "memory": {"peak_rss_kb": None, "arena_bytes": None, "state_bytes": None,
                   "model_file_bytes": path.stat().st_size},
        "per_op": None, "estimate": block, "accuracy": None,
        "notes": [f"simulated on the {prof['name']} accelerator profile: cycle counts from "
                  "the cost model (docs/sim.md), not a measurement"],
    }
    return schema.validate(res, f"simulation of {path.name}")


def layers_csv(sim: dict) -> str:
    """The per-layer table of `sim` as CSV text."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LAYER_COLUMNS, extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in sim["layers"]:
        w.writerow(r)
    return buf.getvalue()


def write_layers_csv(sim: dict, path: str | Path) -> Path:
    """Write `layers_csv(sim)` atomically."""
    atomic_write_text(path, layers_csv(sim))
    return Path(path)
