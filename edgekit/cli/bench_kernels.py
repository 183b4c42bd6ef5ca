"""`edgekit bench-kernels`: edgekit's packed kernels against peer runtimes, one thread."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgekit import EdgekitError
from edgekit._io import atomic_write_json
from edgekit.cli import options

QUICK = {"bits": [8, 4, 2, 1], "sparsity": [0.0, 0.5], "min_time": 0.05}
FULL = {"bits": [8, 6, 5, 4, 3, 2, 1], "sparsity": [0.0, 0.5, 0.75], "min_time": 0.3}


def _int_list(text: str, what: str, lo: int, hi: int) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EdgekitError(f"--{what} takes comma-separated integers, got {text!r}") from None
    bad = [v for v in vals if not lo <= v <= hi]
    if not vals or bad:
        raise EdgekitError(f"--{what} values must be in {lo}..{hi}, got {text!r}")
    return sorted(set(vals), reverse=True)


def _float_list(text: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EdgekitError(f"--{what} takes comma-separated numbers, got {text!r}") from None
    if not vals or any(not 0.0 <= v < 1.0 for v in vals):
        raise EdgekitError(f"--{what} values must be in [0, 1), got {text!r}")
    return sorted(set(vals))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 60.0:  # also rejects nan
        raise EdgekitError(f"--min-time must be a number of seconds in (0, 60], got {text!r}")
    return value


def _peer_list(text: str, known: tuple[str, ...]) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if names == ["all"]:
        return list(known)
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise EdgekitError(f"--peers: unknown {', '.join(unknown) or 'empty list'}; "
                           f"choose from {', '.join(known)}, 'all' or 'none'")
    return [n for n in known if n in names]


def _host() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    versions = []
    for pkg in ("onnxruntime", "ai-edge-litert", "torch"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return f"{cpu}, {os.cpu_count()} cores; {', '.join(versions)}"


def _load() -> str:
    # Other work on the machine shows up as noise in every timing; say how busy it was.
    try:
        return "load average (1 min) {:.2f}".format(os.getloadavg()[0])
    except OSError:
        return "load average unavailable"


@click.command("bench-kernels")
@options.quick
@options.json_out
@click.option("--shapes", "shapes_file", default=None, metavar="FILE",
              help="File of 'M K N' lines replacing the default shapes.")
@click.option("--bits", default=None, help="Weight bit widths, e.g. 8,4,2 (default 8,6,5,4,3,2,1).")
@click.option("--sparsity", default=None, help="Zero-weight fractions, e.g. 0,0.5 (default 0,0.5,0.75).")
@click.option("--peers", default="all", show_default=True,
              help="Comma-separated peers to compare against, 'all' or 'none'.")
@click.option("--min-time", default=None, metavar="SECONDS",
              help="Seconds to measure each cell (default 0.3; 0.05 with --quick).")
@click.option("--isa", default=None, help="edgekit kernel ISA to time (default: best available).")
def bench_kernels(quick: bool, json_path: str | None, shapes_file: str | None, bits: str | None,
                  sparsity: str | None, peers: str, min_time: str | None, isa: str | None) -> None:
    """Time edgekit's packed int8 x 1-8-bit linear kernels against onnxruntime, LiteRT and
    torch on the same random weights, one thread, every result checked before it is timed.

    Prints a table per shape and PASS/MISS lines for the project's kernel
    performance targets (docs/kernels.md).
    """
    from edgekit.bench.kernels import cases, runner, table
    from edgekit.bench.kernels.peer import Options
    from edgekit.bench.kernels.timing import Budget

    mode = QUICK if quick else FULL
    try:
        if shapes_file:
            shapes = cases.parse_shapes_file(shapes_file)
        else:
            shapes = list(cases.QUICK_SHAPES) if quick else cases.default_shapes()
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None
    bit_list = _int_list(bits, "bits", 1, 8) if bits else mode["bits"]
    sparsities = _float_list(sparsity, "sparsity") if sparsity else mode["sparsity"]
    peer_list = _peer_list(peers, runner.PEERS)
    min_time_s = mode["min_time"] if min_time is None else _seconds(min_time)
    if isa is not None:
        from edgekit.bench.kernels import edgekit_impl
        try:
            edgekit_impl.validate_isa(isa)
        except ValueError as exc:
            raise EdgekitError(str(exc)) from None

    config = runner.Config(shapes=shapes, bits=bit_list, sparsities=sparsities,
                           impls=["edgekit", *peer_list],
                           budget=Budget(warmup=3 if quick else 10, min_time_s=min_time_s),
                           opts=Options(isa=isa))
    # Off a terminal (CI logs, files) rich would wrap the table at 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=140)
    out.print(f"host: {_host()}; {_load()} at start", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("preparing", total=None)

        def progress(desc: str, done: int, total: int) -> None:
            bar.update(task, description=desc, completed=done, total=total)

        result = runner.run(config, on_progress=progress)
    records = table.annotate(result.records)
    table.render(records, out)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)
    out.print(f"{_load()} at end", highlight=False)
    table.print_targets(table.targets(records), out)
    if json_path:
        try:
            atomic_write_json(json_path, records)
        except OSError as exc:
            raise EdgekitError(f"cannot write {json_path}: {exc.strerror or exc}") from None
        out.print(f"wrote {len(records)} records to {json_path}", highlight=False)
    if result.failures:
        for f in result.failures:
            out.print(f"[red]FAILED[/] {f}", highlight=False)
        raise click.ClickException(f"{len(result.failures)} cell(s) gave a wrong answer or "
                                   "failed; they are not in the results")
