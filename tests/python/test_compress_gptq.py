"""GPTQ-style code choice: same representation, lower output error on the calibration data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress import compress
from edgekit.compress.gptq import input_hessians
from edgekit.compress.quantizers import quantize
from edgekit.compress.recipe import RecipeError, parse_recipe


def _aniso(frames=2000, k=128, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) * np.exp(-np.arange(k) / 20)[None, :]
    return rng.standard_normal((frames, k)) @ mix.T


def _out_err(x, w, wq):
    return float(((x @ (w - wq).T) ** 2).sum())


@pytest.mark.parametrize("quantizer,bits,kw", [
    ("uniform", 4, dict(granularity="group", group_size=64)),
    ("lloyd_max", 3, dict(codebook="channel")),
    ("binary", 1, {}),
])
def test_gptq_lowers_output_error_and_keeps_the_representation(quantizer, bits, kw):
    x = _aniso()
    w = np.random.default_rng(1).uniform(-1, 1, (32, 128))
    near = quantize(w, bits, quantizer, **kw)
    g = quantize(w, bits, quantizer, hessian=(x.T @ x)[None], **kw)
    np.testing.assert_array_equal(g.codebook, near.codebook)    # only the codes change
    np.testing.assert_array_equal(g.scale, near.scale)
    assert int(g.codes.max()) < 2 ** bits
    assert _out_err(x, w, g.dequantize()) < 0.6 * _out_err(x, w, near.dequantize())
    # With a mask, pruned weights stay exactly 0. Their (large) error is fed forward too, but
    # the fixed scales clip most of the compensation, so only "not worse" is asserted.
    mask = np.random.default_rng(2).random(w.shape) > 0.25
    near = quantize(w, bits, quantizer, mask=mask, **kw)
    g = quantize(w, bits, quantizer, mask=mask, hessian=(x.T @ x)[None], **kw)
    assert np.all(g.dequantize()[~mask] == 0) and np.all(g.codes[~mask] == 0)
    assert _out_err(x, w, g.dequantize()) <= _out_err(x, w, near.dequantize())


def test_gptq_with_isotropic_inputs_is_close_to_nearest():
    x = np.random.default_rng(0).standard_normal((20000, 64))
    w = np.random.default_rng(1).uniform(-1, 1, (16, 64))
    near = quantize(w, 4, "uniform", "channel")
    g = quantize(w, 4, "uniform", "channel", hessian=(x.T @ x)[None])
    ratio = _out_err(x, w, g.dequantize()) / _out_err(x, w, near.dequantize())
    assert 0.8 < ratio < 1.1


def test_conv_hessian_is_the_im2col_gram_per_group():
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, 3, padding=2, dilation=2, stride=2, groups=2)
    x = torch.randn(2, 4, 11)
    h, frames = input_hessians(conv, (x,))["weight"]
    assert frames == 2 * 6           # batch 2 x 6 output positions
    cols = torch.nn.functional.unfold(x.double().unsqueeze(2), (1, 3), dilation=(1, 2),
                                      padding=(0, 2), stride=(1, 2))   # (B, 4*3, L)
    for g in range(2):
        f = cols[:, g * 6:(g + 1) * 6].permute(0, 2, 1).reshape(-1, 6)
        np.testing.assert_allclose(h[g], (f.T @ f).numpy(), rtol=1e-12)


def test_gptq_in_a_recipe():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 8)).eval()
    x = torch.from_numpy(_aniso(400, 64)).float()
    r = {"rules": [{"match": "*", "bits": 3, "rounding": "gptq"}]}
    small = compress(model, r, calib=[x])
    plain = compress(model, {"rules": [{"match": "*", "bits": 3}]})
    with torch.no_grad():
        ref = model(x)
        assert ((small(x) - ref) ** 2).sum() < ((plain(x) - ref) ** 2).sum()
    with pytest.raises(RecipeError, match="needs calibration data"):
        compress(model, r)
    with pytest.raises(RecipeError, match=r"rounding: 'gptq2'"):
        parse_recipe({"rules": [{"match": "*", "rounding": "gptq2"}]})
    up = nn.Sequential(nn.ConvTranspose1d(4, 4, 3)).eval()
    with pytest.raises(RecipeError, match="layer '0': gptq rounding does not support"):
        compress(up, r, calib=[torch.randn(1, 4, 8)])


def test_too_few_frames_fall_back_to_nearest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 8)).eval()
    r = {"rules": [{"match": "*", "bits": 4, "rounding": "gptq"}]}
    few = compress(model, r, calib=[torch.randn(10, 64)])       # 10 frames < K = 64
    plain = compress(model, {"rules": [{"match": "*", "bits": 4}]})
    assert few[0].q.rounding == "nearest"
    assert torch.equal(few[0].codes, plain[0].codes)
    many = compress(model, r, calib=[torch.randn(100, 64)])
    assert many[0].q.rounding == "gptq"
