"""Quantized layers: the single source of truth that every exporter lowers from (DESIGN.md).

A quantized layer keeps, per weight matrix, exactly what `edgekit.kernels.pack` takes: b-bit
`codes`, int8 `codebook`, float32 `scale`, optional `mask` and N:M pattern, `bits` and
`group_size` (a `QuantMatrix`). Its forward is a fake-quant forward: the wrapped float module
(`layer.base`) runs with its weights overwritten by the exact dequantized values
``scale * codebook[code]`` (computed once, not per call), and, when activation calibration is
enabled, its input rounded onto the calibrated int8 grid first.

(N, K) views: Linear (out, in); Conv1d (out, in/groups·k); ConvTranspose1d — stored as
(in, out/groups, k) by torch — is viewed per group as (out, in/groups·k), taps in torch's
(unflipped) order; LSTM: every `weight_ih_l*` / `weight_hh_l*` (and `weight_hr_l*`) is its
own (4H, in) matrix with per-row scales. Biases stay float32.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.compress.calibrate import int8_grid
from edgekit.compress.quantizers import QuantizedWeight, dequantize
from edgekit.compress.storage import packed_nbytes

QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.ConvTranspose1d, nn.LSTM)


def weight_2d(module: nn.Module, weight: torch.Tensor) -> np.ndarray:
    """The (N, K) view of a layer's weight (see module docstring)."""
    w = weight.detach().float()
    if isinstance(module, nn.ConvTranspose1d):
        g = module.groups
        cin, cog, k = w.shape
        w = w.reshape(g, cin // g, cog, k).permute(0, 2, 1, 3)
        return w.reshape(g * cog, (cin // g) * k).numpy().copy()
    return w.reshape(w.shape[0], -1).numpy().copy()


def weight_from_2d(module: nn.Module, w2d: np.ndarray, shape: torch.Size) -> torch.Tensor:
    """Inverse of `weight_2d`: back to torch's parameter shape."""
    w = torch.from_numpy(np.ascontiguousarray(w2d, dtype=np.float32))
    if isinstance(module, nn.ConvTranspose1d):
        g = module.groups
        cin, cog, k = shape
        return w.reshape(g, cog, cin // g, k).permute(0, 2, 1, 3).reshape(shape).contiguous()
    return w.reshape(shape)


class QuantMatrix(nn.Module):
    """One packed (N, K) weight: codes, codebook, scale, mask, bits, nm, group_size."""

    def __init__(self, qw: QuantizedWeight, nm: tuple[int, int] | None = None,
                 rounding: str = "nearest"):
        super().__init__()
        self.register_buffer("codes", torch.from_numpy(np.ascontiguousarray(qw.codes)))
        self.register_buffer("codebook", torch.from_numpy(np.ascontiguousarray(qw.codebook)))
        self.register_buffer("scale", torch.from_numpy(np.ascontiguousarray(qw.scale)))
        mask = None if qw.mask is None else torch.from_numpy(np.ascontiguousarray(qw.mask))
        self.register_buffer("mask", mask)
        self.bits = int(qw.bits)
        self.group_size = int(qw.group_size)
        self.quantizer = qw.quantizer
        self.levels = int(qw.levels)
        self.nm = None if nm is None else (int(nm[0]), int(nm[1]))
        self.rounding = rounding    # how codes were chosen: "nearest" or "gptq"

    def dequantize(self) -> np.ndarray:
        """Float32 (N, K): scale * codebook[code], 0 where masked."""
        mask = None if self.mask is None else self.mask.numpy()
        return dequantize(self.codes.numpy(), self.codebook.numpy(), self.scale.numpy(),
                          self.group_size, mask)

    def packed_args(self) -> dict:
        """Keyword arguments for `edgekit.kernels.pack` (docs/format.md §1)."""
        scale = self.scale.numpy()
        if self.group_size == 0:
            scale = scale[:, 0]
        table = self.codebook.numpy()
        if table.shape[0] == 1:   # kernels.pack takes a shared table as 1-D (2**bits,)
            table = table[0]
        return {
            "codes": self.codes.numpy().copy(),
            "bits": self.bits,
            "codebook": table.copy(),
            "scale": np.ascontiguousarray(scale, dtype=np.float32),
            "mask": None if self.mask is None else self.mask.numpy().copy(),
            "nm": self.nm,
            "group_size": self.group_size,
        }

    def nbytes(self) -> int:
        """Stored bytes as `kernels.pack` stores them (docs/format.md §1.8)."""
        n, k = self.codes.shape
        mask = None if self.mask is None else self.mask.numpy()
        return packed_nbytes(n, k, self.bits, self.codebook.shape[0], self.scale.shape[1], mask)

    def sparsity(self) -> float:
        """Fraction of weights that are masked out."""
        return 0.0 if self.mask is None else float(1.0 - self.mask.float().mean())

    def extra_repr(self) -> str:
        nm = f", nm={self.nm[0]}:{self.nm[1]}" if self.nm else ""
        return (f"shape={tuple(self.codes.shape)}, bits={self.bits}, {self.quantizer}, "
                f"levels={self.levels}, group_size={self.group_size}{nm}")


class QuantLayer(nn.Module):
    """Base: fake-quant forward around `base`, optional int8 input fake quantization."""

    def __init__(self, base: nn.Module, matrices: dict[str, QuantMatrix]):
        super().__init__()
        self.base = base
        self.matrices = nn.ModuleDict(matrices)
        self.register_buffer("act_scale", torch.tensor(1.0))
        self.register_buffer("act_zero_point", torch.tensor(0, dtype=torch.int32))
        self.act_quant = False
        self.act_method: str | None = None
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.refresh()

    def refresh(self) -> None:
        """Write the dequantized weights into `base` (after codes/scales were changed)."""
        with torch.no_grad():
            for name, qm in self.matrices.items():
                param = getattr(self.base, name)
                param.copy_(weight_from_2d(self.base, qm.dequantize(), param.shape))
        if isinstance(self.base, nn.LSTM):
            self.base.flatten_parameters()

    def set_activation_range(self, lo: float, hi: float, method: str = "minmax") -> None:
        """Store the int8 (asymmetric) input grid for [lo, hi] and enable input fake-quant.

        The range is widened to contain 0 so that zero padding stays exactly representable.
        """
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"activation range must be finite, got [{lo}, {hi}]")
        scale, zp = int8_grid(float(lo), float(hi))
        self.act_scale.fill_(scale)
        self.act_zero_point.fill_(zp)
        self.act_quant = True
        self.act_method = method

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """x rounded onto the layer's int8 input grid (identity when not calibrated)."""
        if not self.act_quant:
            return x
        return torch.fake_quantize_per_tensor_affine(
            x, float(self.act_scale), int(self.act_zero_point), -128, 127)

    def forward(self, x, *args, **kwargs):
        return self.base(self.quantize_input(x), *args, **kwargs)


class _SingleMatrix(QuantLayer):
    """Linear / Conv1d / ConvTranspose1d: one matrix, its fields exposed on the layer."""

    def __init__(self, base: nn.Module, qm: QuantMatrix):
        super().__init__(base, {"weight": qm})

    @property
    def q(self) -> QuantMatrix:
        return self.matrices["weight"]

    codes = property(lambda self: self.q.codes)
    codebook = property(lambda self: self.q.codebook)
    scale = property(lambda self: self.q.scale)
    mask = property(lambda self: self.q.mask)
    bits = property(lambda self: self.q.bits)
    nm = property(lambda self: self.q.nm)
    group_size = property(lambda self: self.q.group_size)
    weight = property(lambda self: self.base.weight)
    bias = property(lambda self: self.base.bias)

    def packed_args(self) -> dict:
        """Keyword arguments for `edgekit.kernels.pack` for this layer's (N, K) weight."""
        return self.q.packed_args()


class QuantLinear(_SingleMatrix):
    """nn.Linear with a packed codebook weight."""


class QuantConv1d(_SingleMatrix):
    """nn.Conv1d (incl. depthwise/grouped/dilated) with a packed (out, in/g·k) weight."""


class QuantConvTranspose1d(_SingleMatrix):
    """nn.ConvTranspose1d with a packed weight viewed as (out, in/g·k) per group."""


# The recurrent input h of a quantized LSTM cell uses this fixed int8 grid: h = σ·tanh lies
# in (-1, 1), so 1/127 with zero point 0 covers it with no calibration (docs/format.md §2.6).
H_SCALE, H_ZERO_POINT = 1.0 / 127.0, 0


def _fq_h(h: torch.Tensor) -> torch.Tensor:
    return torch.fake_quantize_per_tensor_affine(h, H_SCALE, H_ZERO_POINT, -128, 127)


def lstm_cell_sequence(mod: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                       index: int = 0):
    """Layer `index` of a (Quant)LSTM run step by step on batch-first x (B, T, I), h/c (B, H).

    With activation quantization on it is the `qlstm` of docs/format.md §2.6: x on the layer's
    calibrated grid (layers above the first read the previous layer's h, so they use the h
    grid), h on the fixed grid (H_SCALE, H_ZERO_POINT) at every step, and the gate sum
    W_ih·q(x_t) + W_hh·q(h) + b_ih + b_hh in that order. Without it: the float cell.
    Returns (y (B, T, H), h_T, c_T).
    """
    quant = isinstance(mod, QuantLayer) and mod.act_quant
    base = mod.base if isinstance(mod, QuantLayer) else mod
    w_ih, w_hh = getattr(base, f"weight_ih_l{index}"), getattr(base, f"weight_hh_l{index}")
    b_ih = getattr(base, f"bias_ih_l{index}", None)
    b_hh = getattr(base, f"bias_hh_l{index}", None)
    if quant:
        x = mod.quantize_input(x) if index == 0 else _fq_h(x)
    gx = F.linear(x, w_ih)   # the x half of every step at once: it does not depend on h
    ys = []
    for t in range(x.shape[1]):
        g = gx[:, t] + F.linear(_fq_h(h) if quant else h, w_hh)
        if b_ih is not None:
            g = g + b_ih
        if b_hh is not None:
            g = g + b_hh
        i, f, gg, o = g.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys, 1), h, c


class QuantLSTM(QuantLayer):
    """nn.LSTM whose gate matrices are each packed; `packed_args(name)` per matrix.

    Without activation quantization the fused nn.LSTM runs on the dequantized weights. With
    it (after calibration) the cell runs explicitly so that x and the recurrent h are rounded
    onto their int8 grids at every step exactly as the runtime's `qlstm` does
    (`lstm_cell_sequence`); unidirectional, unprojected LSTMs only.
    """

    def packed_args(self, name: str) -> dict:
        """kernels.pack kwargs for one gate matrix, e.g. 'weight_ih_l0', 'weight_hh_l0_reverse'."""
        if name not in self.matrices:
            raise ValueError(f"no quantized matrix {name!r}; have {', '.join(self.matrices)}")
        return self.matrices[name].packed_args()

    def forward(self, x, hx=None):
        base = self.base
        if not self.act_quant:
            return base(x, hx)
        if base.bidirectional or base.proj_size:
            raise ValueError("activation quantization supports unidirectional, unprojected "
                             "LSTMs only")
        if not base.batch_first:
            x = x.transpose(0, 1)
        n, hsz = base.num_layers, base.hidden_size
        if hx is None:
            z = x.new_zeros(n, x.shape[0], hsz)
            hx = (z, z)
        hs, cs = [], []
        for i in range(n):
            x, h, c = lstm_cell_sequence(self, x, hx[0][i], hx[1][i], i)
            hs.append(h)
            cs.append(c)
        if not base.batch_first:
            x = x.transpose(0, 1)
        return x, (torch.stack(hs), torch.stack(cs))


def lstm_weight_names(lstm: nn.LSTM) -> list[str]:
    """Names of an LSTM's weight matrices (the bias vectors stay float)."""
    return [n for n, _ in lstm.named_parameters() if n.startswith("weight_")]


def make_quant_layer(module: nn.Module, matrices: dict[str, QuantMatrix]) -> QuantLayer:
    """Wrap a float module (already a private copy) with its quantized matrices."""
    if isinstance(module, nn.LSTM):
        return QuantLSTM(module, matrices)
    cls = {nn.Linear: QuantLinear, nn.Conv1d: QuantConv1d,
           nn.ConvTranspose1d: QuantConvTranspose1d}
    for t, c in cls.items():
        if isinstance(module, t):
            return c(module, matrices["weight"])
    raise ValueError(f"layer type {type(module).__name__} cannot be quantized")
