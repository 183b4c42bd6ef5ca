"""Quantized layers: the single source of truth that every exporter lowers from (DESIGN.md).

A quantized layer keeps, per weight matrix, exactly what `edgekit.kernels.pack` takes: b-bit
`codes`, int8 `codebook`, float32 `scale`, optional `mask` and N:M pattern, `bits` and
`group_size` (a `QuantMatrix`). Its forward is a fake-quant forward: the wrapped float module
(`layer.base`) runs with its weights overwritten by the exact dequantized values
``scale * codebook[code]`` (computed once, not per call), and, when activation calibration is
enabled, its input rounded onto the calibrated int8 grid first.

With activation quantization on (`act_quant`, set by calibration) the forward is instead the
runtime's integer arithmetic (docs/format.md §2.6): int8 input codes times the integer weight
values ``codebook[code]``, summed exactly per weight group (in float64, where such integer sums
are exact), then the float32 epilogue in the runtime's order (`exact_linear`). A float32 GEMM on
dequantized operands rounds in a shape-dependent order, and one flipped int8 code downstream
costs the model its parity with every integer runtime (docs/export.md, "Parity").

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

    def int_weight(self) -> torch.Tensor:
        """Float64 (N, K): the integer weight values codebook[code], 0 where masked.

        Cached; the key is the buffers' identity and in-place version counters, so changed
        codes (GPTQ, refresh, load_state_dict) rebuild it."""
        bufs = (self.codes, self.codebook, self.mask)
        key = tuple((id(b), b.data_ptr(), b._version) for b in bufs if b is not None)
        cached = getattr(self, "_int_weight", None)
        if cached is None or cached[0] != key:
            self._int_weight = (key, self._int_weight_uncached())
        return self._int_weight[1]

    def _int_weight_uncached(self) -> torch.Tensor:
        table = self.codebook.to(torch.float64)
        codes = self.codes.to(torch.int64)
        if table.shape[0] == 1:
            w = table[0][codes]
        else:
            w = torch.gather(table, 1, codes)
        if self.mask is not None:
            w = w * self.mask.to(torch.float64)
        return w

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


def act_codes(x: torch.Tensor, scale, zero_point: int) -> torch.Tensor:
    """Float64 ``q - zero_point`` of x's int8 codes on the grid, with exactly the rounding of
    `torch.fake_quantize_per_tensor_affine` (the runtime's quantizer, docs/format.md §2.6).

    The codes are read back from the fake-quant output: (q - zp) * scale is one float32
    rounding away from an integer of magnitude <= 255 times scale, so dividing by scale in
    float64 and rounding recovers the integer exactly.
    """
    s = float(scale)
    fq = torch.fake_quantize_per_tensor_affine(x.float(), s, int(zero_point), -128, 127)
    return torch.round(fq.double() / s)


def exact_linear(d: torch.Tensor, w_int: torch.Tensor, scale: torch.Tensor, group_size: int,
                 x_scale, bias: torch.Tensor | None, groups: int = 1) -> torch.Tensor:
    """What the runtime's `linear_f32` computes, as float32 (M, N).

    d: float64 (M, groups·Kg) integer activations ``q - zp``; w_int: float64 (N, Kg) integer
    weights (`QuantMatrix.int_weight`), N = groups·(N/groups), conv group j reading columns
    [j·Kg, (j+1)·Kg) of d and producing rows [j·N/groups, (j+1)·N/groups); scale: float32
    (N, ngroups). Every product and partial sum is an integer below 2^53, so the float64
    contraction is exact in any order, like the kernels' int32 one. The epilogue is
    `epilogue_f32_rows`: y = 0; y += scale[n, g] * float32(acc[g]) for each weight group in
    order; y *= x_scale; y += bias — one float32 rounding per step, as separate tensor ops.
    """
    m = d.shape[0]
    n, kg = w_int.shape
    ng = scale.shape[1]
    gs = kg if ng == 1 else group_size
    padk = ng * gs - kg   # a last partial weight group: zero columns add nothing
    if groups == 1 and ng == 1:
        acc = (d @ w_int.T).reshape(m, n, 1).float()
    else:
        dg = F.pad(d.reshape(m, groups, kg), (0, padk)).reshape(m, groups, ng, gs)
        wg = F.pad(w_int, (0, padk)).reshape(groups, n // groups, ng, gs)
        acc = torch.einsum("mgjs,gcjs->mgcj", dg, wg).reshape(m, n, ng).float()
    sc = scale.float()
    y = torch.zeros(m, n, dtype=torch.float32)
    for j in range(ng):
        y = y + sc[:, j] * acc[:, :, j]
    y = y * torch.tensor(float(x_scale), dtype=torch.float32)
    if bias is not None:
        y = y + bias.detach().float()
    return y


def _conv_pads(conv: nn.Conv1d) -> tuple[int, int]:
    k, dil = conv.kernel_size[0], conv.dilation[0]
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0
        total = dil * (k - 1)   # "same": torch puts the odd element on the right
        return total // 2, total - total // 2
    return conv.padding[0], conv.padding[0]


def _conv_cols(d: torch.Tensor, conv: nn.Conv1d) -> tuple[torch.Tensor, int]:
    """im2col of float64 codes d (B, Cin, T): rows (B·Tout, Cin·k) in (group, ci, tap) order.
    Padding is code 0 here, i.e. x_zp: the real value 0, as the runtime pads."""
    k, dil, st, g = conv.kernel_size[0], conv.dilation[0], conv.stride[0], conv.groups
    if conv.padding_mode != "zeros":
        d = F.pad(d, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
    else:
        d = F.pad(d, _conv_pads(conv))
    b, cin, _ = d.shape
    cols = d.unfold(2, dil * (k - 1) + 1, st)[..., ::dil]          # (B, Cin, Tout, k)
    tout = cols.shape[2]
    cols = cols.reshape(b, g, cin // g, tout, k).permute(0, 3, 1, 2, 4)
    return cols.reshape(b * tout, cin * k), tout


def _conv_t_cols(d: torch.Tensor, conv: nn.ConvTranspose1d) -> tuple[torch.Tensor, int]:
    """Gathered im2col of a transposed conv: output o reads input t through tap j when
    o = t·stride − padding + j·dilation; a tap with no such t reads code 0 (a real 0)."""
    k, dil, st, g = conv.kernel_size[0], conv.dilation[0], conv.stride[0], conv.groups
    pad, opad = conv.padding[0], conv.output_padding[0]
    b, cin, t = d.shape
    tout = (t - 1) * st - 2 * pad + dil * (k - 1) + opad + 1
    o = np.arange(tout)[:, None] + pad - np.arange(k)[None, :] * dil
    ti = o // st
    ok = (o % st == 0) & (ti >= 0) & (ti < t)
    idx = torch.from_numpy(np.clip(ti, 0, t - 1).reshape(-1))
    cols = d[:, :, idx].reshape(b, cin, tout, k) * torch.from_numpy(ok.astype(np.float64))
    cols = cols.reshape(b, g, cin // g, tout, k).permute(0, 3, 1, 2, 4)
    return cols.reshape(b * tout, cin * k), tout


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
        if self.act_quant and isinstance(self, _SingleMatrix) and not args and not kwargs:
            return self.exact_forward(x)
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

    def exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The runtime's integer-exact forward on the calibrated input grid (`exact_linear`)."""
        base, q = self.base, self.q
        d = act_codes(x, self.act_scale, int(self.act_zero_point))
        w = q.int_weight()

        def lin(rows, groups=1):
            return exact_linear(rows, w, q.scale, q.group_size, self.act_scale, base.bias, groups)
        if isinstance(base, nn.Linear):
            return lin(d.reshape(-1, d.shape[-1])).reshape(*d.shape[:-1], -1)
        unbatched = d.dim() == 2
        if unbatched:
            d = d.unsqueeze(0)
        cols_of = _conv_t_cols if isinstance(base, nn.ConvTranspose1d) else _conv_cols
        cols, tout = cols_of(d, base)
        y = lin(cols, base.groups).reshape(d.shape[0], tout, -1).transpose(1, 2)
        return y[0] if unbatched else y


class QuantLinear(_SingleMatrix):
    """nn.Linear with a packed codebook weight."""


class QuantConv1d(_SingleMatrix):
    """nn.Conv1d (incl. depthwise/grouped/dilated) with a packed (out, in/g·k) weight."""


class QuantConvTranspose1d(_SingleMatrix):
    """nn.ConvTranspose1d with a packed weight viewed as (out, in/g·k) per group."""


# The recurrent input h of a quantized LSTM cell uses this fixed int8 grid: h = σ·tanh lies
# in (-1, 1), so 1/127 with zero point 0 covers it with no calibration (docs/format.md §2.6).
H_SCALE, H_ZERO_POINT = 1.0 / 127.0, 0
_H_SCALE32 = float(np.float32(H_SCALE))   # the float32 the file stores and the runtime uses


def lstm_cell_sequence(mod: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                       index: int = 0):
    """Layer `index` of a (Quant)LSTM run step by step on batch-first x (B, T, I), h/c (B, H).

    With activation quantization on it is the `qlstm` of docs/format.md §2.6: x on the layer's
    calibrated grid (layers above the first read the previous layer's h, so they use the h
    grid), h on the fixed grid (H_SCALE, H_ZERO_POINT) at every step, both matmuls integer-exact
    (`exact_linear`, no bias in the epilogue), and the gate sum W_ih·q(x_t) + W_hh·q(h) + b_ih
    + b_hh in that order. Without it: the float cell.
    Returns (y (B, T, H), h_T, c_T).
    """
    quant = isinstance(mod, QuantLayer) and mod.act_quant
    base = mod.base if isinstance(mod, QuantLayer) else mod
    w_ih, w_hh = getattr(base, f"weight_ih_l{index}"), getattr(base, f"weight_hh_l{index}")
    b_ih = getattr(base, f"bias_ih_l{index}", None)
    b_hh = getattr(base, f"bias_hh_l{index}", None)
    if quant:
        qi, qh = mod.matrices[f"weight_ih_l{index}"], mod.matrices[f"weight_hh_l{index}"]
        wi, wh = qi.int_weight(), qh.int_weight()
        xs, xzp = (mod.act_scale, int(mod.act_zero_point)) if index == 0 else (_H_SCALE32,
                                                                             H_ZERO_POINT)
        bsz, steps = x.shape[:2]
        dx = act_codes(x, xs, xzp).reshape(bsz * steps, -1)
        gx = exact_linear(dx, wi, qi.scale, qi.group_size, xs, None).reshape(bsz, steps, -1)

        def hmat(h):
            return exact_linear(act_codes(h, _H_SCALE32, H_ZERO_POINT), wh, qh.scale,
                                qh.group_size, _H_SCALE32, None)
    else:
        gx = F.linear(x, w_ih)   # the x half of every step at once: it does not depend on h

        def hmat(h):
            return F.linear(h, w_hh)
    ys = []
    for t in range(x.shape[1]):
        g = gx[:, t] + hmat(h)
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
