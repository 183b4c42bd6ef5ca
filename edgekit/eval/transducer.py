"""Greedy RNN-T decoding of an exported `.ekm` through its three graphs in the C++ runtime.

An RNN-T artifact holds `encoder` (streaming: feature chunk -> encoder frames, LSTM state
inside), `predictor` (one label -> prediction vector, LSTM state inside) and `joiner`
(encoder frame + prediction vector -> logits). The search is the one of
`edgekit.models.rnnt.greedy_decode`, so the artifact and the PyTorch streaming path can be
compared transcript for transcript: the predictor starts from the blank label and advances
only when a label is emitted, up to `max_symbols` labels per encoder frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.models.common import BLANK

GRAPHS = ("encoder", "predictor", "joiner")


class TransducerSessions:
    """The encoder, predictor and joiner of one RNN-T `.ekm`, each in its own Session."""

    name = "ekm-rnnt"

    def __init__(self, path: str | Path, threads: int = 1, max_symbols: int = 4):
        from edgekit.runtime import Session

        if max_symbols < 1:
            raise ValueError(f"max_symbols must be >= 1, got {max_symbols}")
        self.enc, self.pred, self.join = (Session(str(path), graph=g, threads=threads)
                                          for g in GRAPHS)
        self.meta = self.enc.meta
        self.chunk = int(self.enc.inputs[0]["shape"][1])
        self.max_symbols = max_symbols
        self._token = self.pred.inputs[0]["name"]
        self._join_enc, self._join_pred = (d["name"] for d in self.join.inputs)

    def _predict(self, token: int) -> np.ndarray:
        out = self.pred.step({self._token: np.array([[token]], dtype=np.int64)})
        return next(iter(out.values())).reshape(1, -1)

    def decode(self, feats) -> list[int]:
        """Greedy label ids for one utterance's features (T, 80), zero-padded to whole chunks."""
        x = np.asarray(feats, dtype=np.float32)[None]
        pad = (-x.shape[1]) % self.chunk
        if pad:
            x = np.concatenate([x, np.zeros((1, pad, x.shape[2]), np.float32)], axis=1)
        self.enc.reset()
        self.pred.reset()
        pred, hyp = self._predict(BLANK), []
        for i in range(0, x.shape[1], self.chunk):
            enc = next(iter(self.enc.step(np.ascontiguousarray(x[:, i : i + self.chunk]))
                            .values()))
            for t in range(enc.shape[1]):
                frame = np.ascontiguousarray(enc[:, t])
                for _ in range(self.max_symbols):
                    logits = next(iter(self.join.step({self._join_enc: frame,
                                                       self._join_pred: pred}).values()))
                    tok = int(np.argmax(logits))
                    if tok == BLANK:
                        break
                    hyp.append(tok)
                    pred = self._predict(tok)
        return hyp
