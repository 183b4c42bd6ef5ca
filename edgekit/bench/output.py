"""Writing results: one JSON per result (validated, atomic), a CSV of all, a rich table."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.bench import schema

CSV_COLUMNS = ["label", "backend", "runner", "device", "kind", "format", "model_bytes",
               "threads", "load_us", "first_us", "count", "p50_us", "p90_us", "p99_us",
               "mean_us", "std_us", "trimmed_mean_us", "ci95_lo_us", "ci95_hi_us", "unstable",
               "rtf", "peak_rss_kb", "arena_bytes", "estimate_us"]


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def file_name(r: dict) -> str:
    """<label>.<backend>[-session].<device>[.<graph>].json"""
    b = r["backend"]
    name = b["name"] + ("-session" if b["runner"] == "edgekit.runtime.Session" else "")
    parts = [r["model"]["label"], name, r["device"]["profile"]]
    if r["flags"].get("graph"):  # only when the user picked one (codec encode/decode)
        parts.append(r["flags"]["graph"])
    return _safe(".".join(parts)) + ".json"


def row(r: dict) -> dict:
    """One CSV row (flat) of a result; empty cells for what the result does not have."""
    st = r["stats"] or {}
    ci = st.get("median_ci95") or [None, None]
    return {
        "label": r["model"]["label"], "backend": r["backend"]["name"],
        "runner": r["backend"]["runner"], "device": r["device"]["profile"], "kind": r["kind"],
        "format": r["model"]["format"], "model_bytes": r["model"]["bytes"],
        "threads": r["flags"]["threads"], "load_us": r["phases"]["load_us"],
        "first_us": r["phases"]["first_us"], "count": st.get("count"),
        "p50_us": st.get("p50"), "p90_us": st.get("p90"), "p99_us": st.get("p99"),
        "mean_us": st.get("mean"), "std_us": st.get("std"),
        "trimmed_mean_us": st.get("trimmed_mean"), "ci95_lo_us": ci[0], "ci95_hi_us": ci[1],
        "unstable": st.get("unstable"),
        "rtf": (r["streaming"] or {}).get("rtf") or (r["estimate"] or {}).get("rtf"),
        "peak_rss_kb": r["memory"]["peak_rss_kb"], "arena_bytes": r["memory"]["arena_bytes"],
        "estimate_us": (r["estimate"] or {}).get("total_us"),
    }


def write(results: list[dict], out_dir: str | Path) -> list[Path]:
    """Write each result as JSON (validated first) and all of them as results.csv."""
    out = Path(out_dir)
    for r in results:  # all first: one bad result must not leave the others half-written
        schema.validate(r)
    paths = []
    for r in results:
        p = out / file_name(r)
        atomic_write_json(p, r)
        paths.append(p)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    w.writeheader()
    for r in results:
        w.writerow({k: ("" if v is None else v) for k, v in row(r).items()})
    atomic_write_text(out / "results.csv", buf.getvalue())
    return paths


def _fmt(v, unit="") -> str:
    if v is None:
        return "-"
    if unit == "us":
        return f"{v / 1e3:.3f} ms" if v >= 1e3 else f"{v:.1f} µs"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(results: list[dict]):
    """A rich Table: measured rows with their stats; estimated rows say so in every cell."""
    from rich.table import Table

    t = Table(title="edgekit bench")
    for col in ("model", "backend", "device", "kind", "p50", "p90", "p99", "95% CI (p50)",
                "RTF", "load", "first", "peak RSS", "n"):
        t.add_column(col, justify="left" if col in ("model", "backend", "device", "kind")
                     else "right", overflow="fold")
    for r in results:
        st = r["stats"]
        session = r["backend"]["runner"] == "edgekit.runtime.Session"
        who = (r["model"]["label"], r["backend"]["name"] + (" (Session)" if session else ""),
               r["device"]["profile"])
        if r["kind"] in ("estimated", "simulated"):
            e = r["estimate"]
            tag = "est." if r["kind"] == "estimated" else "sim."
            t.add_row(*who, f"[yellow]{r['kind'].upper()}[/]",
                      f"~{_fmt(e['total_us'], 'us')} ({tag})",
                      "-", "-", "-", _fmt(e.get("rtf")) + f" ({tag})" if e.get("rtf") else "-",
                      "-", "-", "-", "0")
            continue
        ci = st["median_ci95"]
        flag = " [red]unstable[/]" if st["unstable"] else ""
        rss = r["memory"]["peak_rss_kb"]
        t.add_row(*who, "measured", _fmt(st["p50"], "us") + flag, _fmt(st["p90"], "us"),
                  _fmt(st["p99"], "us"), f"{_fmt(ci[0], 'us')} – {_fmt(ci[1], 'us')}",
                  _fmt((r["streaming"] or {}).get("rtf")),
                  _fmt(r["phases"]["load_us"], "us"), _fmt(r["phases"]["first_us"], "us"),
                  f"{rss / 1024:.1f} MiB" if rss else "-", str(st["count"]))
    return t


def per_op_table(r: dict, top: int = 10):
    """The `top` ops by total time of one result (edgekit runtime only), or None."""
    if not r.get("per_op"):
        return None
    from rich.table import Table

    ops = sorted(r["per_op"], key=lambda o: -o["total_us"])
    total = sum(o["total_us"] for o in ops) or 1.0
    t = Table(title=f"per-op time: {r['model']['label']} ({r['backend']['runner']}), "
                    f"top {min(top, len(ops))} of {len(ops)}")
    for col in ("op", "name", "calls", "total", "share"):
        t.add_column(col, justify="right" if col in ("calls", "total", "share") else "left",
                     overflow="fold")
    for o in ops[:top]:
        t.add_row(o["op"], o["name"], str(o["calls"]), _fmt(o["total_us"], "us"),
                  f"{100 * o['total_us'] / total:.1f} %")
    return t


def spread(runs: list[list[dict]]) -> list[dict]:
    """Run-to-run spread of p50 per (label, backend, runner, device) over repeated runs:
    (max − min) / median of the repeats' p50s. Estimated results have no p50 and are left out."""
    import statistics

    groups: dict[tuple, list[float]] = {}
    for results in runs:
        for r in results:
            if r["kind"] == "measured":
                key = (r["model"]["label"], r["backend"]["name"], r["backend"]["runner"],
                       r["device"]["profile"])
                groups.setdefault(key, []).append(r["stats"]["p50"])
    rows = []
    for (label, backend, runner, device), p50s in groups.items():
        med = statistics.median(p50s)
        rows.append({"label": label, "backend": backend, "runner": runner, "device": device,
                     "repeats": len(p50s), "p50_median_us": med,
                     "spread": (max(p50s) - min(p50s)) / med if med else 0.0})
    return rows


def spread_table(runs: list[list[dict]]):
    """A rich Table of `spread(runs)`."""
    from rich.table import Table

    t = Table(title=f"p50 run-to-run spread over {len(runs)} repeats")
    for col in ("model", "backend", "device", "repeats", "p50 (median)", "spread"):
        t.add_column(col, justify="right" if col in ("repeats", "p50 (median)", "spread")
                     else "left")
    for row_ in spread(runs):
        t.add_row(row_["label"], row_["backend"], row_["device"], str(row_["repeats"]),
                  _fmt(row_["p50_median_us"], "us"), f"{100 * row_['spread']:.1f} %")
    return t
