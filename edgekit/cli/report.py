"""`edgekit report RESULTS... -o report.html`."""

from __future__ import annotations

import click

from edgekit import EdgekitError


@click.command("report")
@click.argument("results", nargs=-1, required=True)
@click.option("-o", "--out", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write (atomically).")
def report(results, out):
    """One HTML page (plots embedded) from bench result JSONs."""
    from edgekit.bench import report as rep

    try:
        n = rep.write(list(results), out)
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None
    click.echo(f"wrote {out} ({n} results)", err=True)
