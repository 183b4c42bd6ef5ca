"""With activation quantization on, a quantized layer's forward is the runtime's integer
arithmetic bit for bit: `kernels.linear_f32` for Linear, and the lowered graph on the C++
runtime (`Session`) and the numpy/kernels interpreter for Conv1d (stride, dilation, groups,
padding), ConvTranspose1d and a 2-layer LSTM — with weight groups, codebooks and masks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress import compress
from edgekit.compress.layers import (QuantMatrix, QuantLinear, act_codes, make_quant_layer,
                                     weight_2d)
from edgekit.compress.quantizers import quantize
from edgekit.export.pipeline import calibrate_activations

kernels = pytest.importorskip("edgekit.kernels")
pytest.importorskip("edgekit._C")


def _quant_linear(n, k, bits, group_size, codebook, sparsity, seed):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    w = weight_2d(lin, lin.weight)
    rng = np.random.default_rng(seed)
    mask = rng.random(w.shape) >= sparsity if sparsity else None
    quantizer = "uniform" if codebook == "tensor" else "lloyd_max"
    qw = quantize(w, bits, quantizer, "group" if group_size else "channel", group_size,
                  codebook=codebook, mask=mask)
    layer = make_quant_layer(lin, {"weight": QuantMatrix(qw)})
    layer.set_activation_range(-2.5, 3.0)
    return layer


@pytest.mark.parametrize("n,k,bits,group_size,codebook,sparsity", [
    (24, 200, 8, 0, "tensor", 0.0),      # one scale per row
    (24, 200, 4, 64, "tensor", 0.0),     # 4 weight groups, the last one partial (8 columns)
    (16, 192, 3, 64, "channel", 0.5),    # per-row codebooks and a zero-weight mask
    (8, 64, 5, 0, "channel", 0.3),
])
def test_linear_equals_kernel_bit_for_bit(n, k, bits, group_size, codebook, sparsity):
    layer = _quant_linear(n, k, bits, group_size, codebook, sparsity, seed=bits)
    assert isinstance(layer, QuantLinear)
    x = torch.randn(3, 5, k) * 1.5
    with torch.no_grad():
        got = layer(x).numpy()
    scale, zp = np.float32(layer.act_scale), int(layer.act_zero_point)
    # the runtime's quantizer (docs/format.md §2.6), written out independently here
    codes = np.clip(np.rint(x.numpy() * (np.float32(1) / scale)) + zp, -128, 127).astype(np.int8)
    pw = kernels.pack(**layer.packed_args())
    want = kernels.linear_f32(codes.reshape(-1, k), pw, scale, zp,
                              layer.bias.detach().numpy()).reshape(3, 5, n)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert got.view(np.int32).tolist() == want.view(np.int32).tolist()   # sign of zero too


def test_act_codes_are_fake_quant_codes():
    x = torch.randn(4096) * 3
    d = act_codes(x, 0.0213, -7)
    fq = torch.fake_quantize_per_tensor_affine(x, 0.0213, -7, -128, 127)
    assert torch.equal(d, torch.round(d)) and d.min() >= -121 and d.max() <= 134
    assert torch.equal((d.float() * torch.tensor(0.0213)), fq)


def test_weights_only_path_unchanged():
    """Without activation calibration the fake-quant float forward is kept (QAT, PTQ)."""
    layer = _quant_linear(8, 64, 4, 0, "tensor", 0.0, seed=1)
    layer.act_quant = False
    x = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(layer(x), nn.functional.linear(x, layer.base.weight, layer.bias))


CONVS = {
    "strided_dilated_grouped": (nn.Conv1d(6, 16, 5, stride=2, padding=3, dilation=2, groups=2),
                                {"bits": 8}),
    "depthwise_codebook": (nn.Conv1d(16, 16, 7, padding=3, groups=16),
                           {"bits": 6, "quantizer": "lloyd_max", "codebook": "channel"}),
    # Kg = 8 * 9 = 72: two weight groups, the second partial, and a zero-weight mask
    "weight_groups_masked": (nn.Conv1d(16, 24, 9, padding=4, groups=2),
                             {"bits": 4, "granularity": "group", "group_size": 64,
                              "sparsity": {"kind": "magnitude", "amount": 0.4}}),
    "transposed_grouped": (nn.ConvTranspose1d(24, 12, 4, stride=2, padding=1, groups=3,
                                              dilation=2),
                           {"bits": 5, "sparsity": {"kind": "nm", "n": 2, "m": 4}}),
    "transposed_outpad": (nn.ConvTranspose1d(12, 8, 3, stride=3, output_padding=1),
                          {"bits": 3, "granularity": "group", "group_size": 64}),
}


def _lowered_conv(name):
    from edgekit.export.lower import lower, module_graphs
    torch.manual_seed(0)
    conv, rule = CONVS[name]
    m = nn.Sequential(conv).eval()
    q = compress(m, {"name": name, "rules": [{"match": "*", **rule}]})
    cin = conv.in_channels
    calibrate_activations(q, [(torch.randn(1, cin, 40),) for _ in range(2)])
    return q, lower(q, module_graphs(q, (1, cin, 40))), cin


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_equals_interpreter_and_runtime_bit_for_bit(name):
    """The lowered single-layer graph is just the q-op, so its output must be identical."""
    from edgekit.export import ekm
    from edgekit.export.interp import Interpreter
    from edgekit.runtime import Session, available
    q, mir, cin = _lowered_conv(name)
    x = torch.randn(1, cin, 40, generator=torch.Generator().manual_seed(7)) * 2
    with torch.no_grad():
        ref = q(x).numpy()
    (out,) = Interpreter(mir).step({"x": x.numpy()}).values()
    np.testing.assert_array_equal(ref, out)
    if not available():
        pytest.skip("C++ runtime not built")
    with tempfile.TemporaryDirectory() as d:
        ekm.write(mir, Path(d) / "m.ekm")
        (out,) = Session(str(Path(d) / "m.ekm"), threads=1).run({"x": x.numpy()}).values()
    np.testing.assert_array_equal(ref, np.asarray(out))


@pytest.mark.parametrize("rule", [
    {"bits": 6, "quantizer": "lloyd_max", "codebook": "channel"},
    # W_ih of layer 0 (K = 70): two weight groups, the second partial; masked weights
    {"bits": 4, "granularity": "group", "group_size": 64,
     "sparsity": {"kind": "magnitude", "amount": 0.3}},
])
def test_lstm_matmuls_equal_kernel_bit_for_bit(rule):
    """Both gate matmuls of every step are `kernels.linear_f32` (x on the layer's grid for
    layer 0, on the h grid above it; h on the fixed h grid), and the gate math is torch's, as
    in the fake-quant cell; a 2-layer LSTM, batch 2."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.LSTM(70, 12, num_layers=2, batch_first=True)).eval()
    q = compress(m, {"name": "l", "rules": [{"match": "*", **rule}]})
    calibrate_activations(q, [(torch.randn(1, 9, 70),) for _ in range(2)])
    lstm = q[0]
    x = torch.randn(2, 9, 70) * 1.3
    with torch.no_grad():
        y, (hn, cn) = lstm(x)

    def q8(v, scale, zp):
        return np.clip(np.rint(v * (np.float32(1) / scale)) + zp, -128, 127).astype(np.int8)
    hs = np.float32(1.0 / 127.0)
    inp = x.numpy()
    for li in range(2):
        wi = kernels.pack(**lstm.packed_args(f"weight_ih_l{li}"))
        wh = kernels.pack(**lstm.packed_args(f"weight_hh_l{li}"))
        xs, xzp = ((np.float32(lstm.act_scale), int(lstm.act_zero_point)) if li == 0
                   else (hs, 0))
        b = (getattr(lstm.base, f"bias_ih_l{li}").detach(),
             getattr(lstm.base, f"bias_hh_l{li}").detach())
        h, c = torch.zeros(2, 12), torch.zeros(2, 12)
        ys = []
        for t in range(9):
            gx = kernels.linear_f32(q8(inp[:, t], xs, xzp), wi, xs, xzp)
            gh = kernels.linear_f32(q8(h.numpy(), hs, 0), wh, hs, 0)
            g = torch.from_numpy(gx) + torch.from_numpy(gh) + b[0] + b[1]
            i, f, gg, o = g.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        inp = torch.stack(ys, 1).numpy()
        np.testing.assert_array_equal(hn[li].numpy(), h.numpy())
        np.testing.assert_array_equal(cn[li].numpy(), c.numpy())
    np.testing.assert_array_equal(y.numpy(), inp)


def test_int_weight_cache_follows_code_changes():
    """The cached integer weight is rebuilt when codes change in place (GPTQ, load_state_dict)."""
    layer = _quant_linear(8, 64, 8, 0, "tensor", 0.0, seed=3)
    x = torch.randn(2, 64)
    with torch.no_grad():
        before = layer(x)
        layer.q.codes[0].copy_(layer.q.codes[1])
        after = layer(x)
    assert torch.equal(before[:, 1:], after[:, 1:]) and not torch.equal(before[:, 0], after[:, 0])
