"""Options shared by several commands (one definition, reused as decorators)."""

from __future__ import annotations

import click

json_out = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, writable=True), default=None,
    help="Also write the results as JSON to this file (written atomically).")

quick = click.option("--quick", is_flag=True, help="Fewer shapes and iterations (for a smoke run).")
