"""Packed weight format: writer/reader round trips, serialized form, validation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit import kernels
from edgekit.kernels import packing


def _nm_mask(rng, N, K, n, m):
    mask = np.zeros((N, K // m, m), bool)
    for r in range(N):
        for g in range(K // m):
            mask[r, g, rng.choice(m, n, replace=False)] = True
    return mask.reshape(N, K)


def _random_case(rng, N, K, bits, kind="dense", per_row=False, group_size=0, affine=False):
    codes = rng.integers(0, 1 << bits, (N, K)).astype(np.uint8)
    if affine:
        cb = packing.affine_table(bits)
        cb = np.tile(cb, (N, 1)) if per_row else cb
    else:
        cb = rng.integers(-128, 128, (N, 1 << bits) if per_row else (1 << bits,)).astype(np.int8)
    ng = 1 if group_size == 0 else -(-K // group_size)
    scale = rng.random((N, ng)).astype(np.float32) + 0.1
    if group_size == 0:
        scale = scale[:, 0]
    mask = nm = None
    if kind == "sparse":
        mask = rng.random((N, K)) < rng.random()
    elif kind == "nm":
        nm = (2, 4)
        mask = _nm_mask(rng, N, K, *nm)
    return dict(codes=codes, bits=bits, codebook=cb, scale=scale, mask=mask, nm=nm,
                group_size=group_size)


def test_block_plane_layout_matches_spec():
    # docs/format.md §1.3 by example: 4-bit byte i = code i | code i+32 << 4.
    codes = np.arange(64, dtype=np.uint8).reshape(1, 64) % 16
    data = packing.encode_blocks(codes, 4)[0]
    for i in range(32):
        assert data[i] == codes[0, i] | (codes[0, i + 32] << 4)
    # 1-bit: byte i bit s is code i + 8s.
    bits1 = (np.arange(64) % 3 == 0).astype(np.uint8).reshape(1, 64)
    d1 = packing.encode_blocks(bits1, 1)[0]
    for i in range(8):
        for s in range(8):
            assert (d1[i] >> s) & 1 == bits1[0, i + 8 * s]
    # 3-bit = 2-bit plane (low bits) then 1-bit plane: 24 bytes.
    c3 = (np.arange(64) % 8).astype(np.uint8).reshape(1, 64)
    d3 = packing.encode_blocks(c3, 3)[0]
    assert d3.size == 24
    assert (packing.encode_blocks(c3 & 3, 2)[0] == d3[:16]).all()
    assert (packing.encode_blocks(c3 >> 2, 1)[0] == d3[16:]).all()


@pytest.mark.parametrize("bits", range(1, 9))
def test_encode_decode_blocks_inverse(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, (50, 64)).astype(np.uint8)
    data = packing.encode_blocks(codes, bits)
    assert data.shape == (50, 8 * bits)
    assert (packing.decode_blocks(data, bits) == codes).all()


def test_header_layout_and_sizes():
    rng = np.random.default_rng(0)
    case = _random_case(rng, 3, 130, 5, kind="sparse", per_row=True, group_size=64)
    pw = kernels.pack(**case)
    b = pw.to_bytes()
    h = packing.parse_header(b)
    assert h["magic"] == b"EKPW" and h["version"] == 1 and h["bits"] == 5
    assert h["flags"] == packing.FLAG_PER_ROW | packing.FLAG_SPARSE
    assert (h["N"], h["K"], h["group_size"]) == (3, 130, 64)
    assert h["bitmap_bytes"] == 3 * 3 * 8 and h["offsets_bytes"] == 4 * 4
    assert h["codebook_bytes"] == 3 * 32 and h["scales_bytes"] == 3 * 3 * 4
    assert h["codes_bytes"] % 40 == 0
    assert pw.nbytes == sum(h[k] for k in ("codes_bytes", "bitmap_bytes", "offsets_bytes",
                                           "codebook_bytes", "scales_bytes"))


def test_dense_nbytes_and_affine_flag():
    codes = np.zeros((4, 100), np.uint8)
    pw = kernels.pack(codes, 4, packing.affine_table(4), np.ones(4, np.float32))
    assert pw.affine and not pw.sparse
    assert pw.nbytes == 4 * 2 * 32 + 16 + 16
    pw2 = kernels.pack(codes, 4, np.arange(16, dtype=np.int8), np.ones(4, np.float32))
    assert not pw2.affine


def test_pack_4096_square_is_fast():
    import time
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 16, (4096, 4096)).astype(np.uint8)
    t0 = time.perf_counter()
    packing.pack_arrays(codes, 4, packing.affine_table(4), np.ones(4096, np.float32))
    assert time.perf_counter() - t0 < 1.0


@st.composite
def cases(draw):
    bits = draw(st.integers(1, 8))
    N = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["dense", "sparse", "nm"]))
    K = draw(st.integers(1, 300))
    if kind == "nm":
        K = 4 * max(1, K // 4)
    group_size = draw(st.sampled_from([0, 64, 128]))
    per_row = draw(st.booleans())
    affine = draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    return _random_case(np.random.default_rng(seed), N, K, bits, kind, per_row, group_size, affine)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_pack_unpack_round_trip(case):
    pw = kernels.pack(**case)
    codes, cb, scale, mask = kernels.unpack(pw)
    want_mask = case["mask"]
    if want_mask is None:
        assert mask is None
        assert (codes == case["codes"]).all()
    else:
        assert (mask == want_mask).all()
        assert (codes[want_mask] == case["codes"][want_mask]).all()
        assert (codes[~want_mask] == 0).all()
    assert cb.shape == case["codebook"].shape and (cb == case["codebook"]).all()
    assert scale.shape == case["scale"].shape and (scale == case["scale"]).all()
    assert pw.nm == (tuple(case["nm"]) if case["nm"] else None)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_to_bytes_from_bytes_round_trip(case):
    pw = kernels.pack(**case)
    b = pw.to_bytes()
    pw2 = kernels.PackedWeights.from_bytes(b)
    assert pw2.to_bytes() == b
    assert pw2.nbytes == pw.nbytes
    x = np.random.default_rng(0).integers(-128, 128, (2, pw.K)).astype(np.int8)
    assert (kernels.linear(x, pw2, isa="ref") == kernels.linear(x, pw, isa="ref")).all()
    assert (pw2._C.wsum == pw._C.wsum).all()


def test_sections_are_64_aligned():
    rng = np.random.default_rng(3)
    pw = kernels.pack(**_random_case(rng, 5, 70, 3, kind="sparse"))
    b = pw.to_bytes()
    h = packing.parse_header(b)
    off = 64
    for key in ("codes_bytes", "bitmap_bytes", "offsets_bytes", "codebook_bytes", "scales_bytes"):
        assert off % 64 == 0
        off = ((off + h[key] + 63) // 64) * 64 if key != "scales_bytes" else off + h[key]
    assert off == len(b)


# ---- bad input -------------------------------------------------------------------------

def _ok():
    return dict(codes=np.zeros((2, 64), np.uint8), bits=2, codebook=np.arange(4, dtype=np.int8),
                scale=np.ones(2, np.float32))


@pytest.mark.parametrize("change, msg", [
    (dict(bits=0), "bits"),
    (dict(bits=9), "bits"),
    (dict(bits=True), "bits"),
    (dict(codes=np.full((2, 64), 4, np.uint8)), "codes values"),
    (dict(codes=np.zeros((2, 64), np.float32)), "integer"),
    (dict(codes=np.zeros(64, np.uint8)), "2-D"),
    (dict(codes=np.zeros((0, 64), np.uint8)), "non-empty"),
    (dict(codebook=np.arange(3, dtype=np.int8)), "codebook must have shape"),
    (dict(codebook=np.array([0, 1, 2, 300])), "codebook values"),
    (dict(scale=np.ones(3, np.float32)), "scale must have shape"),
    (dict(scale=np.ones(2, np.int32)), "float"),
    (dict(scale=np.array([1.0, np.nan], np.float32)), "finite"),
    (dict(group_size=32), "group_size"),
    (dict(group_size=-64), "group_size"),
    (dict(mask=np.ones((2, 63), bool)), "mask"),
    (dict(mask=np.ones((2, 64), np.uint8)), "mask"),
    (dict(nm=(2, 4)), "needs a mask"),
    (dict(mask=np.ones((2, 64), bool), nm=(2, 4)), "violates 2:4"),
    (dict(mask=np.ones((2, 64), bool), nm=(2, 3)), "invalid N:M"),
    (dict(mask=np.ones((2, 64), bool), nm="2:4"), "pair"),
])
def test_pack_rejects_bad_input(change, msg):
    args = {**_ok(), **change}
    with pytest.raises(ValueError, match=msg):
        kernels.pack(**args)


# ---- corrupted serialized bytes: ValueError from the C++ reader, never a crash ----------

def _serialized(kind="sparse"):
    rng = np.random.default_rng(7)
    return kernels.pack(**_random_case(rng, 4, 128, 3, kind=kind, group_size=64)).to_bytes()


@pytest.mark.parametrize("kind", ["dense", "sparse", "nm"])
def test_truncated_bytes_rejected(kind):
    b = _serialized(kind)
    for cut in [0, 1, 10, 63, 64, 65, len(b) // 2, len(b) - 1]:
        with pytest.raises(ValueError):
            kernels.PackedWeights.from_bytes(b[:cut])
    with pytest.raises(ValueError):
        kernels.PackedWeights.from_bytes(b + b"\0")


_FIELDS = {"version": (4, "<H"), "bits": (6, "<B"), "flags": (7, "<B"), "N": (8, "<I"),
           "K": (12, "<I"), "group_size": (16, "<I"), "nm_n": (20, "<B"), "nm_m": (21, "<B"),
           "reserved": (22, "<H"), "codes_bytes": (24, "<Q"), "bitmap_bytes": (32, "<Q"),
           "offsets_bytes": (40, "<Q"), "codebook_bytes": (48, "<Q"), "scales_bytes": (56, "<Q")}


@pytest.mark.parametrize("field, value", [
    ("version", 2), ("bits", 0), ("bits", 9), ("bits", 4), ("flags", 0x10), ("flags", 0x08),
    ("flags", 0x02), ("flags", 0x00), ("flags", 0x01), ("N", 0), ("N", 5), ("N", 0xFFFFFFFF),
    ("K", 0), ("K", 127), ("K", 1 << 31), ("group_size", 32), ("group_size", 0xFFFFFFC0),
    ("nm_n", 1), ("nm_m", 4), ("reserved", 1), ("codes_bytes", 1 << 62),
    ("codes_bytes", 0xFFFFFFFFFFFFFFFF), ("bitmap_bytes", 8), ("offsets_bytes", 1 << 40),
    ("codebook_bytes", 0), ("scales_bytes", 4),
])
def test_flipped_header_fields_rejected(field, value):
    b = bytearray(_serialized("sparse"))
    off, fmt = _FIELDS[field]
    struct.pack_into(fmt, b, off, value)
    with pytest.raises(ValueError, match="packed weights"):
        kernels.PackedWeights.from_bytes(bytes(b))


def test_bad_magic_rejected():
    b = bytearray(_serialized())
    b[0:4] = b"EKPX"
    with pytest.raises(ValueError, match="magic"):
        kernels.PackedWeights.from_bytes(bytes(b))


def _section_offset(b: bytes, index: int) -> int:
    h = packing.parse_header(b)
    sizes = [h[k] for k in ("codes_bytes", "bitmap_bytes", "offsets_bytes", "codebook_bytes")]
    off = 64
    for s in sizes[:index]:
        off = ((off + 63) // 64) * 64 + s
    return ((off + 63) // 64) * 64


def test_corrupted_sparse_sections_rejected():
    b = _serialized("sparse")
    bm, offs = _section_offset(b, 1), _section_offset(b, 2)
    cases = []
    c = bytearray(b)  # row 0 claims no stored weights: its row offsets no longer agree
    c[bm:bm + 16] = bytes(16)
    cases.append(c)
    c = bytearray(b)
    struct.pack_into("<I", c, offs, 1)  # row_vblock[0] != 0
    cases.append(c)
    c = bytearray(b)
    struct.pack_into("<I", c, offs + 4, 0xFFFFFFFF)  # huge offset
    cases.append(c)
    for c in cases:
        with pytest.raises(ValueError, match="packed weights"):
            kernels.PackedWeights.from_bytes(bytes(c))


def test_padding_bitmap_bits_rejected():
    rng = np.random.default_rng(0)
    b = bytearray(kernels.pack(**_random_case(rng, 1, 70, 2, kind="sparse")).to_bytes())
    bm = _section_offset(bytes(b), 1)
    b[bm + 8 + 7] |= 0x80  # bit 63 of the second block: k = 127 >= K
    with pytest.raises(ValueError, match="beyond K"):
        kernels.PackedWeights.from_bytes(bytes(b))


def test_nm_violation_in_bytes_rejected():
    b = bytearray(_serialized("nm"))
    bm = _section_offset(bytes(b), 1)
    # groups k 0..3 and 4..7 become 3 + 1 kept weights: popcounts stay, 2:4 breaks
    b[bm] = 0b00010111
    with pytest.raises(ValueError, match="violates 2:4"):
        kernels.PackedWeights.from_bytes(bytes(b))


def test_affine_flag_must_match_codebook():
    rng = np.random.default_rng(0)
    b = bytearray(kernels.pack(**_random_case(rng, 2, 64, 4, affine=True)).to_bytes())
    cb = _section_offset(bytes(b), 3)
    b[cb] ^= 1
    with pytest.raises(ValueError, match="affine"):
        kernels.PackedWeights.from_bytes(bytes(b))


def test_from_bytes_needs_bytes():
    with pytest.raises(ValueError):
        kernels.PackedWeights.from_bytes("EKPW")


# ---- golden vectors (tests/golden/README.md) ------------------------------------------

def _golden_cases():
    import pathlib
    d = pathlib.Path(__file__).resolve().parents[1] / "golden"
    rows = [ln.split() for ln in (d / "cases.txt").read_text().splitlines() if not ln.startswith("#")]
    return d, rows


def test_golden_bytes_are_reproducible():
    import importlib.util
    d, rows = _golden_cases()
    spec = importlib.util.spec_from_file_location("make_golden", d / "make_golden.py")
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    assert [c[0] for c in mg.CASES] == [r[0] for r in rows]
    for case in mg.CASES:
        s, x, acc = mg.build(*case)
        assert packing.serialize(s) == (d / f"{case[0]}.ekpw").read_bytes(), case[0]
        assert x.tobytes() == (d / f"{case[0]}.x.bin").read_bytes()
        assert acc.astype("<i4").tobytes() == (d / f"{case[0]}.acc.bin").read_bytes()


def test_golden_results_every_variant():
    d, rows = _golden_cases()
    for name, M, K, N, G, zp in rows:
        M, K, N, G, zp = int(M), int(K), int(N), int(G), int(zp)
        pw = kernels.PackedWeights.from_bytes((d / f"{name}.ekpw").read_bytes())
        x = np.frombuffer((d / f"{name}.x.bin").read_bytes(), np.int8).reshape(M, K)
        acc = np.frombuffer((d / f"{name}.acc.bin").read_bytes(), "<i4").reshape(M, N, G)
        out = np.frombuffer((d / f"{name}.out.bin").read_bytes(), "<i4").reshape(M, N)
        for isa in kernels.available_isas():
            assert (kernels.accumulate(x, pw, zp, isa=isa) == acc).all(), (name, isa)
            assert (kernels.linear(x, pw, zp, isa=isa) == out).all(), (name, isa)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["dense", "sparse", "nm"]), seed=st.integers(0, 2**31),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1,
                      max_size=4))
def test_random_byte_flips_never_crash(kind, seed, flips):
    # Any corruption is either rejected with ValueError or yields weights every variant
    # computes identically (e.g. a flipped code byte is still a valid matrix).
    rng = np.random.default_rng(seed)
    b = bytearray(kernels.pack(**_random_case(rng, 3, 136, int(rng.integers(1, 9)), kind=kind,
                                              group_size=64)).to_bytes())
    for pos, val in flips:
        b[pos % len(b)] ^= val
    try:
        pw = kernels.PackedWeights.from_bytes(bytes(b))
    except ValueError:
        return
    x = rng.integers(-128, 128, (2, pw.K)).astype(np.int8)
    want = kernels.accumulate(x, pw, 3, isa="ref")
    for isa in kernels.available_isas():
        assert (kernels.accumulate(x, pw, 3, isa=isa) == want).all(), isa


def test_sections_are_private_and_read_only():
    # The C++ view is validated once; a later change to an offset must be impossible.
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 16, (4, 100)).astype(np.uint8)
    mask = rng.random((4, 100)) > 0.5
    pw = kernels.pack(codes, 4, np.arange(-8, 8, dtype=np.int8), np.ones(4, np.float32), mask=mask)
    with pytest.raises(ValueError, match="read-only"):
        pw.sections.offsets[1] = 2**31
    with pytest.raises(ValueError, match="read-only"):
        pw.sections.codes[0] = 0xFF


def test_nonzero_padding_codes_are_rejected():
    pw = kernels.pack(np.zeros((3, 1), np.uint8), 4, np.arange(-8, 8, dtype=np.int8),
                      np.ones(3, np.float32))
    b = bytearray(pw.to_bytes())
    b[64 + 1] = 0x0F  # codes section starts at 64; byte 1 low nibble = code k=1 (padding)
    with pytest.raises(ValueError, match="padding code"):
        kernels.PackedWeights.from_bytes(bytes(b))


@pytest.mark.parametrize("nm", [(2.5, 4), "24", (True, 4)])
def test_nm_must_be_a_pair_of_ints(nm):
    mask = np.ones((2, 8), bool)
    with pytest.raises(ValueError, match="pair of ints"):
        kernels.pack(np.zeros((2, 8), np.uint8), 4, np.arange(-8, 8, dtype=np.int8),
                     np.ones(2, np.float32), mask=mask, nm=nm)
