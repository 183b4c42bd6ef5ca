"""Train a zoo model on a corpus directory: what `edgekit train` and scripts/train_zoo.sh run.

    result = fit("conformer", "tiny", data_dir, out="ckpt.pt", cfg=TrainConfig(steps=3000))

Batches are drawn from the train split in length buckets (similar durations together, so
little padding), re-shuffled every epoch from `seed`. The dev split is scored (greedy CER/WER)
at each evaluation; the checkpoint carries the model name, size, recipe, config and metrics.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import torch

from edgekit import models
from edgekit.data import vocab
from edgekit.data.dataset import SpeechDataset, collate
from edgekit.train import asr
from edgekit.train.loop import TrainConfig, TrainResult, save_checkpoint, train

ASR_MODELS = ("conformer", "conmer", "rnnt")


def bucket_batches(dataset, batch_size: int, seed: int) -> Callable[[], list]:
    """Epoch factory: batches of utterances of similar length, in a fresh random order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(dataset)), key=lambda i: dataset.rows[i].get("seconds", 0.0))
    epoch = [0]

    def batches():
        rng = random.Random(seed * 1000003 + epoch[0])
        epoch[0] += 1
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(groups)
        for g in groups:
            yield collate([dataset[i] for i in g])

    return batches


def fit(
    name: str,
    size: str,
    data_dir: str | Path,
    out: str | Path | None = None,
    cfg: TrainConfig | None = None,
    *,
    batch_size: int = 16,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    recipe: str | None = None,
    qat: str | None = None,
    regularizer: Callable | None = None,
    callbacks: tuple = (),
    dev_limit: int | None = 200,
    log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train zoo ASR model `name`/`size` (or the given, e.g. already compressed, `model`).

    `regularizer` and `callbacks` are passed to `edgekit.train.loop.train` (the QAT hooks);
    `recipe` and `qat` are only recorded in the checkpoint (a QAT checkpoint holds quantized
    layers: `edgekit.eval` rebuilds them with `edgekit.compress.qat.load_quantized`).
    Writes the checkpoint to `out` after every evaluation. Returns the TrainResult; its
    `metrics` are the final dev-split CER/WER.
    """
    from edgekit.eval.asr import evaluate_asr

    if name not in ASR_MODELS:
        raise ValueError(f"training is implemented for {', '.join(ASR_MODELS)}; got {name!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = cfg or TrainConfig()
    if model is None:
        model = models.build(name, size, seed=seed, pretrained=False)
    vocab.check_head(model.cfg.vocab)
    train_set = SpeechDataset(data_dir, "train")
    dev_set = SpeechDataset(data_dir, "dev", limit=dev_limit)
    torch.manual_seed(seed)

    def evaluate(m) -> dict[str, Any]:
        r = evaluate_asr(m, dev_set)
        return {"dev_cer": round(r["cer"], 4), "dev_wer": round(r["wer"], 4)}

    def checkpoint(m, step, metrics):
        if out is not None:
            meta = {"model": name, "size": size, "seed": seed, "recipe": recipe, "qat": qat,
                    "data": str(data_dir), "steps": cfg.steps, "batch_size": batch_size,
                    "config": json.loads(json.dumps(vars(m.cfg))) if hasattr(m, "cfg") else {},
                    "metrics": metrics}
            save_checkpoint(out, m, meta, step)

    return train(model, bucket_batches(train_set, batch_size, seed),
                 asr.make_loss(model, seed=seed), cfg, regularizer=regularizer,
                 callbacks=callbacks, evaluate=evaluate, checkpoint=checkpoint, log=log)


CODEC_MODELS = ("nwc", "nwc-cmrl")


def segment_batches(dataset, batch_size: int, segment: int, seed: int) -> Callable[[], list]:
    """Epoch factory for codec training: random `segment`-sample crops, one per utterance."""
    waves = {}
    epoch = [0]

    def batches():
        gen = torch.Generator().manual_seed(seed * 1000003 + epoch[0])
        epoch[0] += 1
        order = torch.randperm(len(dataset), generator=gen).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            crops = []
            for j in order[i : i + batch_size]:
                if j not in waves:
                    waves[j] = dataset.wave(j)
                w = torch.nn.functional.pad(waves[j], (0, max(0, segment - len(waves[j]))))
                start = int(torch.randint(0, len(w) - segment + 1, (1,), generator=gen))
                crops.append(w[start : start + segment])
            yield torch.stack(crops)

    return batches


def fit_codec(name: str, data_dir, out=None, cfg: TrainConfig | None = None, *,
              size: str = "tiny", batch_size: int = 8, segment: int = 4800,
              target_entropy: float = 3.0, seed: int = 0, dev_limit: int = 10,
              log=None) -> TrainResult:
    """Train NWC / NWC-CMRL with the METHODS section 7 loss (`edgekit.train.codec`).

    Each step codes `batch_size` random crops of `segment` samples (10 hops by default); the
    entropy weight tau moves once per pass over the train split. Dev metrics: SNR, PESQ-WB
    and entropy bitrate on the first `dev_limit` dev utterances. `size` is recorded and
    passed to `models.build` (the NWC spec fixes the architecture, so both sizes match).
    """
    from edgekit.eval.codec import evaluate_codec
    from edgekit.train.codec import CodecLoss

    if name not in CODEC_MODELS:
        raise ValueError(f"codec training is for {', '.join(CODEC_MODELS)}; got {name!r}")
    if batch_size < 1 or segment < 1:
        raise ValueError(f"batch_size and segment must be >= 1, got {batch_size}, {segment}")
    cfg = cfg or TrainConfig()
    model = models.build(name, size, seed=seed, pretrained=False)
    train_set = SpeechDataset(data_dir, "train")
    dev_set = SpeechDataset(data_dir, "dev", limit=dev_limit)
    loss = CodecLoss(model, target_entropy, epoch_steps=max(1, len(train_set) // batch_size))

    def evaluate(m):
        r = evaluate_codec(m, dev_set, limit=dev_limit)
        return {"dev_snr": round(r["snr"], 3), "dev_pesq_wb": round(r["pesq_wb"], 3),
                "dev_bitrate_entropy_bps": round(r["bitrate_entropy_bps"], 1)}

    def checkpoint(m, step, metrics):
        if out is not None:
            save_checkpoint(out, m, {"model": name, "size": size, "seed": seed, "recipe": None,
                                     "qat": None, "data": str(data_dir), "steps": cfg.steps,
                                     "batch_size": batch_size, "target_entropy": target_entropy,
                                     "tau": loss.tau, "metrics": metrics}, step)

    return train(model, segment_batches(train_set, batch_size, segment, seed), loss, cfg,
                 callbacks=[loss], evaluate=evaluate, checkpoint=checkpoint, log=log)
