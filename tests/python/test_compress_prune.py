"""Pruning masks: exact zero counts, Wanda vs magnitude, N:M groups, conv/LSTM feature norms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress.layers import weight_2d
from edgekit.compress.prune import magnitude_mask, nm_mask, wanda_mask, wanda_scores
from edgekit.compress.prune.wanda import feature_sqsum, lstm_feature_sqsum



def _w(n=32, k=128, seed=0):
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_row_exact_zero_count(s):
    w = _w(k=100)
    w[:, :50] = 1.0                      # ties must not change the count
    mask = magnitude_mask(w, s)
    assert np.all((~mask).sum(1) == int(np.floor(s * 100)))
    kept_min = np.where(mask, np.abs(w), np.inf).min(1)
    dropped_max = np.where(~mask, np.abs(w), -np.inf).max(1)
    assert np.all(dropped_max <= kept_min)


def test_magnitude_tensor_scope():
    w = _w()
    w[0] = 10 + np.abs(w[0])             # row 0 keeps everything under a global threshold
    mask = magnitude_mask(w, 0.5, scope="tensor")
    assert (~mask).sum() == w.size // 2 and mask[0].all()


def test_wanda_equals_magnitude_when_norms_equal_and_differs_otherwise():
    w = _w()
    same = wanda_mask(w, np.full(w.shape[1], 3.0), 0.5)
    np.testing.assert_array_equal(same, magnitude_mask(w, 0.5))
    norms = np.ones(w.shape[1])
    norms[:16] = 100.0                   # features with large activations are protected
    wm = wanda_mask(w, norms, 0.5)
    assert not np.array_equal(wm, magnitude_mask(w, 0.5))
    assert wm[:, :16].mean() > 0.95 and np.all((~wm).sum(1) == 64)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("by", ["magnitude", "wanda"])
def test_nm_exact_in_every_group(n, m, by):
    w = _w(k=128)
    scores = np.abs(w) if by == "magnitude" else wanda_scores(w, np.linspace(0.1, 5, 128))
    mask = nm_mask(scores, n, m)
    assert np.all(mask.reshape(w.shape[0], -1, m).sum(2) == n)
    # the kept ones are the group's top-n scores
    g = scores.reshape(w.shape[0], -1, m)
    kept = np.where(mask.reshape(g.shape), g, np.inf).min(2)
    dropped = np.where(~mask.reshape(g.shape), g, -np.inf).max(2)
    assert np.all(dropped <= kept)


def test_nm_exact_with_ties():
    mask = nm_mask(np.ones((3, 64)), 2, 4)
    assert np.all(mask.reshape(3, -1, 4).sum(2) == 2)


@pytest.mark.parametrize("args,msg", [((2, 4), "K divisible"), ((4, 4), "n < m"),
                                      ((1, 3), "divide 64"), ((0, 4), "positive")])
def test_nm_bad_arguments(args, msg):
    with pytest.raises(ValueError, match=msg):
        nm_mask(np.ones((2, 66)), *args)


@pytest.mark.parametrize("s", [-0.1, 1.0, "half", True])
def test_bad_sparsity(s):
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(_w(), s)


def _im2col_sqsum(conv: nn.Conv1d, x: torch.Tensor) -> np.ndarray:
    """Brute force: the (N, K) feature sums of squares from an explicit im2col via unfold."""
    p, k, d, st = conv.padding[0], conv.kernel_size[0], conv.dilation[0], conv.stride[0]
    cols = torch.nn.functional.unfold(x.double().unsqueeze(2), (1, k), dilation=(1, d),
                                      padding=(0, p), stride=(1, st))  # (B, C*k, L)
    sq = (cols ** 2).sum((0, 2)).numpy().reshape(conv.groups, -1)
    return np.repeat(sq, conv.out_channels // conv.groups, axis=0)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=5, padding=4,
                                dilation=2, groups=8), dict(kernel_size=3, stride=2, groups=2)])
def test_conv_feature_norms_match_im2col(kw):
    torch.manual_seed(0)
    conv = nn.Conv1d(8, 16, **kw)
    x = torch.randn(2, 8, 23)
    np.testing.assert_allclose(feature_sqsum(conv, x), _im2col_sqsum(conv, x), rtol=1e-10)
    assert feature_sqsum(conv, x).shape == weight_2d(conv, conv.weight).shape


def test_lstm_feature_norms_match_manual_run():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(3, 7, 6)
    sq = lstm_feature_sqsum(lstm, x)
    np.testing.assert_allclose(sq["weight_ih_l0"][0], (x.double() ** 2).sum((0, 1)), rtol=1e-6)
    # Layer 1's inputs are layer 0's outputs: rebuild layer 0 alone and run it.
    first = nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            for sfx in ("", "_reverse"):
                getattr(first, f"{n}_l0{sfx}").copy_(getattr(lstm, f"{n}_l0{sfx}"))
        y0, _ = first(x)
    np.testing.assert_allclose(sq["weight_ih_l1"][0], (y0.double() ** 2).sum((0, 1)), rtol=1e-4)
    # h_{t-1}: the forward direction sees h0 = 0, then y_0 .. y_{T-2}.
    fwd = y0[..., :5]
    np.testing.assert_allclose(sq["weight_hh_l0"][0], (fwd[:, :-1].double() ** 2).sum((0, 1)),
                               rtol=1e-4)
    assert sq["weight_hh_l1_reverse"].shape == (20, 5)
