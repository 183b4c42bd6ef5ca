"""`edgekit compare a.json b.json`: difference of medians with significance."""

from __future__ import annotations

import json

import click

from edgekit import EdgekitError


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--alpha", type=click.FloatRange(1e-6, 0.5), default=0.01, show_default=True,
              help="Significance level of the Mann-Whitney U test.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(a, b, alpha, seed, as_json):
    """Is result B faster or slower than result A? (Mann-Whitney U + bootstrap CI)"""
    from edgekit.bench import compare as cmp

    try:
        c = cmp.compare_files(a, b, seed=seed, alpha=alpha)
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(c, indent=2))
        return
    lo, hi = c["diff_ci95_us"]
    click.echo(f"p50: {c['p50_a_us']:.1f} µs -> {c['p50_b_us']:.1f} µs "
               f"({(c['ratio'] - 1) * 100:+.2f} %), diff 95% CI [{lo:+.1f}, {hi:+.1f}] µs, "
               f"Mann-Whitney p = {c['p_value']:.3g}: {c['verdict']}")
    for n in c["notes"]:
        click.echo(f"note: {n}")
