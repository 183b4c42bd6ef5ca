"""`edgekit info`: what this build can do on this machine."""

from __future__ import annotations

import json
import platform

import click

from edgekit import __version__


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json: bool) -> None:
    """Show the edgekit version, the CPU's kernel ISAs and the one in use."""
    from edgekit import kernels

    data = {
        "edgekit": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "isa": kernels.isa(),
        "isas_available": kernels.available_isas(),
        "isas_compiled": kernels.compiled_isas(),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if isinstance(value, list):
            value = ", ".join(value)
        click.echo(f"{key:15s} {value}")
