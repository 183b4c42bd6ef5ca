"""`edgekit train`: train a zoo model on a corpus directory (see docs/training.md)."""

from __future__ import annotations

import json

import click

from edgekit import EdgekitError

QAT_METHODS = ("s8bqat", "gq")


def _initial_model(models, name: str, size: str, seed: int, qat: str | None,
                   init: str | None):
    """The model training starts from: the `--init` checkpoint, else for QAT the shipped
    trained checkpoint where one exists (centroids fitted to random weights are worthless),
    else fresh random weights. ValueError for a checkpoint that does not fit."""
    if init is None:
        return models.build(name, size, seed=seed, pretrained=None if qat else False)
    from edgekit.train.loop import load_checkpoint
    ckpt = load_checkpoint(init)
    meta, state = ckpt.get("meta") or {}, ckpt["state_dict"]
    if meta.get("model", name) != name or meta.get("size", size) != size:
        raise ValueError(f"--init {init} holds {meta.get('model')} {meta.get('size')}, "
                         f"not {name} {size}")
    if any(".matrices." in k for k in state):
        raise ValueError(f"--init {init} is already quantized; start from a float checkpoint")
    model = models.build(name, size, seed=seed, pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"--init {init} does not fit {name} {size}: "
                         f"{str(exc).splitlines()[0]}") from None
    return model


def _log(row: dict) -> None:
    click.echo(json.dumps(row))


@click.command("train")
@click.argument("model_name", metavar="MODEL")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Corpus directory from 'edgekit data synth'.")
@click.option("--size", default="tiny", show_default=True, type=click.Choice(["tiny", "small"]))
@click.option("-o", "--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="Checkpoint file (default: MODEL-SIZE.pt in the current directory).")
@click.option("--steps", type=int, default=None, help="Optimizer steps.")
@click.option("--epochs", type=float, default=None, help="Passes over the train split "
              "(alternative to --steps).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--warmup", type=int, default=300, show_default=True)
@click.option("--eval-every", type=int, default=500, show_default=True,
              help="Score the dev split and checkpoint every N steps (and at the end).")
@click.option("--stop-at", type=int, default=0,
              help="End after this step while the LR schedule still spans --steps (how a "
              "shipped checkpoint taken mid-run is reproduced).")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--recipe", default=None, help="Compression recipe for QAT (name or YAML).")
@click.option("--qat", type=click.Choice(QAT_METHODS), default=None,
              help="Quantization-aware training method.")
@click.option("--init", "init", default=None, type=click.Path(dir_okay=False),
              help="Start from this float checkpoint (default: the shipped trained one for "
              "--qat, random weights otherwise).")
@click.option("--target-entropy", type=float, default=3.0, show_default=True,
              help="Codec only: code entropy (bits) the bitrate controller aims for.")
def train_cmd(model_name, data_dir, size, out_path, steps, epochs, batch_size, lr, warmup,
              eval_every, stop_at, threads, seed, recipe, qat, init, target_entropy) -> None:
    """Train zoo MODEL: conformer, conmer (CTC), rnnt (transducer loss), nwc, nwc-cmrl
    (METHODS section 7 loss with entropy-controlled bitrate)."""
    from edgekit import models
    from edgekit.data.dataset import read_manifest
    from edgekit.train.loop import TrainConfig, check_output_path
    from edgekit.train.run import ASR_MODELS, CODEC_MODELS, fit, fit_codec

    if model_name not in ASR_MODELS + CODEC_MODELS:
        raise EdgekitError(f"cannot train {model_name!r}: training is implemented for "
                           f"{', '.join(ASR_MODELS + CODEC_MODELS)}")
    if (steps is None) == (epochs is None):
        raise EdgekitError("give exactly one of --steps and --epochs")
    if recipe and not qat:
        raise EdgekitError("--recipe needs --qat (training a post-training-quantized model "
                           "would undo its rounding)")
    if batch_size < 1:
        raise EdgekitError(f"--batch-size must be >= 1, got {batch_size}")
    if threads < 1:
        raise EdgekitError(f"--threads must be >= 1, got {threads}")
    try:
        out = out_path or f"{model_name}-{size}.pt"
        check_output_path(out)  # a bad path must fail now, not after the whole run
        n_train = len(read_manifest(data_dir, "train"))
        if epochs is not None:
            if not epochs > 0:
                raise ValueError(f"--epochs must be > 0, got {epochs}")
            steps = max(1, round(epochs * n_train / batch_size))
        cfg = TrainConfig(steps=steps, lr=lr, warmup=min(warmup, steps), eval_every=eval_every,
                          threads=threads, log_every=50, stop_at=stop_at)
        if model_name in CODEC_MODELS:
            if qat or init:
                raise ValueError("--qat and --init are not wired for the codec yet")
            result = fit_codec(model_name, data_dir, out, cfg, size=size, batch_size=batch_size,
                               target_entropy=target_entropy, seed=seed, log=_log)
            click.echo(f"wrote {out} after {result.step} steps: {json.dumps(result.metrics)}")
            return
        model = _initial_model(models, model_name, size, seed, qat, init)
        regularizer, callbacks = None, ()
        if qat:
            from edgekit.compress.qat import prepare
            model, regularizer, callbacks = prepare(qat, model, recipe, steps=steps)
        result = fit(model_name, size, data_dir, out, cfg, batch_size=batch_size, seed=seed,
                     model=model, recipe=recipe, qat=qat, regularizer=regularizer,
                     callbacks=callbacks, log=_log)
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None
    except OSError as exc:
        raise EdgekitError(f"training failed on a file: {exc}") from None
    click.echo(f"wrote {out} after {result.step} steps ({result.seconds:.0f} s): "
               + json.dumps(result.metrics))
