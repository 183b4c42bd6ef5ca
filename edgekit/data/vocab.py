"""Character vocabulary shared by data, training and decoding.

Ids: 0 is the CTC/RNN-T blank (`edgekit.models.BLANK`), then space, apostrophe and a-z. The
zoo heads are wider (tiny 64, small 512); the unused ids are never targets, so training drives
their logits down and decoding never emits them. A character vocabulary keeps the synthetic
task honest: the model has to spell, there is no word list to lean on.
"""

from __future__ import annotations

import re

from edgekit.models.common import BLANK

CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"
_TO_ID = {c: i + 1 for i, c in enumerate(CHARS)}
SIZE = len(CHARS) + 1  # ids actually used, blank included
_KEEP = re.compile(r"[^a-z' ]+")


def normalize(text: str) -> str:
    """Lower-case, map anything outside a-z/apostrophe to space, collapse spaces."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return " ".join(_KEEP.sub(" ", text.lower()).split())


def encode(text: str) -> list[int]:
    """Token ids of `text` after `normalize` (never contains the blank)."""
    return [_TO_ID[c] for c in normalize(text)]


def decode(ids) -> str:
    """Text of token ids; blanks and ids outside the character set are dropped."""
    out = []
    for i in ids:
        i = int(i)
        if i != BLANK and 1 <= i <= len(CHARS):
            out.append(CHARS[i - 1])
    return "".join(out)


def check_head(vocab: int) -> None:
    """Raise ValueError if a model head of `vocab` outputs cannot hold every character."""
    if vocab < SIZE:
        raise ValueError(f"model vocabulary {vocab} is smaller than the {SIZE} characters needed")
