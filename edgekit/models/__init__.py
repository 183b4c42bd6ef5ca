"""The model zoo: streaming ASR (RNN-T, Conformer, Conmer) and the NWC/CMRL waveform codec.

    from edgekit import models
    m = models.build("conformer", size="tiny", seed=0)     # nn.Module, eval mode
    spec = models.info("conformer", "tiny")                 # params, chunk, input/output spec
    args = spec["example_input"](batch=1, seconds=1.0)      # tuple: m(*args) works

Every model has `init_state(batch)` and `step(chunk, state) -> (out, state)`; feeding an
utterance chunk by chunk equals the full `forward` (see each module's docstring and
docs/models.md for shapes and the tolerance).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable

import torch
from torch import nn

from edgekit.models import conformer, nwc, rnnt
from edgekit.models.weights import loader as weights
from edgekit.models.common import (
    BLANK,
    N_MELS,
    count_params,
    ctc_greedy_decode,
    example_features,
    params_by_child,
)
from edgekit.models.rnnt import greedy_decode as rnnt_greedy_decode

SIZES = ("tiny", "small")

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "rnnt": rnnt.build,
    "conformer": lambda size, **kw: conformer.build(size, attention=True, **kw),
    "conmer": lambda size, **kw: conformer.build(size, attention=False, **kw),
    "nwc": lambda size, **kw: nwc.build(size, n_modules=1, **kw),
    "nwc-cmrl": lambda size, **kw: nwc.build(size, n_modules=2, **kw),
}
_CONFIGS = {"rnnt": rnnt.RNNTConfig, "conformer": conformer.ConformerConfig,
            "conmer": conformer.ConformerConfig}

__all__ = [
    "BLANK", "SIZES", "build", "names", "info", "pretrained_info", "ctc_greedy_decode", "rnnt_greedy_decode",
]


def names() -> list[str]:
    """Names accepted by `build`, sorted."""
    return sorted(_BUILDERS)


def _check(name: Any, size: Any) -> None:
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    if not isinstance(size, str) or size not in SIZES:
        raise ValueError(f"unknown size {size!r} for {name}; valid sizes: {', '.join(SIZES)}")


def build(name: str, size: str = "tiny", seed: int = 0, pretrained: bool | None = None,
          **config: Any) -> nn.Module:
    """Build zoo model `name` at `size` with weights drawn from `seed`, in eval mode.

    `config` overrides fields of the ASR models' config dataclass (RNNTConfig,
    ConformerConfig), e.g. `chunk_frames=64`; NWC takes none (its spec is fixed).

    `pretrained`: None (default) loads the shipped trained checkpoint
    `weights/<name>-<size>.pt` when one exists and its tensor shapes fit the built model (a
    shape-changing `config` override keeps the seeded random weights); True requires it
    (ValueError if missing or unfit); False never loads it. Loaded weights replace the seeded
    ones entirely, so `seed` then changes nothing. See `pretrained_info`.

    The global torch RNG is left untouched (the build runs in a forked RNG), so building a
    model never changes what the caller's own random calls return.
    Raises ValueError for an unknown name or size or a bad seed.
    """
    _check(name, size)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in 0..2**63-1, got {seed!r}")
    allowed = set()
    if name in _CONFIGS:  # `attention` is what tells Conformer from Conmer: not an option
        allowed = {f.name for f in fields(_CONFIGS[name])} - {"attention"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        valid = sorted(allowed) or "none"
        raise ValueError(f"unknown option(s) {unknown} for {name}; valid: {valid}")
    for key, value in config.items():
        low = 0 if key == "left_chunks" else 1  # every other field is a size or count
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} option {key} must be an int >= {low}, got {value!r}")
    if pretrained not in (None, True, False):
        raise ValueError(f"pretrained must be None, True or False, got {pretrained!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[name](size, **config)
    if pretrained is not False:
        weights.load_into(model, name, size, required=pretrained is True)
    return model.eval()


def pretrained_info(name: str, size: str = "tiny") -> dict[str, Any] | None:
    """The sidecar record of the shipped checkpoint (data, metrics, sha256), or None."""
    _check(name, size)
    return weights.info(name, size)


def _example_input(name: str, model: nn.Module) -> Callable[..., tuple]:
    def make(batch: int = 1, seconds: float = 1.0, seed: int = 0) -> tuple:
        """Deterministic example inputs for `model(*inputs)` (calibration plumbing, tests)."""
        if name.startswith("nwc"):
            if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
                raise ValueError(f"batch must be a positive int, got {batch!r}")
            if not isinstance(seconds, (int, float)) or not seconds > 0:
                raise ValueError(f"seconds must be a positive number, got {seconds!r}")
            g = torch.Generator().manual_seed(seed)
            n = max(1, int(round(seconds * nwc.SAMPLE_RATE)))
            t = torch.arange(n) / nwc.SAMPLE_RATE
            f0 = 100 + 200 * torch.rand(batch, 1, generator=g)
            # a harmonic tone plus a little noise: speech-like spectrum, well inside [-1, 1]
            wave = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6)) * 0.2
            return (wave + 0.01 * torch.randn(batch, n, generator=g),)
        feats = example_features(batch, seconds, seed)
        if name == "rnnt":
            g = torch.Generator().manual_seed(seed + 1)
            u = max(1, feats.shape[1] // 10)  # ~10 labels per second
            return feats, torch.randint(1, model.cfg.vocab, (batch, u), generator=g)
        return (feats,)

    return make


_SPECS = {
    "rnnt": ("features (B, T, 80) float32 log-mel; tokens (B, U) int64 in 1..vocab-1",
             "joint logits (B, ceil(T/3), U+1, vocab) float32; "
             "step: encoder frames (B, L/3, enc_dim)"),
    "conformer": ("features (B, T, 80) float32 log-mel",
                  "CTC logits (B, ceil(T/4), vocab) float32, blank = 0"),
    "nwc": ("wave (B, N) float32, 16 kHz, in [-1, 1]", "reconstructed wave (B, N) float32"),
}


def info(name: str, size: str = "tiny") -> dict[str, Any]:
    """Facts about a zoo model: parameter counts (total and per top-level module), streaming
    chunk, input/output spec and an `example_input(batch=1, seconds=1.0, seed=0)` callable.
    """
    model = build(name, size)
    if name.startswith("nwc"):
        chunk = {"samples": nwc.HOP, "frame": nwc.FRAME, "overlap": nwc.OVERLAP,
                 "latency_samples": nwc.OVERLAP, "sample_rate": nwc.SAMPLE_RATE}
        spec = _SPECS["nwc"]
        depth = 3  # stages.<i>.<child>
    else:
        chunk = {"frames": model.chunk_frames, "frame_ms": 10, "n_mels": N_MELS}
        spec = _SPECS["rnnt" if name == "rnnt" else "conformer"]
        depth = 2
    return {
        "name": name,
        "size": size,
        "params": count_params(model),
        "params_by_module": params_by_child(model, depth=depth),
        "chunk": chunk,
        "input": spec[0],
        "output": spec[1],
        "config": getattr(model, "cfg", None),
        "example_input": _example_input(name, model),
    }
