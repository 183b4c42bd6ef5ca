"""`edgekit sim run|compare`: the int8 accelerator simulator (docs/sim.md); also the
`edgekit bench --device npu-int8` path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edgekit import EdgekitError


def _profile(device: str) -> dict:
    from edgekit.devices import accelerator

    try:
        return accelerator.load(device)
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None


def _ekm(path: str) -> Path:
    p = Path(path)
    if p.suffix != ".ekm":
        raise EdgekitError(f"{path}: the simulator reads .ekm files")
    if not p.is_file():
        raise EdgekitError(f"{path}: no such file")
    return p


def _simulate(path: Path, prof: dict, graph, residency, chunk_ms, functional_steps, seed):
    from edgekit.sim import simulate

    try:
        return simulate.simulate_file(path, prof, graph, residency, chunk_ms,
                                      functional_steps, seed)
    except ValueError as exc:  # includes the runtime's RuntimeModelError
        raise EdgekitError(str(exc).splitlines()[0]) from None


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _summary(sim: dict) -> Table:
    st, res = sim["steady"], sim["residency"]
    calls = {g: sim["graphs"].count(g) for g in dict.fromkeys(sim["graphs"])}
    t = Table(title=f"SIMULATED {Path(sim['model']).name} on {sim['profile']} ("
                    + ", ".join(g if n == 1 else f"{g} x{n}" for g, n in calls.items()) + ")")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [("cycles / step (steady)", f"{st['cycles']:,}"),
            ("latency / step", f"{st['latency_us']:.1f} us"),
            ("first step", f"{sim['first']['latency_us']:.1f} us"),
            ("MACs / step", f"{st['macs']:,}"),
            ("stored weight bytes (model)", _fmt_bytes(sim["model_stored_bytes"])),
            ("decoded weight bytes / step", _fmt_bytes(st["weight_decoded_bytes"])),
            ("DRAM bytes / step", _fmt_bytes(st["dram_bytes"])),
            ("resident weights", f"{_fmt_bytes(res['resident_bytes'])} "
                                 f"({'on' if res['enabled'] else 'off'})"),
            ("peak SRAM", _fmt_bytes(res["peak_sram_bytes"])),
            ("cycles by bound", ", ".join(f"{k} {v:,}" for k, v in
                                          st["cycles_by_bound"].items() if v))]
    if sim["streaming"]:
        s = sim["streaming"]
        rows += [("chunk", f"{s['chunk_ms']:g} ms"), ("RTF", f"{s['rtf']:.5f}"),
                 ("DRAM bytes / s audio", _fmt_bytes(s["dram_bytes_per_s_audio"]))]
    if sim["functional"]:
        rows.append(("functional (bit-exact vs runtime)",
                     "ok" if sim["functional"]["ok"] else "MISMATCH"))
    for r in rows:
        t.add_row(*r)
    return t


_COMMON = [
    click.option("--device", "device", default="npu-int8", show_default=True,
                 help="Accelerator profile name or .yaml path."),
    click.option("--graph", default=None,
                 help="Graph calls per step: NAME, NAME*COUNT, comma lists, or 'all' "
                      "(default: META's streaming graph)."),
    click.option("--residency", type=click.Choice(["profile", "on", "off"]),
                 default="profile", show_default=True,
                 help="Keep weights resident in SRAM across steps when they fit."),
    click.option("--chunk-ms", type=click.FloatRange(0.001, 1e6), default=None,
                 help="Audio per step when META does not say."),
]


def _common(fn):
    for opt in reversed(_COMMON):
        fn = opt(fn)
    return fn


_RES = {"profile": None, "on": True, "off": False}


@click.group("sim")
def sim():
    """Int8 accelerator simulator: bit-exact runs and deterministic cycle/traffic counts."""


@sim.command("run")
@click.argument("model")
@_common
@click.option("--steps", type=click.IntRange(0, 1000), default=2, show_default=True,
              help="Functional check: streaming steps run bit-exactly (0: skip).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the full simulation (per layer) as JSON.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
              help="Write the per-layer table as CSV.")
def run_cmd(model, device, graph, residency, chunk_ms, steps, seed, json_out, csv_out):
    """Simulate MODEL.ekm on an accelerator profile and print the totals."""
    from edgekit._io import atomic_write_json
    from edgekit.sim import result

    prof = _profile(device)
    s = _simulate(_ekm(model), prof, graph, _RES[residency], chunk_ms, steps, seed)
    if json_out:
        atomic_write_json(json_out, s)
    if csv_out:
        result.write_layers_csv(s, csv_out)
    Console(width=120).print(_summary(s))
    if s["functional"] and not s["functional"]["ok"]:
        raise EdgekitError("functional simulation differs from the runtime: "
                           + json.dumps(s["functional"]["graphs"]))


@sim.command("compare")
@click.argument("a")
@click.argument("b")
@_common
@click.option("--top", type=click.IntRange(1, 10_000), default=15, show_default=True,
              help="Layers shown, by largest cycle change.")
def compare_cmd(a, b, device, graph, residency, chunk_ms, top):
    """Per-layer deltas of B against A (e.g. int8 vs mixed) on one accelerator profile."""
    from edgekit.sim.compare import compare

    prof = _profile(device)
    sa = _simulate(_ekm(a), prof, graph, _RES[residency], chunk_ms, 0, 0)
    sb = _simulate(_ekm(b), prof, graph, _RES[residency], chunk_ms, 0, 0)
    c = compare(sa, sb)
    out = Console(width=160)
    # Exports are all called model.ekm: name them by path when the file names agree.
    la, lb = (Path(a).name, Path(b).name) if Path(a).name != Path(b).name else (a, b)
    t = Table(title=f"SIMULATED on {prof['name']}: A = {la}, B = {lb}")
    for col in ("quantity", "A", "B", "delta", "%"):
        t.add_column(col, justify="left" if col == "quantity" else "right")
    for k, v in c["totals"].items():
        t.add_row(k, f"{v['a']:,.1f}", f"{v['b']:,.1f}", f"{v['delta']:+,.1f}",
                  "-" if v["pct"] is None else f"{v['pct']:+.2f}")
    out.print(t)
    lt = Table(title=f"layers by |cycle change| (top {top} of {len(c['layers'])})")
    for col in ("graph", "layer", "op", "cycles A", "cycles B", "delta", "bound A->B",
                "stored A", "stored B"):
        lt.add_column(col, overflow="fold")
    for r in sorted(c["layers"], key=lambda r: -abs(r["cycles_delta"]))[:top]:
        lt.add_row(r["graph"], r["name"], r["op"], f"{r['cycles_a']:,}", f"{r['cycles_b']:,}",
                   f"{r['cycles_delta']:+,}", f"{r['bound_a']}->{r['bound_b']}",
                   f"{r['weight_stored_bytes_a']:,}", f"{r['weight_stored_bytes_b']:,}")
    out.print(lt)


def is_accelerator(device: str) -> bool:
    """Whether `--device` names an accelerator profile (then bench simulates)."""
    from edgekit.devices import accelerator

    return accelerator.find(device) is not None


def bench_simulated(models, device, out_dir, graph, chunk_ms, seed, quiet) -> None:
    """`edgekit bench MODELS --device <accelerator>`: one simulated bench result per .ekm
    (plus a per-layer CSV beside it), results.csv, and the bench table."""
    from edgekit.bench import harness, output
    from edgekit.sim import result

    prof = _profile(device)
    found = harness.find_models(list(models))
    paths = [p for p in found if p.suffix == ".ekm"]
    for p in found:
        if p.suffix != ".ekm":
            click.echo(f"{p}: skipped (the simulator reads .ekm files)", err=True)
    if not paths:
        raise EdgekitError("the accelerator simulator reads .ekm files; none given")
    results, sims = [], []
    for p in paths:
        s = _simulate(p, prof, graph, None, chunk_ms, 2, seed)
        results.append(result.bench_result(p, s, prof, seed, graph))
        sims.append(s)
    # output.write validates every result before writing any; the per-layer CSVs follow it
    # so that a failure anywhere above leaves no partial output behind.
    written = output.write(results, out_dir)
    for r, s in zip(results, sims):
        stem = Path(out_dir) / output.file_name(r)
        result.write_layers_csv(s, stem.with_suffix(".layers.csv"))
    out = Console(quiet=quiet) if sys.stdout.isatty() else Console(width=200, quiet=quiet)
    out.print(output.table(results))
    click.echo(f"wrote {len(written)} simulated result(s), per-layer CSVs and results.csv "
               f"to {out_dir}", err=True)
