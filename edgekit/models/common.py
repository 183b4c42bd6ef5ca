"""Pieces shared by the zoo models: the log-mel input contract, streaming-conv helpers, CTC decode.

Log-mel contract (what `edgekit.data` produces and every ASR model consumes):
    features: float tensor (batch, frames, 80), 16 kHz audio, 25 ms window, 10 ms hop, already
    normalised (roughly zero mean, unit variance per bin). 1 s of audio = 100 frames.

Streaming convolutions: a causal conv is run on `cat(cache, chunk)` with no padding, where the
cache is the last `context` input frames of the previous chunk (zeros at the start, which is
exactly the left zero-padding the full-sequence forward uses). The conv modules themselves keep
`padding=0` and are always *called* (never re-implemented functionally), so a compressed
replacement of an nn.Conv1d keeps working in both paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_MELS = 80
SAMPLE_RATE = 16000
HOP_MS = 10
BLANK = 0  # CTC and RNN-T blank index, shared so decoders and heads agree.


def frames_for_seconds(seconds: float) -> int:
    """Number of 10 ms log-mel frames covering `seconds` of audio (at least 1)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    return max(1, int(round(seconds * 1000 / HOP_MS)))


def check_features(x: torch.Tensor, what: str = "features") -> None:
    """Raise ValueError unless `x` is a float tensor of shape (batch, frames, 80)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != N_MELS:
        raise ValueError(f"{what} must have shape (batch, frames, {N_MELS}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a float tensor, got {x.dtype}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what} is empty: shape {tuple(x.shape)}")


def example_features(batch: int = 1, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Deterministic stand-in for normalised log-mels, (batch, frames, 80) float32.

    Only for calibration-shape plumbing and tests; real calibration data comes from
    `edgekit.data`. Adjacent frames are correlated (a running mean), as real log-mels are.
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    t = frames_for_seconds(seconds)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, t + 2, N_MELS, generator=g)
    return ((x[:, :-2] + x[:, 1:-1] + x[:, 2:]) / 3.0).contiguous()


def conv_context(kernel_size: int, dilation: int = 1) -> int:
    """Input frames of history a causal conv needs: (k - 1) * dilation."""
    return (kernel_size - 1) * dilation


def causal_conv(conv: nn.Module, x: torch.Tensor, context: int) -> torch.Tensor:
    """Full-sequence causal conv: left-pad `context` zeros, then call the (padding=0) module."""
    return conv(F.pad(x, (context, 0)))


def streaming_conv(
    conv: nn.Module, x: torch.Tensor, cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of a causal conv: (B, C, L) chunk + (B, C, context) cache -> (output, new cache).

    For a strided conv the chunk length must be a multiple of the stride, so the next chunk
    starts on an output boundary; the new cache is then simply the last `context` frames.
    """
    full = torch.cat([cache, x], dim=2)
    return conv(full), full[:, :, full.shape[2] - cache.shape[2] :]


def is_rnnt(model: nn.Module) -> bool:
    """True for transducer models (they have a prediction network and a joiner)."""
    return hasattr(model, "predict") and hasattr(model, "joiner")


def ctc_greedy_decode(
    logits: torch.Tensor, lengths: torch.Tensor | None = None, blank: int = BLANK
) -> list[list[int]]:
    """Best-path CTC decode: argmax per frame, merge repeats, drop blanks.

    logits: (batch, frames, vocab) scores or log-probs (argmax is the same for both).
    lengths: optional (batch,) valid frame counts; frames beyond are ignored.
    Returns one list of token ids per batch item.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError("logits must be a (batch, frames, vocab) tensor")
    best = logits.argmax(dim=-1).tolist()
    out = []
    for b, seq in enumerate(best):
        n = len(seq) if lengths is None else int(lengths[b])
        if not 0 <= n <= len(seq):
            raise ValueError(f"lengths[{b}]={n} outside 0..{len(seq)}")
        hyp, prev = [], None
        for tok in seq[:n]:
            if tok != prev and tok != blank:
                hyp.append(tok)
            prev = tok
        out.append(hyp)
    return out


def pad_to_multiple(x: torch.Tensor, multiple: int, dim: int = 1) -> torch.Tensor:
    """Right-pad `x` with zeros along `dim` to a multiple of `multiple` (the streaming chunk)."""
    rem = (-x.shape[dim]) % multiple
    if rem == 0:
        return x
    shape = list(x.shape)
    shape[dim] = rem
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def count_params(module: nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def params_by_child(module: nn.Module, depth: int = 1, prefix: str = "") -> dict[str, int]:
    """Parameter counts per submodule down to `depth` levels (dotted names), plus any direct
    parameters under their own names; the values sum to `count_params(module)`."""
    out = {}
    for name, p in module.named_parameters(recurse=False):
        out[prefix + name] = p.numel()
    for name, child in module.named_children():
        if depth > 1 and any(True for _ in child.children()):
            out.update(params_by_child(child, depth - 1, f"{prefix}{name}."))
        else:
            out[prefix + name] = count_params(child)
    return out
