"""`edgekit bench MODELS... --device NAME`: measure models on a device (docs/bench.md)."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from edgekit import EdgekitError

DEFAULT_BACKENDS = "edgekit,onnxruntime,litert,torch"


def _backends(text: str) -> tuple[str, ...]:
    from edgekit.bench.harness import BACKENDS

    if text == "all":
        return BACKENDS
    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in vals if v not in BACKENDS]
    if not vals or bad:
        raise EdgekitError(f"--backend takes a comma list of {', '.join(BACKENDS)} or 'all', "
                           f"got {text!r}")
    return vals


def _affinity(text: str | None) -> list[int] | None:
    if text is None:
        return None
    import os

    try:
        cpus = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise EdgekitError(f"--affinity takes comma-separated CPU numbers, got {text!r}") \
            from None
    n = os.cpu_count() or 1
    if not cpus or any(not 0 <= c < n for c in cpus):
        raise EdgekitError(f"--affinity CPUs must be in 0..{n - 1}, got {text!r}")
    return cpus


@click.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--device", default="x86-host", show_default=True,
              help="Device profile name (see `edgekit devices`) or a profile .yaml path.")
@click.option("--backend", "backend", default=DEFAULT_BACKENDS, show_default=True,
              help="Comma list of edgekit, session, onnxruntime, litert, torch; or 'all'.")
@click.option("-o", "--out", "out_dir", default="out/bench", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the JSON results + CSV.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--affinity", default=None, help="Pin the runner to CPUs, e.g. 0,1 (ek-run via taskset).")
@click.option("--warmup", type=click.IntRange(0, 1_000_000), default=5, show_default=True,
              help="Warm-up iterations (not kept).")
@click.option("--warmup-time", type=click.FloatRange(0, 3600), default=0.0, show_default=True,
              help="Also warm up for at least this many seconds.")
@click.option("--min-runs", type=click.IntRange(1, 10_000_000), default=20, show_default=True)
@click.option("--min-time", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              help="Measure for at least this many seconds.")
@click.option("--max-time", type=click.FloatRange(0.001, 36000), default=30.0,
              show_default=True, help="Stop measuring after this many seconds.")
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Carry streaming state between calls (RTF and per-chunk latency).")
@click.option("--paced", is_flag=True, help="Audio-paced: feed chunks in real time, report lag.")
@click.option("--chunk-ms", type=click.FloatRange(0.001, 1e6), default=None,
              help="Audio per step when the model's META does not say.")
@click.option("--graph", default=None, help="Graph to run (default: META's streaming graph).")
@click.option("--isa", default=None, help="Force an edgekit kernel ISA (ek-run --isa).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--insecure-accept-host-key", is_flag=True,
              help="SSH: accept an unknown host key (default: known_hosts must list it).")
@click.option("--known-hosts", type=click.Path(dir_okay=False), default=None,
              help="SSH: known_hosts file (default ~/.ssh/known_hosts).")
@click.option("--repeat", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Run everything N times (out/r1..rN) and print the p50 spread.")
@click.option("--per-op", is_flag=True, help="Also print the top ops by time (edgekit).")
@click.option("--quiet", is_flag=True, help="No table, no progress.")
def bench(models, device, backend, out_dir, threads, affinity, warmup, warmup_time, min_runs,
          min_time, max_time, stream, paced, chunk_ms, graph, isa, seed,
          insecure_accept_host_key, known_hosts, repeat, per_op, quiet):
    """Benchmark MODELS (.ekm/.onnx/.tflite files or folders) on a device.

    Phases load / first / steady are reported apart; every sample is kept in the JSON.
    A device that cannot be reached gets a functional qemu run and a roofline estimate,
    labelled "estimated" everywhere.
    """
    from edgekit.bench import harness, output
    from edgekit.cli import sim

    if sim.is_accelerator(device):  # int8 accelerator profile: simulate (docs/sim.md)
        return sim.bench_simulated(models, device, out_dir, graph, chunk_ms, seed, quiet)
    if max_time < min_time:
        raise EdgekitError(f"--max-time ({max_time}) must be >= --min-time ({min_time})")
    opts = harness.Options(
        device=device, backends=_backends(backend), threads=threads,
        affinity=_affinity(affinity), warmup=warmup, warmup_time_s=warmup_time,
        min_runs=min_runs, min_time_s=min_time, max_time_s=max_time, stream=stream,
        paced=paced, seed=seed, graph=graph, isa=isa, chunk_ms=chunk_ms,
        insecure_accept_host_key=insecure_accept_host_key, known_hosts=known_hosts)
    console = Console(stderr=True, quiet=quiet)
    runs = []
    for k in range(1, repeat + 1):
        with console.status("starting") as status:
            def progress(msg, k=k):
                status.update(msg if repeat == 1 else f"repeat {k}/{repeat} {msg}")
            runs.append(harness.run(list(models), opts, progress=progress))
    paths = []
    for k, results in enumerate(runs, 1):
        paths += output.write(results, out_dir if repeat == 1 else f"{out_dir}/r{k}")
    # Piped output is read in files and logs: do not squeeze the table to 80 columns.
    out = Console(quiet=quiet) if sys.stdout.isatty() else Console(width=200, quiet=quiet)
    out.print(output.table(runs[-1]))
    if per_op:
        for r in runs[-1]:
            t = output.per_op_table(r)
            if t is not None:
                out.print(t)
    if repeat > 1:
        out.print(output.spread_table(runs))
    click.echo(f"wrote {len(paths)} result(s) and results.csv to {out_dir}"
               + (f"/r1..r{repeat}" if repeat > 1 else ""), err=True)
