"""Linear kernels: reference vs the definition, every variant vs the reference (tolerance 0),
epilogues vs numpy models, dispatch and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit import kernels
from edgekit.kernels import packing

ALL_ISAS = ["avx2", "avx512", "avx512vbmi2", "neon", "neondot"]
NM_PATTERNS = [(2, 4), (1, 4), (4, 8)]


def _require(isa: str) -> None:
    if isa not in kernels.compiled_isas():
        pytest.skip(f"ISA {isa} is not compiled into this build")
    if isa not in kernels.available_isas():
        pytest.skip(f"this CPU does not support {isa} (compiled in, not runnable here)")


def _nm_mask(rng, N, K, n, m):
    keys = rng.random((N, K // m, m))
    mask = np.argsort(np.argsort(keys, axis=2), axis=2) < n
    return mask.reshape(N, K)


def make_case(rng, M, N, K, bits, kind="dense", per_row=False, group_size=0, affine=False,
              extreme=False, zero_rows=False):
    """Random weights + activations; `extreme` uses only ±127/-128 codebooks and x."""
    codes = rng.integers(0, 1 << bits, (N, K)).astype(np.uint8)
    if affine:
        cb = packing.affine_table(bits)
        cb = np.tile(cb, (N, 1)) if per_row else cb
    else:
        shape = (N, 1 << bits) if per_row else (1 << bits,)
        vals = np.array([-128, 127, -127], np.int8) if extreme else None
        cb = rng.choice(vals, shape) if extreme else rng.integers(-128, 128, shape)
        cb = cb.astype(np.int8)
    mask = nm = None
    if kind == "sparse":
        mask = rng.random((N, K)) < rng.choice([0.05, 0.3, 0.5, 0.9])
    elif kind == "dense_mask":
        mask = np.ones((N, K), bool)
    elif kind.startswith("nm"):
        nm = NM_PATTERNS[int(kind[2:])]
        mask = _nm_mask(rng, N, K, *nm)
    if zero_rows:
        if affine:
            codes[::2] = 1 << (bits - 1)
        if mask is not None and nm is None:
            mask[::2] = False
    ng = 1 if group_size == 0 else -(-K // group_size)
    scale = (rng.random((N, ng)) + 0.5).astype(np.float32)
    pw = kernels.pack(codes, bits, cb, scale if group_size else scale[:, 0], mask=mask, nm=nm,
                      group_size=group_size)
    x = (rng.choice(np.array([-128, 127], np.int8), (M, K)) if extreme
         else rng.integers(-128, 128, (M, K)).astype(np.int8))
    return pw, x, codes, cb, scale, mask


def definition(x, codes, cb, mask, zp, group_size=0):
    """int64 (M, N, ngroups) straight from the definition in numpy."""
    N, K = codes.shape
    w = (cb[codes] if cb.ndim == 1 else np.take_along_axis(cb, codes.astype(np.int64), 1))
    w = w.astype(np.int64) * (1 if mask is None else mask)
    xd = x.astype(np.int64) - zp
    gs = K if group_size == 0 else group_size
    return np.stack([xd[:, g:g + gs] @ w[:, g:g + gs].T for g in range(0, K, gs)], axis=2)


def assert_same(actual, expected, what):
    if np.array_equal(actual, expected):
        return
    idx = tuple(np.argwhere(actual != expected)[0])
    raise AssertionError(f"{what}: first mismatch at {idx}: expected {expected[idx]}, "
                         f"got {actual[idx]} ({int((actual != expected).sum())} mismatches)")


KINDS = ["dense", "dense_mask", "sparse", "nm0", "nm1", "nm2"]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("kind", KINDS)
def test_reference_matches_definition(bits, kind):
    rng = np.random.default_rng(bits * 31 + KINDS.index(kind))
    for M, N, K, gs, per_row, affine in [(1, 3, 64, 0, False, False), (3, 5, 200, 64, True, False),
                                         (2, 4, 8 if kind.startswith("nm") else 1, 0, False, True),
                                         (4, 2, 136, 128, False, True)]:
        pw, x, codes, cb, scale, mask = make_case(rng, M, N, K, bits, kind, per_row, gs, affine)
        zp = int(rng.integers(-128, 128))
        want = definition(x, codes, cb, mask, zp, gs)
        got = kernels.accumulate(x, pw, zp, isa="ref")
        assert_same(got, want.astype(np.int32), f"ref bits={bits} {kind} M={M} N={N} K={K} gs={gs}")
        assert_same(kernels.linear(x, pw, zp, isa="ref"), want.sum(2).astype(np.int32), "ref linear")


def _variant_cases(bits, kind):
    """The edge cases every variant must match bit for bit."""
    nm = kind.startswith("nm")
    Ks = [8, 64, 200, 256] if nm else [1, 63, 64, 65, 200]
    for i, K in enumerate(Ks):
        for M in (1, 2, 3, 4, 5, 8, 17):
            N = (1, 3, 4, 5, 7, 9, 13)[(i + M) % 7]
            yield dict(M=M, N=N, K=K, per_row=bool(M % 2), affine=(M + i) % 3 == 0,
                       group_size=64 if (K > 64 and M % 3 == 0) else 0,
                       extreme=(M == 3), zero_rows=(M == 5))


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("kind", KINDS)
def test_variant_equals_reference(isa, bits, kind):
    _require(isa)
    rng = np.random.default_rng(1000 * bits + KINDS.index(kind))
    for c in _variant_cases(bits, kind):
        pw, x, *_ = make_case(rng, c["M"], c["N"], c["K"], bits, kind, c["per_row"],
                              c["group_size"], c["affine"], c["extreme"], c["zero_rows"])
        for zp in (0, -128, 127, int(rng.integers(-128, 128))):
            want = kernels.accumulate(x, pw, zp, isa="ref")
            got = kernels.accumulate(x, pw, zp, isa=isa)
            assert_same(got, want, f"isa={isa} bits={bits} {kind} M={c['M']} N={c['N']} "
                                   f"K={c['K']} zp={zp} {c}")


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), M=st.integers(1, 9), N=st.integers(1, 20),
       K=st.integers(1, 400), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31),
       gs=st.sampled_from([0, 64, 192]), per_row=st.booleans(), affine=st.booleans())
def test_variants_random_shapes(bits, M, N, K, kind, seed, gs, per_row, affine):
    if kind.startswith("nm"):
        K = 8 * max(1, K // 8)
    rng = np.random.default_rng(seed)
    pw, x, *_ = make_case(rng, M, N, K, bits, kind, per_row, gs, affine)
    zp = int(rng.integers(-128, 128))
    want = kernels.accumulate(x, pw, zp, isa="ref")
    for isa in kernels.available_isas():
        assert_same(kernels.accumulate(x, pw, zp, isa=isa), want,
                    f"isa={isa} bits={bits} {kind} M={M} N={N} K={K} gs={gs}")


def test_all_zero_weights_and_empty_rows():
    pw = kernels.pack(np.zeros((5, 100), np.uint8), 3, np.arange(8, dtype=np.int8),
                      np.ones(5, np.float32), mask=np.zeros((5, 100), bool))
    x = np.full((2, 100), 127, np.int8)
    for isa in kernels.available_isas():
        assert (kernels.linear(x, pw, 5, isa=isa) == 0).all()


def test_large_k_wraps_like_int32():
    # |sum| can exceed 2^31 for large K: every variant wraps modulo 2^32 identically.
    K = 70000
    pw = kernels.pack(np.zeros((2, K), np.uint8), 1, np.array([-128, -128], np.int8),
                      np.ones(2, np.float32))
    x = np.full((1, K), 127, np.int8)
    want = np.int64(-128 * 255) * K
    want32 = np.int32(((int(want) + 2**31) % 2**32) - 2**31)
    for isa in kernels.available_isas():
        assert kernels.linear(x, pw, -128, isa=isa)[0, 0] == want32


# ---- epilogues -----------------------------------------------------------------------

def test_linear_f32_matches_numpy_model():
    rng = np.random.default_rng(5)
    pw, x, codes, cb, scale, mask = make_case(rng, 3, 7, 200, 4, "sparse", group_size=64)
    bias = rng.standard_normal(7).astype(np.float32)
    xs, zp = np.float32(0.0371), 3
    acc = kernels.accumulate(x, pw, zp, isa="ref").astype(np.float32)
    y = np.zeros((3, 7), np.float32)
    for g in range(acc.shape[2]):
        y = y + scale[None, :, g] * acc[:, :, g]
    y = y * xs + bias
    for isa in kernels.available_isas():
        got = kernels.linear_f32(x, pw, float(xs), zp, bias=bias, isa=isa)
        assert got.dtype == np.float32
        assert_same(got, y, f"linear_f32 isa={isa}")
    assert_same(kernels.linear_f32(x, pw, float(xs), zp), (y - bias), "no bias")


def _srdhm(a, b):
    a, b = a.astype(np.int64), b.astype(np.int64)
    ab = a * b
    r = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(r >= 0, r // (1 << 31), -((-r) // (1 << 31)))
    return np.where((a == b) & (a == -(1 << 31)), (1 << 31) - 1, q)


def _rdbpot(x, e):
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def q8_model(acc, mult, shift, out_zp, bias):
    a = acc.astype(np.int64) + (0 if bias is None else bias.astype(np.int64))
    a = (a + 2**31) % 2**32 - 2**31
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    xl = np.clip(a * (np.int64(1) << left), -(2**31), 2**31 - 1)
    v = _rdbpot(_srdhm(xl, np.broadcast_to(mult, xl.shape)), right) + out_zp
    return np.clip(v, -128, 127).astype(np.int8)


@pytest.mark.parametrize("seed", range(4))
def test_linear_q8_exact(seed):
    rng = np.random.default_rng(seed)
    pw, x, *_ = make_case(rng, 4, 9, 128, 5, ["dense", "sparse", "nm1", "dense"][seed])
    acc = kernels.linear(x, pw, 7, isa="ref")
    mult = rng.integers(1 << 30, 1 << 31, 9).astype(np.int32)
    shift = rng.integers(-20, 3, 9).astype(np.int32)
    shift[0], mult[1] = -31, -(2**31)
    bias = rng.integers(-(2**20), 2**20, 9).astype(np.int32)
    want = q8_model(acc, mult, shift, -5, bias)
    for isa in kernels.available_isas():
        assert_same(kernels.linear_q8(x, pw, 7, mult, shift, -5, bias=bias, isa=isa), want,
                    f"linear_q8 isa={isa}")
    m, s = kernels.quantize_multiplier(0.0123)
    assert_same(kernels.linear_q8(x, pw, 7, m, s, 0),
                q8_model(acc, np.full(9, m), np.full(9, s), 0, None), "scalar multiplier")


@pytest.mark.parametrize("real", [1e-6, 0.0123, 0.5, 0.75, 1.0, 3.7, 1e9])
def test_quantize_multiplier(real):
    m, s = kernels.quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31) and -31 <= s <= 30
    assert abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30
    assert kernels.quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError):
        kernels.quantize_multiplier(-1.0)


def test_linear_q8_rejects_groups():
    rng = np.random.default_rng(0)
    pw, x, *_ = make_case(rng, 1, 2, 200, 4, group_size=64)
    with pytest.raises(ValueError, match="group"):
        kernels.linear_q8(x, pw, 0, 1 << 30, -5, 0)


# ---- dispatch ------------------------------------------------------------------------

def test_isa_lists_are_consistent():
    compiled, avail = kernels.compiled_isas(), kernels.available_isas()
    assert compiled[0] == "ref" and avail[0] == "ref"
    assert set(avail) <= set(compiled)
    assert kernels.isa() == avail[-1] or "EDGEKIT_ISA" in __import__("os").environ
    for isa in avail:
        name = kernels.kernel_name(isa)
        assert name.startswith("linear_qs8_qc1to8w_") and "__" in name


def test_edgekit_isa_override(monkeypatch):
    monkeypatch.setenv("EDGEKIT_ISA", "ref")
    assert kernels.isa() == "ref"
    monkeypatch.setenv("EDGEKIT_ISA", "sse9")
    with pytest.raises(ValueError, match="EDGEKIT_ISA: unknown ISA 'sse9'"):
        kernels.isa()
    rng = np.random.default_rng(0)
    pw, x, *_ = make_case(rng, 1, 2, 64, 4)
    with pytest.raises(ValueError, match="EDGEKIT_ISA"):
        kernels.linear(x, pw)
    missing = [i for i in ALL_ISAS if i not in kernels.available_isas()]
    for isa in missing:
        monkeypatch.setenv("EDGEKIT_ISA", isa)
        with pytest.raises(ValueError, match="not compiled|does not support"):
            kernels.isa()


def test_unavailable_isa_argument_is_a_clear_error():
    rng = np.random.default_rng(0)
    pw, x, *_ = make_case(rng, 1, 2, 64, 4)
    for isa in [i for i in ALL_ISAS if i not in kernels.available_isas()] + ["bogus"]:
        with pytest.raises(ValueError, match="ISA"):
            kernels.linear(x, pw, isa=isa)


# ---- bad arguments -------------------------------------------------------------------

def test_linear_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    pw, x, *_ = make_case(rng, 2, 3, 70, 4)
    bad = [
        (lambda: kernels.linear(x.astype(np.int16), pw), "int8"),
        (lambda: kernels.linear(x[:, :69], pw), "shape"),
        (lambda: kernels.linear(x[0], pw), "shape"),
        (lambda: kernels.linear(x, pw, 128), "x_zero_point"),
        (lambda: kernels.linear(x, pw, -129), "x_zero_point"),
        (lambda: kernels.linear(x, pw, 1.5), "x_zero_point"),
        (lambda: kernels.linear(x, "pw"), "PackedWeights"),
        (lambda: kernels.linear(x, pw, isa=3), "isa"),
        (lambda: kernels.linear_f32(x, pw, float("nan")), "x_scale"),
        (lambda: kernels.linear_f32(x, pw, 1.0, bias=np.zeros(2, np.float32)), "bias"),
        (lambda: kernels.linear_q8(x, pw, 0, np.ones(2, np.int32), 0, 0), "multiplier"),
        (lambda: kernels.linear_q8(x, pw, 0, 1 << 30, 31, 0), "shift"),
        (lambda: kernels.linear_q8(x, pw, 0, 1 << 30, -1, 200), "out_zero_point"),
        (lambda: kernels.bench_linear(x, pw, iters=0), "iters"),
        (lambda: kernels.unpack(None), "PackedWeights"),
    ]
    for call, msg in bad:
        with pytest.raises(ValueError, match=msg):
            call()


def test_non_contiguous_x_is_accepted():
    rng = np.random.default_rng(0)
    pw, x, *_ = make_case(rng, 4, 3, 70, 4)
    xt = np.asfortranarray(x)
    assert (kernels.linear(xt, pw) == kernels.linear(x, pw)).all()


def test_bench_linear_returns_samples():
    rng = np.random.default_rng(0)
    pw, x, *_ = make_case(rng, 1, 64, 256, 4)
    for isa in kernels.available_isas():
        ns = kernels.bench_linear(x, pw, warmup=1, iters=5, isa=isa)
        assert ns.dtype == np.int64 and ns.shape == (5,) and (ns > 0).all()
    ns = kernels.bench_linear(x, pw, warmup=0, iters=1, min_time_s=0.002)
    assert ns.sum() >= 2_000_000


@pytest.mark.parametrize("bits", range(1, 9))
def test_single_row_wide_tiles_equal_reference(bits):
    # M = 1 with affine codebooks takes 8-row tiles (full and clamped tails, one group with a
    # vector correction, several groups without): N around multiples of 8.
    rng = np.random.default_rng(77 + bits)
    for N, K, gs in [(8, 64, 0), (16, 200, 0), (17, 130, 64), (33, 1000, 0), (24, 320, 128)]:
        pw, x, *_ = make_case(rng, 1, N, K, bits, "dense", per_row=N % 2 == 1, group_size=gs,
                              affine=True)
        for zp in (0, -128, 127):
            want = kernels.accumulate(x, pw, zp, isa="ref")
            for isa in kernels.available_isas():
                assert_same(kernels.accumulate(x, pw, zp, isa=isa), want,
                            f"isa={isa} bits={bits} N={N} K={K} gs={gs} zp={zp}")


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_scaled_segment_lane_bound(bits):
    # Extreme values over the longest group the shift-free decode accepts (16384 blocks),
    # and one block more (which must take the shifting path): exact either way.
    for nblocks in (16384, 16385):
        K = 64 * nblocks
        codes = np.full((4, K), (1 << bits) - 1, np.uint8)
        pw = kernels.pack(codes, bits, packing.affine_table(bits), np.ones(4, np.float32))
        x = np.full((1, K), -128, np.int8)
        want = kernels.accumulate(x, pw, 127, isa="ref")
        for isa in kernels.available_isas():
            assert_same(kernels.accumulate(x, pw, 127, isa=isa), want, f"isa={isa} K={K}")


def test_linear_q8_saturated_product_plus_zero_point_clamps():
    # SRDHM saturates near INT32_MAX; adding out_zero_point must clamp to 127, not wrap.
    pw = kernels.pack(np.full((1, 1), 15, np.uint8), 4, np.arange(-8, 8, dtype=np.int8),
                      np.ones(1, np.float32))
    x = np.array([[127]], np.int8)
    assert kernels.linear_q8(x, pw, 0, (1 << 31) - 1, 30, 127)[0, 0] == 127
    assert kernels.linear_q8(-x, pw, 0, (1 << 31) - 1, 30, -128)[0, 0] == -128


@pytest.mark.parametrize("x_scale", [None, np.array([1.0]), 1e300, True, "a"])
def test_linear_f32_rejects_bad_x_scale(x_scale):
    pw = kernels.pack(np.zeros((2, 3), np.uint8), 4, np.arange(-8, 8, dtype=np.int8),
                      np.ones(2, np.float32))
    with pytest.raises(ValueError, match="x_scale"):
        kernels.linear_f32(np.zeros((1, 3), np.int8), pw, x_scale)
