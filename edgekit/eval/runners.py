"""One streaming interface over every backend, so `edgekit eval` scores what ships.

A Runner holds a streaming graph's state and maps one input chunk to one output chunk:

    r.chunk            # input frames (ASR) or samples (codec) per step
    r.reset()          # zero the state (start of an utterance)
    r.step(x)          # (1, chunk, ...) float32 -> np.ndarray output chunk
    r.stream(x)        # reset, zero-pad to whole chunks, step through, concatenate on axis 1

Adding a backend is a subclass with `chunk`, `reset` and `step` (see SessionRunner: a few
lines). `open_runner(path)` picks one by file extension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class Runner:
    """Base class: subclasses set `chunk` and implement `reset` and `step`."""

    chunk: int = 0
    name: str = "runner"

    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def stream(self, x) -> np.ndarray:
        """Whole input (1, N, ...) through the streaming graph; outputs joined on axis 1."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2 or x.shape[0] != 1 or x.shape[1] < 1:
            raise ValueError(f"stream input must be (1, N, ...), got {x.shape}")
        pad = (-x.shape[1]) % self.chunk
        if pad:
            x = np.concatenate([x, np.zeros((1, pad) + x.shape[2:], np.float32)], axis=1)
        self.reset()
        outs = [self.step(x[:, i : i + self.chunk]) for i in range(0, x.shape[1], self.chunk)]
        return np.concatenate(outs, axis=1)


class TorchRunner(Runner):
    """A zoo model's own `init_state`/`step` (Conformer/Conmer CTC logits, NWC samples)."""

    name = "torch"

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        if hasattr(model, "chunk_frames"):
            self.chunk = int(model.chunk_frames)
        else:  # NWC: one hop of samples per step
            from edgekit.models import nwc

            self.chunk = nwc.HOP
        self.reset()

    def reset(self) -> None:
        self.state = self.model.init_state(1)

    @torch.no_grad()
    def step(self, x: np.ndarray) -> np.ndarray:
        out, self.state = self.model.step(torch.as_tensor(np.asarray(x, np.float32)), self.state)
        return out.numpy()


class SessionRunner(Runner):
    """An .ekm artifact in the C++ runtime (`edgekit.runtime.Session`, docs/runtime.md)."""

    name = "ekm"

    def __init__(self, path: str | Path, threads: int = 1):
        from edgekit.runtime import Session  # written by the runtime engineer

        self.session = Session(str(path), threads=threads)
        self.meta = self.session.meta  # META JSON; meta["source"]["model"] names the zoo model
        self.input = self.session.inputs[0]["name"]
        self.chunk = int(self.session.inputs[0]["shape"][1])

    def reset(self) -> None:
        self.session.reset()

    def step(self, x: np.ndarray) -> np.ndarray:
        out = self.session.step({self.input: np.ascontiguousarray(x, np.float32)})
        return next(iter(out.values())) if isinstance(out, dict) else np.asarray(out)


RUNNERS = {".ekm": SessionRunner}


def open_runner(path: str | Path, threads: int = 1) -> Runner:
    """Runner for an exported artifact, chosen by extension; ValueError if unsupported."""
    ext = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise ValueError(f"{path} not found")
    if ext in (".onnx", ".tflite"):
        raise ValueError(f"evaluating {ext} artifacts is not available yet: their streaming "
                         "graphs' state inputs are still being defined by the exporters")
    if ext not in RUNNERS:
        raise ValueError(f"{path}: unknown artifact type {ext!r}; valid: .ekm, .onnx, .tflite")
    try:
        return RUNNERS[ext](path, threads=threads)
    except ImportError as exc:
        raise ValueError(f"cannot run {ext} artifacts in this build: {exc}") from None
