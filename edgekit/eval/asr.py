"""Greedy and streaming decoding of the zoo ASR models, and WER/CER over a corpus split.

Two paths, both greedy:
  * full: `forward` (CTC) or `encode` (RNN-T) on the whole utterance;
  * streaming: `init_state` + `step` chunk by chunk, exactly what a device runs. For CTC the
    chunk logits go through any `Runner` (edgekit.eval.runners), so the same loop scores a
    PyTorch model and an exported artifact.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from edgekit.data import vocab
from edgekit.eval import metrics
from edgekit.models import ctc_greedy_decode, rnnt_greedy_decode
from edgekit.models.common import is_rnnt, pad_to_multiple
from edgekit.train.asr import ctc_out_lens


def _ctc_frames(feat_frames: int) -> int:
    """Logit frames that belong to an utterance of `feat_frames` (the rest is chunk padding)."""
    return int(ctc_out_lens(torch.tensor(feat_frames)))


@torch.no_grad()
def transcribe(model: nn.Module, feats: torch.Tensor, streaming: bool = False) -> str:
    """Greedy transcript of one utterance's features (T, 80)."""
    x = feats[None]
    if is_rnnt(model):
        if not streaming:
            hyps, _ = rnnt_greedy_decode(model, model.encode(x))
            return vocab.decode(hyps[0])
        chunk = model.chunk_frames if hasattr(model, "chunk_frames") else model.cfg.chunk_frames
        x = pad_to_multiple(x, chunk)
        state, dec = model.init_state(1), None
        for i in range(0, x.shape[1], chunk):
            enc, state = model.step(x[:, i : i + chunk], state)
            hyps, dec = rnnt_greedy_decode(model, enc, dec)
        return vocab.decode(dec["hyps"][0])
    n_out = _ctc_frames(feats.shape[0])
    if not streaming:
        # padded to whole chunks as a device sees it: the last chunk's frames attend to each
        # other, so an unpadded ragged chunk would give (slightly) different logits
        logits = model(pad_to_multiple(x, model.chunk_frames))[:, :n_out]
        return vocab.decode(ctc_greedy_decode(logits)[0])
    from edgekit.eval.runners import TorchRunner

    logits = torch.from_numpy(TorchRunner(model).stream(x.numpy()))[:, :n_out]
    return vocab.decode(ctc_greedy_decode(logits)[0])


def evaluate_asr(model_or_runner, dataset, streaming: bool = False,
                 limit: int | None = None) -> dict:
    """WER, CER and real-time factor over `dataset` (a SpeechDataset).

    `model_or_runner` is a zoo ASR nn.Module, a CTC `Runner` or an RNN-T artifact's
    `TransducerSessions` (both always streaming).
    Returns {"wer", "cer", "utterances", "rtf", "decoding", "examples"}.
    """
    from edgekit.eval.runners import Runner
    from edgekit.eval.transducer import TransducerSessions

    artifact = isinstance(model_or_runner, (Runner, TransducerSessions))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise ValueError("the evaluation split has no utterances")
    refs, hyps = [], []
    audio_s, compute_s = 0.0, 0.0
    for i in range(n):
        item = dataset[i]
        t0 = time.perf_counter()
        if isinstance(model_or_runner, Runner):
            n_out = _ctc_frames(item["feats"].shape[0])
            logits = model_or_runner.stream(item["feats"][None])[:, :n_out]
            hyp = vocab.decode(ctc_greedy_decode(torch.as_tensor(logits))[0])
        elif isinstance(model_or_runner, TransducerSessions):
            hyp = vocab.decode(model_or_runner.decode(item["feats"].numpy()))
        else:
            hyp = transcribe(model_or_runner, item["feats"], streaming)
        compute_s += time.perf_counter() - t0
        audio_s += item["samples"] / 16000
        refs.append(item["text"])
        hyps.append(hyp)
    return {
        "wer": metrics.wer(refs, hyps),
        "cer": metrics.cer(refs, hyps),
        "utterances": n,
        "rtf": compute_s / max(audio_s, 1e-9),
        "decoding": "greedy, streaming" if streaming or artifact
        else "greedy, full utterance",
        "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:5]],
    }
