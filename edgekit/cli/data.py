"""`edgekit data synth`: build the synthetic espeak-ng speech corpus."""

from __future__ import annotations

import click

from edgekit import EdgekitError


@click.group("data")
def data() -> None:
    """Speech data: the synthetic corpus used to train and evaluate the zoo."""


@data.command("synth")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (re-running with the same settings resumes).")
@click.option("--hours", type=float, default=1.0, show_default=True,
              help="Approximate total audio (train+dev+test).")
@click.option("--seed", type=int, default=0, show_default=True, help="Corpus seed.")
def synth_cmd(out_dir: str, hours: float, seed: int) -> None:
    """Synthesize 16 kHz speech with espeak-ng (digits, commands, short sentences; noise and
    reverberation) and write wav/<split>/*.wav plus train/dev/test.jsonl manifests."""
    from rich.progress import Progress

    from edgekit.data import synth

    try:
        corpus = synth.plan(hours, seed)
        synth.espeak_path()
        with Progress(transient=True) as bar:
            task = bar.add_task("synthesizing", total=len(corpus))
            counts = synth.synthesize(corpus, out_dir, {"seed": seed, "hours": hours},
                                      progress=lambda done, _n: bar.update(task, completed=done))
    except (ValueError, FileNotFoundError) as exc:
        raise EdgekitError(str(exc)) from None
    except OSError as exc:
        raise EdgekitError(f"cannot write corpus to {out_dir}: {exc}") from None
    click.echo(f"wrote {sum(counts.values())} utterances to {out_dir} "
               + " ".join(f"{k}={v}" for k, v in counts.items()))
