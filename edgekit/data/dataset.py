"""Torch Dataset over a corpus directory (`edgekit data synth` output) and the batch collate.

    ds = SpeechDataset(dir, "train")          # items: dict(wave, feats, tokens, text, id)
    loader = DataLoader(ds, batch_size=16, collate_fn=collate)

Features are computed once per utterance on first access and kept in memory (a 2-hour corpus
is ~230 MB of features), so epochs after the first cost only the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from edgekit.data import features, synth, vocab


def read_manifest(data_dir: str | Path, split: str) -> list[dict]:
    """Rows of `<data_dir>/<split>.jsonl`; ValueError naming what is wrong."""
    if split not in synth.SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(synth.SPLITS)}")
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} not found (make a corpus with 'edgekit data synth -o DIR')")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["audio"], row["text"]  # noqa: B018 - both keys are required
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{n}: not a manifest row with 'audio' and 'text'") from None
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no utterances")
    return rows


class SpeechDataset(Dataset):
    """Utterances of one split: 16 kHz wave, normalised log-mel, character tokens, text."""

    def __init__(self, data_dir: str | Path, split: str = "train", limit: int | None = None):
        self.root = Path(data_dir)
        self.rows = read_manifest(data_dir, split)[:limit]
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def wave(self, i: int) -> torch.Tensor:
        """Float32 samples of utterance `i`."""
        return torch.from_numpy(synth.read_wav(self.root / self.rows[i]["audio"]).copy())

    def __getitem__(self, i: int) -> dict:
        if i not in self._cache:
            row = self.rows[i]
            wave = self.wave(i)
            self._cache[i] = {
                "id": row.get("id", str(i)),
                "text": vocab.normalize(row["text"]),
                "tokens": torch.tensor(vocab.encode(row["text"]), dtype=torch.long),
                "feats": features.log_mel(wave),
                "samples": len(wave),
            }
        return self._cache[i]


def collate(items: list[dict]) -> dict:
    """Zero-pad features and tokens to the longest item; keep true lengths."""
    feats = torch.nn.utils.rnn.pad_sequence([it["feats"] for it in items], batch_first=True)
    tokens = torch.nn.utils.rnn.pad_sequence([it["tokens"] for it in items], batch_first=True)
    return {
        "feats": feats,
        "feat_lens": torch.tensor([len(it["feats"]) for it in items]),
        "tokens": tokens,
        "token_lens": torch.tensor([len(it["tokens"]) for it in items]),
        "text": [it["text"] for it in items],
        "id": [it["id"] for it in items],
    }


def calibration_batches(data_dir, model_name: str, n: int = 8, split: str = "train") -> list:
    """Real-speech calibration inputs for `edgekit.compress.compress(model, recipe, calib=...)`.

    The first `n` utterances of `split`, one per batch, in the form zoo model `model_name`
    takes: a (1, N) wave for NWC, (features, tokens) for RNN-T, (1, T, 80) features otherwise.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    ds = SpeechDataset(data_dir, split, limit=n)
    if model_name.startswith("nwc"):
        return [ds.wave(i)[None] for i in range(len(ds))]
    if model_name == "rnnt":
        return [(ds[i]["feats"][None], ds[i]["tokens"][None]) for i in range(len(ds))]
    return [ds[i]["feats"][None] for i in range(len(ds))]
