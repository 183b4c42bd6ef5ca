"""`edgekit devices`: the device profiles and whether each is reachable now."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from edgekit import EdgekitError


@click.command("devices")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Probe reachability (a TCP connect for ssh, `adb devices` for adb).")
def devices(check):
    """List device profiles (device_profiles/*.yaml) and whether each is reachable."""
    from edgekit import devices as dev

    t = Table(title="device profiles")
    for col in ("name", "cpu", "isa", "reach", "reachable"):
        t.add_column(col)
    for name in dev.names():
        try:
            p = dev.load(name)
        except ValueError as exc:
            raise EdgekitError(str(exc)) from None
        cpu = p["cpu"]
        reach = p["reach"]["transport"]
        if check:
            ok, why = dev.reachable(p)
            state = f"[green]yes[/] ({why})" if ok else f"[red]no[/] ({why})"
        else:
            state = "not checked"
        if not (check and ok) and cpu["arch"] == "aarch64":
            state += "; bench falls back to qemu + estimate"
        t.add_row(name, f"{cpu['model']} x{cpu['cores']}", ",".join(cpu["isa"]), reach, state)
    Console().print(t)
