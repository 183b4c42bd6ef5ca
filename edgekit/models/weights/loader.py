"""Shipped trained checkpoints of the zoo: `<model>-<size>.pt` + `<model>-<size>.json`.

The `.pt` is a plain fp32 state_dict (torch.save); the `.json` sidecar records how it was made
(data, steps, script, commit) and what it scored, plus the `.pt`'s SHA-256, which is checked
before loading so a truncated or swapped file is an error, not silently wrong weights.
`scripts/train_zoo.sh` reproduces every file here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


def paths(name: str, size: str) -> tuple[Path, Path]:
    """(checkpoint, sidecar) paths for a zoo model; they may not exist."""
    return HERE / f"{name}-{size}.pt", HERE / f"{name}-{size}.json"


def info(name: str, size: str) -> dict | None:
    """The sidecar dict of a shipped checkpoint, or None when none ships."""
    pt, side = paths(name, size)
    if not pt.is_file() or not side.is_file():
        return None
    return json.loads(side.read_text())


def _fits(model: nn.Module, state: dict) -> bool:
    own = model.state_dict()
    return set(own) == set(state) and all(own[k].shape == state[k].shape for k in own)


def load_into(model: nn.Module, name: str, size: str, required: bool = False) -> bool:
    """Copy the shipped weights into `model` if they exist and fit; True if loaded.

    With `required`, a missing or unfit checkpoint is a ValueError; a checksum mismatch is
    always one.
    """
    pt, _ = paths(name, size)
    meta = info(name, size)
    if meta is None:
        if required:
            raise ValueError(f"no trained checkpoint ships for {name} {size}")
        return False
    blob = pt.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ValueError(f"{pt} does not match the SHA-256 in its sidecar; reinstall edgekit")
    state = torch.load(pt, map_location="cpu", weights_only=True)
    if not _fits(model, state):
        if required:
            raise ValueError(f"the shipped {name} {size} checkpoint does not fit this config")
        return False
    model.load_state_dict(state)
    return True


def ship(model: nn.Module, name: str, size: str, meta: dict) -> Path:
    """Write `model`'s fp32 state_dict and its sidecar here (used by scripts/train_zoo.sh)."""
    import io

    from edgekit._io import atomic_write_bytes, atomic_write_json

    pt, side = paths(name, size)
    buf = io.BytesIO()
    torch.save({k: v.detach().float().clone().contiguous() if v.is_floating_point() else v
                for k, v in model.state_dict().items()}, buf)
    blob = buf.getvalue()
    atomic_write_bytes(pt, blob)
    atomic_write_json(side, {**meta, "file": pt.name, "bytes": len(blob),
                             "sha256": hashlib.sha256(blob).hexdigest()})
    return pt
