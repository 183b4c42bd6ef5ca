"""Data-aware code choice with error feedback (GPTQ-style) — an edgekit extension.

Not in METHODS.md: nearest rounding minimises the *weight* error, but what matters is the
layer's *output* error ‖X (W − Ŵ)ᵀ‖². With the codebook and scales fixed (from the weight-only
fit), the codes of one input column are chosen at a time and the rounding error of that
column is pushed onto the columns not yet chosen, weighted by the inverse input covariance
H⁻¹ (H = Σ_frames x xᵀ over calibration inputs), as in GPTQ (Frantar et al., 2022). The
representation stays exactly codes + codebook + scales (+ mask: pruned weights are forced to
0 and their error is fed forward too). Gains depend on how anisotropic H is.

H from fewer frames than inputs K is rank-deficient: the recursion then fits the few observed
directions at the expense of all others (worse on new data), so the pipeline falls back to
nearest rounding for such matrices and records it (`QuantMatrix.rounding`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.compress.prune.wanda import conv1d_input, lstm_features
from edgekit.compress.quantizers import _assign


def input_hessians(module: nn.Module, args: tuple) -> dict[str, tuple[np.ndarray, int]]:
    """Per weight matrix name: (Σ x xᵀ of its (N, K) view's input features (groups, K, K),
    number of frames summed)."""
    x = args[0]
    if isinstance(module, nn.LSTM):
        feats = lstm_features(module, x, args[1] if len(args) > 1 else None)
        return {k: (_gram(v.double())[None], v.shape[0]) for k, v in feats.items()}
    x = x.detach().double()
    if isinstance(module, nn.Linear):
        f = x.reshape(-1, x.shape[-1])
        return {"weight": (_gram(f)[None], f.shape[0])}
    if isinstance(module, nn.Conv1d) and not isinstance(module.padding, str):
        x = conv1d_input(module, x)
        k, d, st, g = (module.kernel_size[0], module.dilation[0], module.stride[0],
                       module.groups)
        cols = F.unfold(x.unsqueeze(2), (1, k), dilation=(1, d), stride=(1, st))  # (B, C*k, L)
        cols = cols.reshape(cols.shape[0], g, -1, cols.shape[-1])  # group-major, like W
        cols = cols.permute(1, 0, 3, 2).reshape(g, -1, cols.shape[2])  # (g, frames, C/g*k)
        return {"weight": (torch.einsum("gfi,gfj->gij", cols, cols).numpy(), cols.shape[1])}
    raise ValueError(f"gptq rounding does not support {type(module).__name__} "
                     f"(Linear, Conv1d with numeric padding and LSTM only)")


def _gram(f: torch.Tensor) -> np.ndarray:
    return (f.T @ f).numpy()


def gptq_codes(w: np.ndarray, mask: np.ndarray, table: np.ndarray, scale_k: np.ndarray,
               lo: int, h: np.ndarray, damp: float = 0.01, block: int = 128) -> np.ndarray:
    """Codes (N, K) for weights `w` with per-element scales `scale_k` (N, K), rows' `table`.

    Each column takes the entries nearest its error-updated weights; masked weights count as
    0, but their codes are left for the caller to zero. `damp` adds
    damp·mean(diag H) to the diagonal (numerical safety; features never seen get H_jj = 1).
    Errors inside a block of columns are propagated at once, the rest lazily per block.
    """
    n, k = w.shape
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h[np.diag_indices(k)] += damp * float(np.mean(np.diag(h)))
    u = np.linalg.cholesky(np.linalg.inv(h)).T         # H⁻¹ = uᵀu, u upper triangular
    w = np.array(w, dtype=np.float64)
    codes = np.zeros((n, k), np.uint8)
    rows = np.arange(n)
    tab = table.astype(np.float64)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        err = np.zeros((n, b1 - b0))
        for j in range(b0, b1):
            c = _assign(w[:, j:j + 1], table, scale_k[:, j:j + 1], 0, lo)[:, 0]
            vals = tab[0][c] if tab.shape[0] == 1 else tab[rows, c]
            q = np.where(mask[:, j], vals * scale_k[:, j], 0.0)
            codes[:, j] = c
            e = (w[:, j] - q) / u[j, j]
            w[:, j + 1:b1] -= np.outer(e, u[j, j + 1:b1])
            err[:, j - b0] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return codes
