"""Capture a model function with torch.export, quantized layers kept opaque.

A quantized layer must reach the lowering as one node that still knows its packed weight, not
as the float matmul its fake-quant forward computes. So during capture every
`edgekit.compress.layers.Quant*` (and every float nn.LSTM, which torch.export would otherwise
flatten into an `aten.lstm` with a weight list) has its `forward` swapped for a call to one of
the `edgekit::*` custom ops below; the op carries an integer layer id that indexes the layers of
this capture. Eager calls of the ops run the layer's own forward, so a captured program is
still a correct torch program.

The NWC codec's eval-mode scalar quantizer (softmax over |h - bins| then argmax) becomes
`edgekit::nearest`, which is what it computes: each value replaced by its nearest bin.
"""

from __future__ import annotations

import contextlib
import types
import warnings

import torch
from torch import nn

from edgekit import EdgekitError
from edgekit.compress.layers import (QuantConv1d, QuantConvTranspose1d, QuantLayer, QuantLinear,
                                     QuantLSTM, lstm_cell_sequence)

# layer id -> (module path, module) for the capture in progress (single-threaded use).
_LAYERS: dict[int, tuple[str, nn.Module]] = {}


def layer(layer_id: int) -> tuple[str, nn.Module]:
    """(module path, module) of a layer registered by the running/last capture."""
    return _LAYERS[layer_id]


def conv_pads(conv) -> tuple[int, int]:
    """(left, right) zero padding of a Conv1d, including padding="valid"/"same"."""
    if conv.padding_mode != "zeros":
        raise EdgekitError(f"unsupported conv padding_mode {conv.padding_mode!r}")
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0
        total = conv.dilation[0] * (conv.kernel_size[0] - 1)
        return total // 2, total - total // 2
    return conv.padding[0], conv.padding[0]


