"""The training loop every edgekit trainer (ASR, codec, QAT) runs, and checkpoint I/O.

Hooks for methods that act during training (QAT, pruning):
  * `regularizer(model) -> scalar tensor` is added to the task loss before backward
    (e.g. S8BQAT's MRACos term);
  * each callback may define `on_step(model, step)`, called after every optimizer step with
    the 1-based step (e.g. a periodic hard compressor, a pruning schedule), and
    `on_end(model)`, called once after the last step (e.g. a final snap to centroids).
Callbacks run under `torch.no_grad()`, so they may edit parameters in place.

Checkpoints are `torch.save` dicts written atomically (`edgekit._io`) and read back with
`torch.load(weights_only=True)`: {"state_dict", "meta", "optimizer"?, "step"}.
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from edgekit._io import atomic_write_bytes

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainConfig:
    """Optimisation settings. `steps` counts optimizer steps; warm-up then cosine decay."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 200
    grad_clip: float = 5.0
    log_every: int = 50
    eval_every: int = 0  # 0: evaluate only at the end
    threads: int = 1
    stop_at: int = 0  # >0: end after this step; the schedule still spans `steps`

    def __post_init__(self):
        for key in ("steps", "warmup", "log_every", "eval_every", "threads", "stop_at"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key} must be a non-negative int, got {value!r}")
        if self.steps < 1 or self.threads < 1:
            raise ValueError("steps and threads must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


@dataclass
class TrainResult:
    """What a run did: final step, last logged values, eval metrics, wall time."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at 1-based `step`: linear warm-up, cosine decay to 5 % of `lr`."""
    if step <= cfg.warmup:
        return cfg.lr * step / max(1, cfg.warmup)
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _forever(batches: Callable[[], Iterable]) -> Iterator:
    while True:
        empty = True
        for batch in batches():
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data yields no batches")


def train(
    model: nn.Module,
    batches: Callable[[], Iterable],
    loss_fn: LossFn,
    cfg: TrainConfig,
    *,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    callbacks: Iterable[Any] = (),
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    checkpoint: Callable[[nn.Module, int, dict], None] | None = None,
    log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train `model` in place for `cfg.steps` AdamW steps and return a TrainResult.

    batches: called once per epoch, returns an iterable of batches (re-shuffled by the caller).
    loss_fn(model, batch) -> (task loss, dict of floats to log).
    regularizer / callbacks: the QAT and pruning hooks described in the module docstring.
    evaluate(model) -> metrics, run every `cfg.eval_every` steps and at the end (model in eval
    mode, no grad); checkpoint(model, step, metrics) is called after each evaluation.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(model, batches, loss_fn, cfg, regularizer, list(callbacks), evaluate,
                      checkpoint, log)
    finally:
        torch.set_num_threads(threads)  # a library call must not leave the process throttled


def _train(model, batches, loss_fn, cfg, regularizer, callbacks, evaluate, checkpoint, log):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = TrainResult()
    start = time.monotonic()
    sums: dict[str, float] = {}
    data = _forever(batches)
    model.train()
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    for step in range(1, end + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, logged = loss_fn(model, next(data))
        if regularizer is not None:
            reg = regularizer(model)
            logged = {**logged, "reg": float(reg.detach())}
            loss = loss + reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for cb in callbacks:
                if hasattr(cb, "on_step"):
                    cb.on_step(model, step)
        for key, value in {"loss": loss.item(), **logged}.items():
            sums[key] = sums.get(key, 0.0) + value
        if step % max(1, cfg.log_every) == 0 or step == end:
            n = step % max(1, cfg.log_every) or max(1, cfg.log_every)
            row = {"step": step, "lr": lr_at(step, cfg),
                   "seconds": round(time.monotonic() - start, 1),
                   **{k: round(v / n, 4) for k, v in sums.items()}}
            result.history.append(row)
            sums = {}
            if log:
                log(row)
        last = step == end
        if evaluate and ((cfg.eval_every and step % cfg.eval_every == 0) or last):
            if last:
                with torch.no_grad():
                    for cb in callbacks:
                        if hasattr(cb, "on_end"):
                            cb.on_end(model)
            model.eval()
            with torch.no_grad():
                result.metrics = evaluate(model)
            model.train()
            if log:
                log({"step": step, **result.metrics})
            if checkpoint:
                checkpoint(model, step, result.metrics)
        result.step = step
    if not evaluate:
        with torch.no_grad():
            for cb in callbacks:
                if hasattr(cb, "on_end"):
                    cb.on_end(model)
    model.eval()
    result.seconds = time.monotonic() - start
    return result


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _torch_load_reason(exc: Exception) -> str:
    """The informative line of a torch.load error (its messages wrap the cause in advice)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_TORCH_BOILERPLATE)]
    return (useful or lines or [type(exc).__name__])[0]


def check_output_path(path: str | Path) -> None:
    """ValueError unless `path` can be written (atomically) later: checked before a long run.

    The writers create missing parent directories, so the nearest existing ancestor must be a
    writable directory, and `path` itself must not be a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: directory {parent} is not writable")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict, step: int = 0) -> None:
    """Atomically write {"state_dict", "meta", "step"}; meta must be plain JSON-like data."""
    buf = io.BytesIO()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta, "step": int(step)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (or a bare state_dict) with weights_only=True; ValueError if unusable."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {path} not found") from None
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a loadable weights-only checkpoint "
                         f"({_torch_load_reason(exc)})") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj, "meta": {}, "step": 0}
    raise ValueError(f"{path}: expected a state_dict or an edgekit checkpoint")
