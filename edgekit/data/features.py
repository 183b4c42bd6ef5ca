"""The log-mel front end that produces the ASR input contract of `edgekit.models.common`.

80 mel bands (HTK mel scale, 20 Hz - 8 kHz), 25 ms Hann window, 10 ms hop, 512-point FFT,
log(power + 1e-6), then a *fixed* affine normalisation. Fixed rather than per-utterance
statistics so the front end is causal: a streaming device computes frame t from audio up to t
and needs no look-ahead. The constants were measured once on the synthetic training split
(mean and std over all frames and bins, `--hours 2 --seed 0`).

Frame t covers samples [160 t - 200, 160 t + 200) (centred, zero-padded at the edges), so
N samples give floor(N / 160) + 1 frames.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from edgekit.models.common import N_MELS, SAMPLE_RATE

N_FFT = 512
WIN = 400
HOP = 160
F_MIN, F_MAX = 20.0, 8000.0
LOG_MEAN = -3.2
LOG_STD = 3.3


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=None)
def mel_matrix(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular mel filterbank, (n_fft // 2 + 1, n_mels) float32, peak 1 per filter."""
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None, :] - lo) / (mid - lo)
    down = (hi - bins[None, :]) / (hi - mid)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    return torch.from_numpy(fb.T.astype(np.float32))


def log_mel(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Normalised 80-dim log-mel of 16 kHz audio: (N,) -> (T, 80) or (B, N) -> (B, T, 80)."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.dim() not in (1, 2) or x.shape[-1] < 1:
        raise ValueError(f"wave must be (samples,) or (batch, samples), got {tuple(x.shape)}")
    squeeze = x.dim() == 1
    x = x.reshape(-1, x.shape[-1])
    pad = WIN // 2
    x = torch.nn.functional.pad(x, (pad, pad))
    frames = x.unfold(-1, WIN, HOP) * torch.hann_window(WIN, periodic=True)
    spec = torch.fft.rfft(frames, n=N_FFT).abs().pow(2)
    feats = (torch.log(spec @ mel_matrix() + 1e-6) - LOG_MEAN) / LOG_STD
    return feats[0] if squeeze else feats


def num_frames(samples: int) -> int:
    """Frames `log_mel` returns for `samples` samples."""
    return samples // HOP + 1