def _conv_len(t: int, conv) -> int:
    pl, pr = conv_pads(conv)
    return (t + pl + pr - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1


@torch.library.custom_op("edgekit::qlinear", mutates_args=())
def _qlinear(x: torch.Tensor, layer_id: int) -> torch.Tensor:
    return QuantLayer.forward(_LAYERS[layer_id][1], x).clone()


@_qlinear.register_fake
def _(x, layer_id):
    return x.new_empty((*x.shape[:-1], _LAYERS[layer_id][1].base.out_features))


@torch.library.custom_op("edgekit::qconv1d", mutates_args=())
def _qconv1d(x: torch.Tensor, layer_id: int) -> torch.Tensor:
    return QuantLayer.forward(_LAYERS[layer_id][1], x).clone()


@_qconv1d.register_fake
def _(x, layer_id):
    conv = _LAYERS[layer_id][1].base
    return x.new_empty((x.shape[0], conv.out_channels, _conv_len(x.shape[2], conv)))


@torch.library.custom_op("edgekit::qconv_transpose1d", mutates_args=())
def _qconvt(x: torch.Tensor, layer_id: int) -> torch.Tensor:
    return QuantLayer.forward(_LAYERS[layer_id][1], x).clone()


@_qconvt.register_fake
def _(x, layer_id):
    c = _LAYERS[layer_id][1].base
    t = ((x.shape[2] - 1) * c.stride[0] - 2 * c.padding[0] + c.dilation[0] * (c.kernel_size[0] - 1)
         + c.output_padding[0] + 1)
    return x.new_empty((x.shape[0], c.out_channels, t))


@torch.library.custom_op("edgekit::lstm", mutates_args=())
def _lstm(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, layer_id: int,
          index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, h, c = lstm_cell_sequence(_LAYERS[layer_id][1], x, h0, c0, index)
    return y.clone(), h.clone(), c.clone()


@_lstm.register_fake
def _(x, h0, c0, layer_id, index):
    return x.new_empty((x.shape[0], x.shape[1], h0.shape[-1])), h0.new_empty(h0.shape), \
        c0.new_empty(c0.shape)


@torch.library.custom_op("edgekit::nearest", mutates_args=())
def _nearest(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    # argmin keeps the first of equal distances: ties go to the lower index, as §2.6 says
    idx = (x[..., None] - values).abs().argmin(-1)
    return values[idx]


@_nearest.register_fake
def _(x, values):
    return x.new_empty(x.shape)


def _quant_forward(op):
    def forward(self, x):
        return op(x, self._ek_id)
    return forward


def _lstm_forward(self, x, hx=None):
    """nn.LSTM-compatible forward that calls edgekit::lstm once per layer (unidirectional)."""
    base = self.base if isinstance(self, QuantLSTM) else self
    if base.bidirectional or base.proj_size:
        raise EdgekitError(f"unsupported bidirectional or projected LSTM at {self._ek_path}")
    if not base.batch_first:
        x = x.transpose(0, 1)
    if x.shape[0] != 1:
        raise ValueError(f"export needs batch 1, got {x.shape[0]} at {self._ek_path}")
    layers, hsz = base.num_layers, base.hidden_size
    if hx is None:
        hx = (x.new_zeros(layers, 1, hsz), x.new_zeros(layers, 1, hsz))
    hs, cs = [], []
    for i in range(layers):
        x, h, c = torch.ops.edgekit.lstm(x, hx[0][i], hx[1][i], self._ek_id, i)
        hs.append(h)
        cs.append(c)
    if not base.batch_first:
        x = x.transpose(0, 1)
    return x, (torch.stack(hs), torch.stack(cs))


def _quantizer_forward(self, h):
    return torch.ops.edgekit.nearest(h, self.bins), torch.zeros(h.shape, dtype=torch.long)


@contextlib.contextmanager
def opaque_layers(model: nn.Module):
    """Swap quantized layers', float LSTMs' and the NWC quantizer's forwards for edgekit ops."""
    from edgekit.models.nwc import ScalarQuantizer

    ops = {QuantLinear: torch.ops.edgekit.qlinear, QuantConv1d: torch.ops.edgekit.qconv1d,
           QuantConvTranspose1d: torch.ops.edgekit.qconv_transpose1d}
    _LAYERS.clear()
    # a QuantLayer's float `base` is reached through the QuantLayer only
    bases = {id(m.base) for m in model.modules() if isinstance(m, QuantLayer)}
    patched = []
    for path, mod in model.named_modules():
        if id(mod) in bases:
            continue
        if isinstance(mod, (QuantLSTM, nn.LSTM)):
            fwd = _lstm_forward
        elif type(mod) in ops:
            fwd = _quant_forward(ops[type(mod)])
        elif isinstance(mod, ScalarQuantizer):
            if mod.training or not float(mod.alpha.detach()) < 0:
                # only the eval-mode hard quantizer with a negative sharpness is "nearest bin"
                raise EdgekitError(f"unsupported scalar quantizer state at {path} "
                                   f"(training={mod.training}, alpha={float(mod.alpha.detach())})")
            fwd = _quantizer_forward
        else:
            continue
        mod._ek_id = len(_LAYERS)
        mod._ek_path = path
        _LAYERS[mod._ek_id] = (path, mod)
        mod.forward = types.MethodType(fwd, mod)
        patched.append(mod)
    try:
        yield
    finally:
        for mod in patched:
            del mod.forward
            del mod._ek_id
            del mod._ek_path


class _Call(nn.Module):
    """Wraps `model.<method>` so torch.export sees it as a forward."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.m = model
        self.method = method

    def forward(self, *args):
        return getattr(self.m, self.method)(*args)


def export(model: nn.Module, method: str, args: tuple):
    """torch.export `model.<method>(*args)` with opaque quantized layers (static shapes)."""
    with warnings.catch_warnings():
        # torch.export notices that an RNN's forward re-assigned its `_flat_weights` list (the
        # module's own bookkeeping, not a user tensor) and warns on stderr, before the one-line
        # error a bidirectional LSTM or a GRU gets: noise to the user
        warnings.filterwarnings("ignore", message=r".*_flat_weights", category=UserWarning)
        with opaque_layers(model), torch.no_grad():
            return torch.export.export(_Call(model, method), args, strict=False)
