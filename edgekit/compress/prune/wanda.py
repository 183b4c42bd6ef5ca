"""Wanda pruning (METHODS.md §6): score S_ij = |W_ij| · ‖X_j‖₂, lowest floor(s·K) per row zeroed.

‖X_j‖₂ is the norm of input feature j of the (N, K) weight view over all calibration frames.
For a convolution, feature j = (input channel, tap) and its frames are the im2col columns;
`feature_sqsum` computes those sums of squares exactly, including padding and stride. The
sequential, layer-by-layer calibration lives in the compression pipeline
(`edgekit.compress.pipeline`), which feeds each layer the outputs of already-pruned layers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.compress.prune.magnitude import lowest_per_row


def wanda_scores(w, xnorm) -> np.ndarray:
    """|W| · ‖X_j‖₂ for a (N, K) weight; `xnorm` is (K,) or (N, K) (grouped convs)."""
    w = np.abs(np.asarray(w, np.float64))
    xn = np.asarray(xnorm, np.float64)
    if xn.shape not in ((w.shape[1],), w.shape):
        raise ValueError(f"activation norms of shape {xn.shape} do not fit weight {w.shape}")
    if np.any(xn < 0) or not np.all(np.isfinite(xn)):
        raise ValueError("activation norms must be finite and >= 0")
    return w * xn


def wanda_mask(w, xnorm, sparsity: float) -> np.ndarray:
    """Per-row unstructured Wanda mask: exactly floor(s·K) zeros in every row."""
    return lowest_per_row(wanda_scores(w, xnorm), sparsity)


def feature_sqsum(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Sum over frames of X_j² for every row's input features -> (N, K) float64.

    Linear: frames are all leading dims. Conv1d: im2col columns (exact, incl. padding mode,
    stride, dilation, groups). ConvTranspose1d: every input sample meets every tap once, so
    feature (c, tap) gets channel c's sum of squares (edge cropping by `padding` ignored).
    """
    x = x.detach().double()
    if isinstance(module, nn.Linear):
        s = (x.reshape(-1, x.shape[-1]) ** 2).sum(0).numpy()
        return np.broadcast_to(s, (module.out_features, s.size))
    if x.dim() == 2:          # unbatched (C, T)
        x = x.unsqueeze(0)
    if isinstance(module, nn.ConvTranspose1d):
        g = module.groups
        cin, cout, k = module.in_channels, module.out_channels, module.kernel_size[0]
        ch = (x ** 2).sum(dim=(0, 2)).numpy().reshape(g, cin // g, 1)
        per_group = np.repeat(ch, k, axis=2).reshape(g, -1)
        return np.repeat(per_group, cout // g, axis=0)
    if isinstance(module, nn.Conv1d):
        x = conv1d_input(module, x)
        k, d, st = module.kernel_size[0], module.dilation[0], module.stride[0]
        lout = (x.shape[-1] - d * (k - 1) - 1) // st + 1
        taps = [x[:, :, t * d: t * d + st * (lout - 1) + 1: st] for t in range(k)]
        sq = torch.stack([(tap ** 2).sum(dim=(0, 2)) for tap in taps], dim=1).numpy()  # (C, k)
        g = module.groups
        per_group = sq.reshape(g, -1)  # (g, C/g * k) in the (in/g, k) weight order
        return np.repeat(per_group, module.out_channels // g, axis=0)
    raise ValueError(f"Wanda feature norms: unsupported layer type {type(module).__name__}")


def conv1d_input(module: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """The Conv1d's input as (B, C, T) with its padding applied (by `padding_mode`), so that
    the im2col columns can be read off directly."""
    if x.dim() == 2:          # unbatched (C, T)
        x = x.unsqueeze(0)
    if isinstance(module.padding, str):
        raise ValueError("Wanda on Conv1d with string padding is not supported")
    p = module.padding[0]
    if p:
        x = F.pad(x, (p, p), mode="constant" if module.padding_mode == "zeros"
                  else module.padding_mode)
    return x


def lstm_feature_sqsum(lstm: nn.LSTM, x, hx=None) -> dict[str, np.ndarray]:
    """Per gate matrix of an LSTM, the (4H, K) sums of squares of its input features."""
    out = {}
    for name, feats in lstm_features(lstm, x, hx).items():
        s = (feats.double() ** 2).sum(dim=0).numpy()
        out[name] = np.broadcast_to(s, (4 * lstm.hidden_size, s.size))
    return out


def lstm_features(lstm: nn.LSTM, x, hx=None) -> dict[str, torch.Tensor]:
    """Per gate matrix of an LSTM, its input features over all frames: (frames, K).

    weight_ih_l{k}: the input of layer k (layer 0: x; above: the previous layer's outputs);
    weight_hh_l{k}: the previous hidden state h_{t-1} (h0 first). The stacked LSTM is re-run
    one layer and direction at a time to expose those inner sequences.
    """
    if lstm.proj_size:
        raise ValueError("calibrating an LSTM with proj_size is not supported")
    if not isinstance(x, torch.Tensor):
        raise ValueError("calibrating an LSTM needs a plain tensor input (not a PackedSequence)")
    x = x.detach().float()
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(0)
    elif not lstm.batch_first:
        x = x.transpose(0, 1)
    ndir, hsz = (2 if lstm.bidirectional else 1), lstm.hidden_size
    out: dict[str, torch.Tensor] = {}
    inp = x
    for layer in range(lstm.num_layers):
        ys = []
        for d in range(ndir):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            h0 = torch.zeros(x.shape[0], hsz)
            c0 = torch.zeros(x.shape[0], hsz)
            if hx is not None:
                h0 = hx[0][layer * ndir + d].detach().float().reshape(-1, hsz)
                c0 = hx[1][layer * ndir + d].detach().float().reshape(-1, hsz)
            one = nn.LSTM(inp.shape[-1], hsz, 1, bias=lstm.bias, batch_first=True)
            with torch.no_grad():
                kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if lstm.bias else ())
                for kind in kinds:
                    getattr(one, f"{kind}_l0").copy_(getattr(lstm, f"{kind}{sfx}"))
                seq = inp.flip(1) if d else inp
                y, _ = one(seq, (h0.unsqueeze(0), c0.unsqueeze(0)))
                y = y.flip(1) if d else y
            hprev = (torch.cat([h0.unsqueeze(1), y[:, :-1]], 1) if not d
                     else torch.cat([y[:, 1:], h0.unsqueeze(1)], 1))
            out[f"weight_ih{sfx}"] = inp.reshape(-1, inp.shape[-1])
            out[f"weight_hh{sfx}"] = hprev.reshape(-1, hsz)
            ys.append(y)
        inp = torch.cat(ys, dim=-1)
    return out
