"""NWC/CMRL codec training loss (METHODS.md section 7) and its bitrate controller.

loss = 60 * RMSE(x, x_hat) + 10 * mean over {8, 16, 32, 128} bands of RMSE(logmel x, logmel x_hat)
       + 10 * mean over codes of sum_k sqrt(a_k)   (pushes soft assignments to one-hot; 1 = hard)
       + tau * H(mean assignment)                  (soft code entropy in bits)
tau starts at 0 and moves by 0.015 per epoch toward the target entropy: up while the
measured entropy is above it, down (not below 0) while below. Bitrate ~= 8.33 * H kbps per
module (256 codes per 480-sample hop at 16 kHz = 8,333 codes/s).
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.data.features import mel_matrix

MEL_BANDS = (8, 16, 32, 128)
N_FFT, HOP = 512, 128


def _log_mel(x: torch.Tensor, bands: int) -> torch.Tensor:
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT, device=x.device),
                      return_complex=True).abs().pow(2)
    return torch.log(mel_matrix(bands, N_FFT).T @ spec + 1e-5)


def mel_rmse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the 8/16/32/128-band log-mel spectra of the RMSE between x and y (B, N)."""
    terms = [(_log_mel(x, b) - _log_mel(y, b)).pow(2).mean().sqrt() for b in MEL_BANDS]
    return torch.stack(terms).mean()


class _Assignments:
    """Collects every quantizer's soft assignment during one forward (forward hooks)."""

    def __init__(self, model: nn.Module):
        self.items: list[torch.Tensor] = []
        quantizers = [m for m in model.modules()
                      if hasattr(m, "assignment") and hasattr(m, "bins")]
        if not quantizers:
            raise ValueError("the codec loss needs a model with NWC scalar quantizers")
        for q in quantizers:
            q.register_forward_hook(self._collect)

    def _collect(self, module, args, _out) -> None:
        self.items.append(module.assignment(args[0]))


class CodecLoss:
    """loss_fn(model, wave (B, N)) for `edgekit.train.loop.train`, plus the tau controller.

    Use the instance both as the loss and as a callback (`on_step` adjusts tau once per
    `epoch_steps` steps from the entropy measured since the last adjustment).
    """

    def __init__(self, model: nn.Module, target_entropy: float = 3.0, epoch_steps: int = 100,
                 tau_step: float = 0.015):
        if not 0 < target_entropy <= 5:
            raise ValueError(f"target_entropy must be in (0, 5] bits, got {target_entropy}")
        self.target, self.epoch_steps, self.tau_step = target_entropy, epoch_steps, tau_step
        self.tau = 0.0
        self._seen: list[float] = []
        self._hooks = _Assignments(model)

    def __call__(self, model: nn.Module, wave: torch.Tensor):
        self._hooks.items.clear()
        out = model(wave)
        time_rmse = (out - wave).pow(2).mean().sqrt()
        mel = mel_rmse(wave, out)
        quant, entropy = [], []
        for a in self._hooks.items:
            quant.append(a.clamp_min(0).sqrt().sum(-1).mean())
            p = a.reshape(-1, a.shape[-1]).mean(0)
            entropy.append(-(p * torch.log2(p + 1e-12)).sum())
        quant_t, ent_t = torch.stack(quant).mean(), torch.stack(entropy).mean()
        loss = 60 * time_rmse + 10 * mel + 10 * quant_t + self.tau * ent_t
        self._seen.append(float(ent_t.detach()))
        return loss, {"time_rmse": float(time_rmse.detach()), "mel_rmse": float(mel.detach()),
                      "quant": float(quant_t.detach()), "entropy": float(ent_t.detach()),
                      "tau": self.tau}

    def on_step(self, model: nn.Module, step: int) -> None:
        """Every `epoch_steps` steps nudge tau toward the target entropy."""
        if step % self.epoch_steps or not self._seen:
            return
        measured = sum(self._seen) / len(self._seen)
        self._seen.clear()
        delta = self.tau_step if measured > self.target else -self.tau_step
        self.tau = max(0.0, self.tau + delta)
