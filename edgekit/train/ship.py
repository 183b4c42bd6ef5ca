"""Ship a training checkpoint as the zoo's trained weights (used by scripts/train_zoo.sh).

    python -m edgekit.train.ship CKPT.pt --data DIR [--command "..."]

Scores the checkpoint on the test split (greedy, full utterance and streaming), then writes
`edgekit/models/weights/<model>-<size>.pt` (fp32 state_dict) and its `.json` sidecar with the
metrics, the training meta, the command that produced it, the git commit and the SHA-256.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from edgekit import models
from edgekit.eval import evaluate
from edgekit.models.weights import loader
from edgekit.train.loop import load_checkpoint
from edgekit.train.run import ASR_MODELS


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=loader.HERE, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _corpus(data_dir: str) -> dict | None:
    try:
        return json.loads((Path(data_dir) / "corpus.json").read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m edgekit.train.ship", description=__doc__)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--command", default=None, help="The training command, for the record.")
    args = ap.parse_args(argv)
    try:
        ck = load_checkpoint(args.checkpoint)
        meta = ck["meta"]
        if meta.get("model") not in ASR_MODELS:
            # the sidecar records test WER/CER; codec checkpoints have no such metric yet
            raise ValueError(f"{args.checkpoint} holds {meta.get('model') or 'no named model'}; "
                             f"shipping is implemented for {', '.join(ASR_MODELS)} checkpoints")
        full = evaluate(args.checkpoint, args.data, "test")["accuracy"]
        stream = evaluate(args.checkpoint, args.data, "test", streaming=True)["accuracy"]
    except ValueError as exc:
        print(f"ship: error: {exc}", file=sys.stderr)
        return 2
    model = models.build(meta["model"], meta["size"], pretrained=False)
    model.load_state_dict(ck["state_dict"])
    keep = ("wer", "cer", "utterances")
    record = {
        "model": meta["model"], "size": meta["size"], "step": ck["step"],
        "train": {k: meta.get(k) for k in ("data", "steps", "batch_size", "seed", "recipe")},
        "corpus": _corpus(args.data),
        "dev": meta.get("metrics"),
        "test": {"greedy": {k: full[k] for k in keep},
                 "greedy_streaming": {k: stream[k] for k in keep}},
        "command": args.command, "commit": _commit(),
    }
    path = loader.ship(model, meta["model"], meta["size"], record)
    print(f"shipped {path} (test CER {full['cer']:.3f}, WER {full['wer']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
