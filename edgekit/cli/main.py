"""The click group. Wiring only: each command lives in its own module."""

from __future__ import annotations

import os
import sys

import click

from edgekit import EdgekitError, __version__


class _Group(click.Group):
    """Turns EdgekitError (user error) into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            _check_isa_override()
            return super().invoke(ctx)
        except EdgekitError as exc:
            click.echo(f"edgekit: error: {exc}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            # Bad options of a subcommand: one line, pointing at its --help.
            where = exc.ctx.command_path if exc.ctx else "edgekit"
            click.echo(f"edgekit: error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(2)


def _check_isa_override() -> None:
    """A bad EDGEKIT_ISA is a user error: report it before any command runs."""
    if not os.environ.get("EDGEKIT_ISA"):
        return
    from edgekit import kernels

    try:
        kernels.isa()
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgekit")
def cli() -> None:
    """edgekit - take speech models from PyTorch to the edge.

    Compress (1-8-bit packed weights, pruning, QAT), export (EKM, ONNX,
    TFLite with parity checks), run (C++ runtime, ek-run), benchmark (this
    host, SSH/adb devices, qemu + estimate, simulated int8 accelerator) and
    evaluate streaming ASR models and neural codecs.

    \b
    Typical flow:
      edgekit export conformer --recipe mixed --format ekm,onnx -o out/m
      edgekit inspect out/m/model.ekm
      edgekit bench out/m --device x86-host
      edgekit report out/bench/*.json -o report.html
    """


def _register() -> None:
    from edgekit.cli import bench_kernels, info

    cli.add_command(info.info)
    cli.add_command(bench_kernels.bench_kernels)
    from edgekit.cli.inspect import inspect
    cli.add_command(inspect)
    from edgekit.cli import bench, compare, devices, report
    cli.add_command(bench.bench)
    cli.add_command(devices.devices)
    cli.add_command(report.report)
    cli.add_command(compare.compare)
    from edgekit.cli.export import export
    cli.add_command(export)
    from edgekit.cli import data, eval as eval_, train
    cli.add_command(data.data)
    cli.add_command(train.train_cmd)
    cli.add_command(eval_.eval_cmd)
    from edgekit.cli.run import run
    cli.add_command(run)
    from edgekit.cli.sim import sim
    cli.add_command(sim)


_register()

if __name__ == "__main__":  # pragma: no cover
    cli()
