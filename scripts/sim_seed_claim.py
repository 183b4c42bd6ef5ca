"""Seed claim in simulation (docs/sim.md): int8 vs 5-bit (GQ recipe) vs 5-bit + 50 % zero
weights, for the small RNN-T and Conformer, on the accelerator profiles.

    python scripts/sim_seed_claim.py DIR [--profile npu-int8 ...] [--out table.json]

DIR holds `<model>-<variant>/model.ekm` from `edgekit export` (see docs/sim.md for the
commands). Prints a markdown table: stored weight bytes, DRAM bytes per second of audio and
latency per step, each with its change against int8, and GQ's on-device figures beside them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekit._io import atomic_write_json
from edgekit.sim import profile, simulate

VARIANTS = [("int8", "int8"), ("gq5", "5-bit (gq-5bit)"), ("gq5s50", "5-bit + 50 % zero")]
# One RNN-T step: the encoder turns 30 frames into 10; greedy decoding calls the joiner at
# least once per encoder frame and the predictor once per emitted token (assumed one).
GRAPHS = {"rnnt": "encoder,joiner*10,predictor", "conformer": None}
GQ = {"memory": -30.73, "latency": -31.75}  # GQ's 5-bit RNN-T vs 8-bit, on device


def _pct(v: float, base: float) -> str:
    return f"{100.0 * (v - base) / base:+.2f} %"


def run(root: Path, profiles: list[str]) -> list[dict]:
    """One row per (profile, model, variant) whose EKM file exists under `root`."""
    rows = []
    for pname in profiles:
        prof = profile.load(pname)
        for model, graph in GRAPHS.items():
            base = None
            for key, label in VARIANTS:
                path = root / f"{model}-{key}" / "model.ekm"
                if not path.is_file():
                    print(f"skip {path} (missing)", file=sys.stderr)
                    continue
                s = simulate.simulate_file(path, prof, graph)
                row = {"profile": pname, "model": model, "variant": label,
                       "stored_bytes": s["model_stored_bytes"],
                       "dram_bytes_per_s": s["streaming"]["dram_bytes_per_s_audio"],
                       "latency_us": s["steady"]["latency_us"], "rtf": s["streaming"]["rtf"],
                       "bound": {k: v for k, v in s["steady"]["cycles_by_bound"].items() if v}}
                base = base or row
                row["vs_int8"] = {k: _pct(row[k], base[k]) for k in
                                  ("stored_bytes", "dram_bytes_per_s", "latency_us")}
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """The markdown table of `run`'s rows."""
    out = ["| profile | model | variant | stored weights | Δ | DRAM / s audio | Δ | "
           "latency / step | Δ | RTF |", "|" + "---|" * 10]
    for r in rows:
        d = r["vs_int8"]
        out.append(f"| {r['profile']} | {r['model']} | {r['variant']} | "
                   f"{r['stored_bytes'] / 1e6:.3f} MB | {d['stored_bytes']} | "
                   f"{r['dram_bytes_per_s'] / 1e6:.2f} MB/s | {d['dram_bytes_per_s']} | "
                   f"{r['latency_us'] / 1e3:.3f} ms | {d['latency_us']} | {r['rtf']:.4f} |")
    out.append(f"\nGQ (5-bit RNN-T vs 8-bit, on device): memory {GQ['memory']:+.2f} %, "
               f"user-perceived latency {GQ['latency']:+.2f} %.")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--profile", action="append", default=None)
    ap.add_argument("--out", type=Path, default=None, help="Also write the rows as JSON.")
    a = ap.parse_args(argv)
    try:
        rows = run(a.root, a.profile or ["npu-int8", "ethos-u55-128"])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no <model>-<variant>/model.ekm under {a.root}", file=sys.stderr)
        return 2
    print(table(rows))
    if a.out:
        atomic_write_json(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
