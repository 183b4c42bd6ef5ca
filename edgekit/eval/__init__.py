"""Evaluate a zoo model, a training checkpoint or an exported artifact on a corpus split.

    from edgekit.eval import evaluate
    r = evaluate("conformer", "data/", split="test")            # shipped weights, greedy
    r = evaluate("conformer", "data/", recipe="int4")            # compressed first
    r = evaluate("ckpt.pt", "data/") ; evaluate("out/model.ekm", "data/")
    r["accuracy"]   # the block `edgekit bench` results carry (docs/training.md)

ASR: WER/CER with greedy decoding (full utterance, or `streaming=True` for the `step` path;
artifacts always stream). Codec: SNR, SI-SNR, STOI, PESQ-WB and bitrate.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekit import models
from edgekit.data.dataset import SpeechDataset, calibration_batches

__all__ = ["evaluate", "load_target"]


# Exported models edgekit eval can score: CTC logits per chunk (conformer, conmer) and RNN-T
# through its encoder/predictor/joiner graphs. Codec artifacts (samples in, samples and codes
# out) have no runner yet, so they are refused rather than scored as something else.
ARTIFACT_MODELS = ("conformer", "conmer", "rnnt")


def load_target(target: str, size: str | None = None, recipe: str | None = None,
                data_dir=None) -> tuple[str, object, dict]:
    """Resolve `target` to (zoo model name, nn.Module or Runner, description).

    A zoo name builds the model (shipped trained weights when they exist); a `.pt` is an
    `edgekit train` checkpoint; `.ekm`/`.onnx`/`.tflite` open a runner. `recipe` compresses
    a PyTorch model first (calibrated on 8 train utterances of `data_dir`). `size` (default
    tiny) applies to zoo names; a checkpoint or artifact carries its own, so a differing
    `size`, or any `recipe` for an artifact, is a ValueError.
    """
    from edgekit.eval.runners import RUNNERS

    path = Path(target)
    if path.suffix.lower() in (*RUNNERS, ".onnx", ".tflite"):
        return _load_artifact(path, size, recipe)
    if target in models.names():
        name, size = target, size or "tiny"
        model = models.build(name, size)
        info = models.pretrained_info(name, size)
        desc = {"source": "zoo", "name": name, "size": size,
                "weights": "trained" if info else "random (no checkpoint ships)"}
    elif path.suffix == ".pt":
        from edgekit.train.loop import load_checkpoint

        ckpt = load_checkpoint(path)
        meta = ckpt.get("meta") or {}
        name = meta.get("model")
        if name not in models.names():
            raise ValueError(f"{path}: checkpoint does not say which zoo model it holds")
        if size is not None and meta.get("size", size) != size:
            raise ValueError(f"{path} holds a {name} {meta['size']} checkpoint; --size {size} "
                             "does not apply (leave it out)")
        size = meta.get("size", size or "tiny")
        model = models.build(name, size, pretrained=False, **_overrides(meta, name, size))
        try:
            if meta.get("qat"):
                from edgekit.compress.qat import load_quantized

                model = load_quantized(model, ckpt["state_dict"])
            else:
                model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"{path}: weights do not fit {name} {size}: {exc}") from None
        desc = {"source": "checkpoint", "path": str(path), "name": name, "size": size,
                "step": ckpt.get("step"), "qat": meta.get("qat"), "recipe": meta.get("recipe")}
    else:
        raise ValueError(f"{target!r} is neither a zoo model ({', '.join(models.names())}) "
                         "nor a .pt/.ekm/.onnx/.tflite file")
    if recipe:
        from edgekit.compress import compress

        if data_dir is None:
            raise ValueError("compressing with a recipe needs calibration data")
        model = compress(model, recipe, calib=calibration_batches(data_dir, name)).eval()
        desc["recipe"] = recipe
    return name, model.eval(), desc


def _load_artifact(path: Path, size: str | None, recipe: str | None) -> tuple[str, object, dict]:
    """(model name from the artifact's META, Runner, description); refuses what eval cannot score."""
    from edgekit.eval.runners import open_runner

    if recipe:
        raise ValueError(f"--recipe does not apply to an exported artifact ({path} is already "
                         "compressed); give the zoo model or checkpoint to compress it")
    if size is not None:
        raise ValueError(f"--size does not apply to an exported artifact ({path} carries its "
                         "own); leave it out")
    runner = open_runner(path)
    meta = getattr(runner, "meta", None) or {}
    source = meta.get("source") or {}
    name = source.get("model")
    if name not in ARTIFACT_MODELS:
        what = f"zoo model {name!r}" if name else "no zoo model name in its metadata"
        raise ValueError(f"{path} holds {what}; edgekit eval scores only "
                         f"{'/'.join(ARTIFACT_MODELS)} artifacts so far — evaluate the "
                         "PyTorch model or checkpoint instead")
    if name == "rnnt":
        from edgekit.eval.transducer import TransducerSessions

        runner = TransducerSessions(path)
    return name, runner, {"source": "artifact", "path": str(path), "name": name,
                          "size": source.get("size"), "recipe": (meta.get("recipe") or {}).get("name")}


def _overrides(meta: dict, name: str, size: str) -> dict:
    """Config fields of a checkpoint that differ from the zoo default (e.g. chunk_frames)."""
    saved = meta.get("config") or {}
    if not saved or name.startswith("nwc"):
        return {}
    default = vars(models.build(name, size, pretrained=False).cfg)
    return {k: v for k, v in saved.items() if k in default and k != "attention"
            and default[k] != v}


def evaluate(target: str, data_dir, split: str = "test", size: str | None = None,
             recipe: str | None = None, streaming: bool = False,
             limit: int | None = None, threads: int = 1) -> dict:
    """Score `target` on `split` of the corpus at `data_dir`; see the module docstring.

    Returns {"target", "split", "data", "accuracy": {...}, "examples"?}; `accuracy["model"]`
    says where the weights came from (`"weights": "random ..."` for an untrained zoo model).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _evaluate(target, data_dir, split, size, recipe, streaming, limit)
    finally:
        torch.set_num_threads(before)


def _evaluate(target, data_dir, split, size, recipe, streaming, limit) -> dict:
    from edgekit.eval.asr import evaluate_asr
    from edgekit.eval.codec import evaluate_codec

    name, model, desc = load_target(target, size, recipe, data_dir)
    ds = SpeechDataset(data_dir, split)
    if name.startswith("nwc"):
        res = evaluate_codec(model, ds, limit=50 if limit is None else limit,
                             streaming=streaming)
        task, examples = "codec", None
    else:
        res = evaluate_asr(model, ds, streaming=streaming, limit=limit)
        task, examples = "asr", res.pop("examples")
    accuracy = {"task": task, "dataset": str(data_dir), "split": split, **res,
                "model": desc}
    out = {"target": str(target), "split": split, "data": str(data_dir), "accuracy": accuracy}
    if examples:
        out["examples"] = examples
    return out
