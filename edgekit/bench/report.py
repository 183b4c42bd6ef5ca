"""`edgekit report`: one self-contained HTML page from result JSONs, plots embedded as PNG.

Measured and estimated results are drawn in separate figures and tables: an estimate is
never placed on the same axis as a measurement. Simulated runs get one table keyed by model,
with the measured p50 beside the simulated latency in separate, labelled columns.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from edgekit._io import atomic_write_text
from edgekit.bench import schema
from edgekit.bench.output import row


def _name(r: dict) -> str:
    b = r["backend"]
    runner = " (Session)" if b["runner"] == "edgekit.runtime.Session" else ""
    return f"{r['model']['label']} · {b['name']}{runner} · {r['device']['profile']}"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _distributions(measured: list[dict]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(measured)))
    data = [[v / 1e3 for v in r["samples_us"]] for r in measured]
    ax.boxplot(data, orientation="horizontal", whis=(1, 99), showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.4})
    ax.set_yticks(range(1, len(measured) + 1), [_name(r) for r in measured], fontsize=8)
    ax.set_xlabel("latency per call (ms); box: p25-p75, whiskers: p1-p99")
    ax.set_xscale("log")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _size_latency(results: list[dict], estimated: bool) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_backend: dict[str, list[dict]] = {}
    for r in results:
        if r["model"]["format"] == "torch":  # the float source model has no file of its own
            continue
        by_backend.setdefault(r["backend"]["name"] + ("" if not estimated else " (est.)"),
                              []).append(r)
    for name, rs in sorted(by_backend.items()):
        xs = [r["model"]["bytes"] / 1e6 for r in rs]
        ys = [(r["estimate"]["total_us"] if estimated else r["stats"]["p50"]) / 1e3 for r in rs]
        ax.scatter(xs, ys, label=name, marker="x" if estimated else "o")
        for x, y, r in zip(xs, ys, rs):
            ax.annotate(r["model"]["label"], (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("model file (MB)")
    ax.set_ylabel("estimated step time (ms)" if estimated else "p50 latency (ms)")
    ax.set_yscale("log")
    ax.set_title("ESTIMATED (roofline), not measured" if estimated
                 else "measured (torch eager omitted: it runs the float source model)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for rw in rows:
        cells = []
        for c in cols:
            v = rw.get(c)
            text = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _binding(est: dict) -> str | None:
    """The resource holding the most of a simulated step's cycles."""
    by = est.get("cycles_by_bound") or {}
    return max(by, key=lambda k: (by[k], k)) if any(by.values()) else None


def side_by_side(measured: list[dict], simulated: list[dict]) -> list[dict]:
    """One row per simulated result with the measured p50 of the same model label beside
    it (issue 6: simulated and measured runs side by side). Where a label was measured by
    several backends or devices, the edgekit runtime's fastest p50 is shown and named."""
    rows = []
    for s in sorted(simulated, key=lambda r: (r["model"]["label"], r["device"]["profile"])):
        label = s["model"]["label"]
        same = [m for m in measured if m["model"]["label"] == label and m["stats"]]
        pick = [m for m in same if m["backend"]["name"] == "edgekit"] or same
        best = min(pick, key=lambda m: m["stats"]["p50"]) if pick else None
        est = s["estimate"]
        rows.append({
            "label": label,
            "measured_p50_us": best["stats"]["p50"] if best else None,
            "measured_on": (f"{best['backend']['name']} · {best['device']['profile']}"
                            if best else "not measured"),
            "simulated_us": est["total_us"], "simulated_on": s["device"]["profile"],
            "dram_bytes_per_step": est.get("dram_bytes_per_step"),
            "binding": _binding(est), "rtf": est.get("rtf"),
        })
    return rows


def render(results: list[dict]) -> str:
    """The HTML page for `results` (already validated)."""
    import matplotlib

    matplotlib.use("Agg")
    measured = [r for r in results if r["kind"] == "measured"]
    estimated = [r for r in results if r["kind"] == "estimated"]
    parts = ["<!doctype html><meta charset='utf-8'><title>edgekit bench report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
             "padding:2px 6px}.est{background:#fff6d5;padding:6px}</style>",
             "<h1>edgekit bench report</h1>"]
    if measured:
        cols = ["label", "backend", "runner", "device", "model_bytes", "threads", "count",
                "p50_us", "p90_us", "p99_us", "ci95_lo_us", "ci95_hi_us", "mean_us", "std_us",
                "unstable", "rtf", "load_us", "first_us", "peak_rss_kb", "arena_bytes"]
        parts += ["<h2>Measured</h2>", _table([row(r) for r in measured], cols),
                  "<h3>Latency distributions</h3>",
                  f"<img alt='latency distributions' src='data:image/png;base64,"
                  f"{_distributions(measured)}'>",
                  "<h3>Size vs latency</h3>",
                  f"<img alt='size vs latency' src='data:image/png;base64,"
                  f"{_size_latency(measured, False)}'>"]
        for r in measured:
            if r["per_op"]:
                top = sorted(r["per_op"], key=lambda o: -o["total_us"])[:12]
                parts += [f"<h3>Per-op time: {html.escape(_name(r))}</h3>",
                          _table(top, ["op", "name", "calls", "total_us"])]
    if estimated:
        cols = ["label", "backend", "device", "model_bytes", "estimate_us", "rtf"]
        parts += ["<h2 class='est'>ESTIMATED — roofline from the device profile, not measured"
                  "</h2>", _table([row(r) for r in estimated], cols),
                  f"<img alt='estimated size vs time' src='data:image/png;base64,"
                  f"{_size_latency(estimated, True)}'>"]
    simulated = [r for r in results if r["kind"] == "simulated"]
    if simulated:  # edgekit sim (docs/sim.md): deterministic cycle counts, not timings
        parts += ["<h2 class='est'>SIMULATED beside MEASURED — per model; the simulated "
                  "columns are the int8 accelerator simulator's, not measurements</h2>",
                  _table(side_by_side(measured, simulated),
                         ["label", "measured_p50_us", "measured_on", "simulated_us",
                          "simulated_on", "dram_bytes_per_step", "binding", "rtf"])]
    return "\n".join(parts) + "\n"


def write(paths: list[str], out: str | Path) -> int:
    """Read and validate every result in `paths`, write the HTML report to `out`."""
    results = [schema.load(p) for p in paths]
    if not results:
        raise ValueError("no results to report")
    atomic_write_text(out, render(results))
    return len(results)
