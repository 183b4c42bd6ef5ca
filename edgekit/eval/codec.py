"""Codec quality and bitrate over a corpus split: SNR, SI-SNR, STOI, wideband PESQ, bits/s.

Bitrate is reported two ways from the hard code indices (`code_frames`): the empirical
entropy (what an ideal coder would reach, bits/s = H * 256 codes * modules * 16000 / 480) and
the size of an actual Huffman code fitted to the split's codes (payload plus code table).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekit.eval import metrics
from edgekit.models import nwc


@torch.no_grad()
def evaluate_codec(model: nn.Module, dataset, limit: int | None = 50,
                   streaming: bool = False) -> dict:
    """Mean SNR / SI-SNR / STOI / PESQ-WB and the bitrate of `model` over `dataset`.

    `streaming` runs `step` per 480-sample hop (the device path) instead of `forward`.
    """
    from edgekit.eval.runners import TorchRunner

    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise ValueError("the evaluation split has no utterances")
    rows, codes, seconds = [], [], 0.0
    levels = model.stages[0].quantizer.bins.numel()
    runner = TorchRunner(model) if streaming else None
    for i in range(n):
        wave = dataset.wave(i)
        if streaming:
            # the stream is 32 samples late; one extra hop flushes the last overlap
            padded = torch.cat([wave, wave.new_zeros(nwc.HOP)])[None]
            out = torch.from_numpy(runner.stream(padded.numpy()))[0, nwc.OVERLAP :][: len(wave)]
        else:
            out = model(wave[None])[0]
        m = -(-(len(wave) + nwc.OVERLAP) // nwc.HOP)
        frames = torch.nn.functional.pad(wave[None], (nwc.OVERLAP, m * nwc.HOP - len(wave)))
        _, idx = model.code_frames(frames.unfold(1, nwc.FRAME, nwc.HOP)[0])
        codes.append(idx.numpy().ravel())
        ref, est = wave.numpy(), out.numpy()
        row = {"snr": metrics.snr(ref, est), "si_snr": metrics.si_snr(ref, est),
               "stoi": metrics.stoi(ref, est)}
        try:
            row["pesq_wb"] = metrics.pesq_wb(ref, est)
        except Exception:  # pesq raises its own errors on silent or too-short audio
            row["pesq_wb"] = float("nan")
        rows.append(row)
        seconds += len(wave) / nwc.SAMPLE_RATE
    allcodes = np.concatenate(codes)
    per_s = 256 * len(model.stages) * nwc.SAMPLE_RATE / nwc.HOP  # code values per second
    def mean(key):  # NaN (not a warning) when PESQ failed on every utterance
        vals = np.array([r[key] for r in rows], dtype=float)
        return float(vals[~np.isnan(vals)].mean()) if (~np.isnan(vals)).any() else float("nan")

    out = {k: mean(k) for k in rows[0]}
    out.update({
        "utterances": n,
        "code_entropy_bits": metrics.entropy_bits(allcodes),
        "bitrate_entropy_bps": metrics.entropy_bits(allcodes) * per_s,
        "bitrate_huffman_bps": metrics.huffman_bits(allcodes, levels) / seconds,
        "bitrate_raw_bps": float(np.log2(levels)) * per_s,
        "decoding": "streaming" if streaming else "full signal",
    })
    return out
