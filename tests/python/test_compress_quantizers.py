"""Weight quantizers: level counts, exactness of the representation, Lloyd-Max vs uniform."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.compress.quantizers import dequantize, lloyd_max_levels, mulaw_inverse, quantize


def _laplace(n=64, k=256, seed=0):
    return np.random.default_rng(seed).laplace(size=(n, k)).astype(np.float32)


def _mse(a, b):
    return float(np.mean((np.asarray(a, np.float64) - b) ** 2))


CASES = [
    ("uniform", b, g, cb) for b in (2, 3, 4, 8) for g in ("tensor", "channel", "group")
    for cb in ("tensor",)
] + [
    ("lloyd_max", b, g, cb) for b in (1, 2, 3, 5) for g in ("channel", "group")
    for cb in ("tensor", "channel")
] + [("mulaw", b, "channel", "tensor") for b in (1, 3, 5, 8)] + [("binary", 1, "group", "tensor")]


@pytest.mark.parametrize("quantizer,bits,gran,cb", CASES)
def test_at_most_2b_levels_per_scope_and_exact_dequant(quantizer, bits, gran, cb):
    w = _laplace(k=200)
    gs = 64 if gran == "group" else 0
    q = quantize(w, bits, quantizer, gran, gs, cb)
    assert q.codes.dtype == np.uint8 and q.codes.max() < 2 ** bits
    assert q.codebook.dtype == np.int8 and q.codebook.shape[1] == 2 ** bits
    per_row = cb == "channel" and quantizer == "lloyd_max"
    assert q.codebook.shape[0] == (w.shape[0] if per_row else 1)
    ng = 1 if gs == 0 else -(-w.shape[1] // gs)
    assert q.scale.shape == (w.shape[0], ng) and q.scale.dtype == np.float32
    # The codebook scope (tensor or row) never holds more than 2**b distinct int8 values...
    for row in q.codebook:
        assert len(np.unique(row)) <= 2 ** bits
    assert q.levels <= 2 ** bits
    # ...and every weight in one scale group is one of at most 2**b values.
    deq = q.dequantize()
    if gran == "tensor":
        assert len(np.unique(deq)) <= 2 ** bits
    for n in range(0, w.shape[0], 17):
        for g in range(ng):
            sl = slice(g * gs, (g + 1) * gs) if gs else slice(None)
            assert len(np.unique(deq[n, sl])) <= 2 ** bits
    # Exact representation: scale * codebook[code], computed independently.
    table = q.codebook.astype(np.float32)
    vals = table[0][q.codes] if table.shape[0] == 1 else np.take_along_axis(
        table, q.codes.astype(int), 1)
    se = np.repeat(q.scale, gs, 1)[:, :w.shape[1]] if gs else q.scale
    np.testing.assert_array_equal(deq, vals * se)


def test_quantization_error_is_small_at_8_bits():
    w = _laplace()
    deq = quantize(w, 8, "uniform", "channel").dequantize()
    assert 10 * np.log10(np.sum(w.astype(np.float64) ** 2) / np.sum((w - deq) ** 2)) > 35


@pytest.mark.parametrize("bits", [3, 4])
def test_lloyd_max_beats_uniform_on_laplacian(bits):
    w = _laplace(128, 512)
    uni = quantize(w, bits, "uniform", "tensor")
    lm = quantize(w, bits, "lloyd_max", "tensor")
    assert _mse(w, lm.dequantize()) < 0.9 * _mse(w, uni.dequantize())


def test_lloyd_max_converges_to_known_gaussian_levels():
    # The 4-level Lloyd-Max quantizer of N(0, 1) has levels ±0.4528 and ±1.510 (Max, 1960).
    x = np.random.default_rng(1).standard_normal((1, 400_000))
    levels, it = lloyd_max_levels(x, 4)
    np.testing.assert_allclose(np.abs(levels[0]), [1.510, 0.4528, 0.4528, 1.510], atol=0.01)
    assert 1 < it < 300


def test_lloyd_max_per_row_table_never_worse_than_shared():
    w = _laplace(32, 256)
    shared = quantize(w, 3, "lloyd_max", "channel", codebook="tensor", refine=0)
    rows = quantize(w, 3, "lloyd_max", "channel", codebook="channel", refine=0)
    assert _mse(w, rows.dequantize()) <= _mse(w, shared.dequantize()) * 1.02


def test_lloyd_max_merges_duplicate_int8_levels():
    q = quantize(_laplace(), 8, "lloyd_max", "tensor")
    assert q.levels < 256      # tightly packed centre levels collide on the int8 grid
    assert len(np.unique(q.codebook)) == q.levels


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_mulaw_codebook_symmetric_and_monotone(bits):
    q = quantize(_laplace(), bits, "mulaw", "channel")
    table = q.codebook[0].astype(int)
    uniq = np.unique(table)
    np.testing.assert_array_equal(uniq, -uniq[::-1])            # symmetric
    assert np.all(np.diff(table) >= 0) and table.max() == 127   # monotone, on the int8 grid
    u = np.linspace(-1, 1, 2 ** bits)
    np.testing.assert_array_equal(np.unique(np.round(127 * mulaw_inverse(u))), uniq)


def test_binary_has_two_levels_and_optimal_scale():
    w = _laplace()
    q = quantize(w, 1, "binary", "channel")
    assert set(np.unique(q.codebook)) == {-127, 127}
    deq = q.dequantize()
    np.testing.assert_array_equal(np.sign(deq), np.sign(w))
    np.testing.assert_allclose(np.abs(deq[:, 0]), np.abs(w).mean(1), rtol=1e-5)


def test_uniform_full_range_codebook_is_affine_and_narrow_skips_code_0():
    w = _laplace()
    full = quantize(w, 4, "uniform", "channel")
    np.testing.assert_array_equal(full.codebook[0], np.arange(16) - 8)
    narrow = quantize(w, 4, "uniform", "channel", narrow=True)
    assert narrow.codes.min() >= 1 and narrow.levels == 15


def test_group_scales_beat_channel_scales_on_heavy_tails():
    w = _laplace(64, 512)
    w[:, :64] *= 20          # one group with far larger weights
    ch = quantize(w, 4, "uniform", "channel")
    gr = quantize(w, 4, "uniform", "group", 64)
    assert _mse(w[:, 64:], gr.dequantize()[:, 64:]) < 0.2 * _mse(w[:, 64:], ch.dequantize()[:, 64:])


def test_mask_zeroes_and_is_excluded_from_fit():
    w = _laplace()
    mask = np.random.default_rng(3).random(w.shape) > 0.5
    q = quantize(w, 4, "lloyd_max", "channel", mask=mask)
    deq = q.dequantize()
    assert np.all(deq[~mask] == 0) and np.all(q.codes[~mask] == 0)
    np.testing.assert_array_equal(deq, dequantize(q.codes, q.codebook, q.scale, 0, mask))


@pytest.mark.parametrize("kwargs,msg", [
    (dict(bits=0), "bits"), (dict(bits=9), "bits"), (dict(quantizer="kmeans"), "quantizer"),
    (dict(bits=1), "binary"), (dict(quantizer="binary", bits=2), "1-bit"),
    (dict(granularity="group", group_size=32), "multiple of 64"),
    (dict(granularity="row"), "granularity"), (dict(codebook="group"), "codebook"),
])
def test_bad_arguments_raise_value_error(kwargs, msg):
    args = dict(bits=4, quantizer="uniform")
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        quantize(_laplace(4, 64), **args)


def test_bad_weights_raise_value_error():
    with pytest.raises(ValueError, match="2-D"):
        quantize(np.zeros(8), 4)
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.full((2, 2), np.nan), 4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(1, 150), seed=st.integers(0, 2**31 - 1),
       quantizer=st.sampled_from(["uniform", "lloyd_max", "mulaw", "binary"]),
       bits=st.integers(1, 8), gran=st.sampled_from(["tensor", "channel", "group"]),
       per_row=st.booleans(), masked=st.booleans())
def test_invariants_on_random_shapes(n, k, seed, quantizer, bits, gran, per_row, masked):
    if quantizer == "binary":
        bits = 1
    elif quantizer == "uniform":
        bits = max(bits, 2)
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(3, size=(n, k)) * rng.uniform(1e-3, 10)).astype(np.float32)
    mask = rng.random((n, k)) > 0.3 if masked else None
    q = quantize(w, bits, quantizer, gran, 64 if gran == "group" else 0,
                 "channel" if per_row else "tensor", mask=mask)
    assert q.codes.shape == (n, k) and int(q.codes.max()) < 2 ** bits
    assert np.all(np.isfinite(q.scale)) and np.all(q.scale >= 0)
    deq = q.dequantize()
    if mask is not None:
        assert np.all(deq[~mask] == 0)
    keep = np.ones((n, k), bool) if mask is None else mask
    # Never worse than quantizing everything to zero.
    assert np.sum((deq - w)[keep] ** 2) <= np.sum(w[keep].astype(np.float64) ** 2) * (1 + 1e-6)
