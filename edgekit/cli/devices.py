"""`edgekit devices`: the device profiles and whether each is reachable now."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from edgekit import EdgekitError


@click.command("devices")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Probe reachability (a TCP connect for ssh, `adb devices` for adb).")
def devices(check):
    """List device profiles (CPU ones with whether each is reachable now, then the simulated
    accelerators)."""
    from edgekit import devices as dev
    from edgekit.devices import accelerator

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
    # Accelerators have no transport: there is nothing to reach, `edgekit bench` simulates.
    for name in accelerator.names():
        try:
            a = accelerator.load(name)
        except ValueError as exc:
            raise EdgekitError(str(exc)) from None
        arr = a["mac_array"]
        t.add_row(name, f"{arr['rows']}x{arr['cols']} int8 MACs @ {a['clock_mhz']:g} MHz",
                  "int8", "accelerator (simulated)", "n/a: `edgekit bench` simulates it")
    # Piped output (logs, tests) keeps one line per profile instead of wrapping at 80.
    (Console() if sys.stdout.isatty() else Console(width=200)).print(t)
