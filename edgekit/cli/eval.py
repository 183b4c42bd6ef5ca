"""`edgekit eval`: WER/CER or codec quality of a model or artifact on a corpus split."""

from __future__ import annotations

import json
import math

import click

from edgekit import EdgekitError


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


@click.command("eval")
@click.argument("target", metavar="MODEL_OR_ARTIFACT")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Corpus directory from 'edgekit data synth'.")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "dev", "test"]))
@click.option("--size", default=None, type=click.Choice(["tiny", "small"]),
              help="Zoo model size [default: tiny]; a checkpoint or artifact carries its own.")
@click.option("--recipe", default=None, help="Compress the PyTorch model with this recipe first "
              "(not for artifacts, which are compressed already).")
@click.option("--streaming", is_flag=True, help="Decode through init_state/step chunk by chunk.")
@click.option("--limit", type=int, default=None, help="Only the first N utterances.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the result as JSON. Its 'accuracy' block has the shape of the "
              "bench schema's, but 'edgekit bench' does not take it in yet.")
def eval_cmd(target, data_dir, split, size, recipe, streaming, limit, threads, json_path):
    """Evaluate MODEL_OR_ARTIFACT (zoo name, .pt checkpoint, .ekm/.onnx/.tflite)."""
    from edgekit import models
    from edgekit._io import atomic_write_json
    from edgekit.eval import evaluate
    from edgekit.train.loop import check_output_path

    if limit is not None and limit < 1:
        raise EdgekitError(f"--limit must be >= 1, got {limit}")
    if threads < 1:
        raise EdgekitError(f"--threads must be >= 1, got {threads}")
    if target in models.names() and models.pretrained_info(target, size or "tiny") is None:
        click.echo(f"warning: no trained {target} {size or 'tiny'} checkpoint ships; scoring "
                   "random weights (the numbers say nothing about the method)", err=True)
    try:
        if json_path:  # before the run, not after minutes of decoding
            check_output_path(json_path)
        result = evaluate(target, data_dir, split, size, recipe, streaming, limit, threads)
    except ValueError as exc:  # RecipeError is a ValueError too
        raise EdgekitError(str(exc)) from None
    acc = result["accuracy"]
    keys = ("wer", "cer", "rtf") if acc["task"] == "asr" else (
        "snr", "si_snr", "stoi", "pesq_wb", "bitrate_entropy_bps", "bitrate_huffman_bps")
    click.echo(f"{target} on {split} ({acc['utterances']} utterances, {acc['decoding']}): "
               + "  ".join(f"{k}={_fmt(acc[k])}" for k in keys))
    if json_path:
        try:
            atomic_write_json(json_path, json.loads(json.dumps(result, default=str)))
        except OSError as exc:
            raise EdgekitError(f"cannot write {json_path}: {exc}") from None
