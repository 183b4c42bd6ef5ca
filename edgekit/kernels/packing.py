"""Writer and reader of packed linear weights (docs/format.md §1), in numpy only.

This module does not need the C++ extension, so tools that only inspect files can use it.
Everything is vectorized over blocks: packing a 4096x4096 matrix is a handful of array ops.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass

import numpy as np

BLOCK = 64
VERSION = 1
FLAG_PER_ROW, FLAG_AFFINE, FLAG_SPARSE, FLAG_NM = 1, 2, 4, 8
PLANES = {1: (1,), 2: (2,), 3: (2, 1), 4: (4,), 5: (4, 1), 6: (4, 2), 7: (4, 2, 1), 8: (8,)}
_HEADER = struct.Struct("<4sHBBIIIBBHQQQQQ")
assert _HEADER.size == 64
_MAX_DIM = 1 << 30


def _ngroups(K: int, group_size: int) -> int:
    """Scale groups per row: 1 for group_size 0 (one scale per row), else ceil(K / group_size)."""
    return 1 if group_size == 0 else -(-K // group_size)


@dataclass
class Sections:
    """The five sections of a packed matrix plus its header fields (the in-memory form)."""

    bits: int
    flags: int
    N: int
    K: int
    group_size: int
    nm_n: int
    nm_m: int
    codes: np.ndarray     # uint8, flat
    bitmaps: np.ndarray   # uint64, (N * nblocks,) or empty
    offsets: np.ndarray   # uint32, (N + 1,) or empty
    codebook: np.ndarray  # int8, (ntables, 2**bits)
    scales: np.ndarray    # float32, (N, ngroups)

    @property
    def ngroups(self) -> int:
        return _ngroups(self.K, self.group_size)

    def header(self) -> bytes:
        """The 64-byte header (docs/format.md §1.9)."""
        return _HEADER.pack(b"EKPW", VERSION, self.bits, self.flags, self.N, self.K,
                            self.group_size, self.nm_n, self.nm_m, 0, self.codes.nbytes,
                            self.bitmaps.nbytes, self.offsets.nbytes, self.codebook.nbytes,
                            self.scales.nbytes)

    def sections(self) -> tuple[np.ndarray, ...]:
        return (self.codes, self.bitmaps, self.offsets, self.codebook, self.scales)

    def frozen(self) -> "Sections":
        """A copy whose arrays are private and read-only.

        The C++ view reads these buffers without re-validating them on every kernel call, so
        nobody may change them after validation (a changed offset would be read out of bounds).
        """
        arrays = {}
        for name in ("codes", "bitmaps", "offsets", "codebook", "scales"):
            a = np.array(getattr(self, name), copy=True, order="C")
            a.setflags(write=False)
            arrays[name] = a
        return dataclasses.replace(self, **arrays)

    @property
    def nbytes(self) -> int:
        """Stored bytes as counted by docs/format.md §1.8."""
        return sum(int(a.nbytes) for a in self.sections())


def encode_blocks(codes: np.ndarray, bits: int) -> np.ndarray:
    """(B, 64) uint8 codes in natural order -> (B, 8*bits) bytes (bit-planes, §1.2-1.3)."""
    B = codes.shape[0]
    out, shift = [], 0
    for p in PLANES[bits]:
        v = ((codes >> shift) & ((1 << p) - 1)).astype(np.uint8).reshape(B, 8 // p, 8 * p)
        plane = np.zeros((B, 8 * p), np.uint8)
        for s in range(8 // p):
            plane |= v[:, s, :] << np.uint8(s * p)
        out.append(plane)
        shift += p
    return np.concatenate(out, axis=1)


def decode_blocks(data: np.ndarray, bits: int) -> np.ndarray:
    """(B, 8*bits) bytes -> (B, 64) uint8 codes; the inverse of encode_blocks."""
    B = data.shape[0]
    codes = np.zeros((B, BLOCK), np.uint8)
    off = shift = 0
    for p in PLANES[bits]:
        plane = data[:, off:off + 8 * p]
        segs = np.stack([(plane >> np.uint8(s * p)) & np.uint8((1 << p) - 1)
                         for s in range(8 // p)], axis=1)
        codes |= segs.reshape(B, BLOCK) << np.uint8(shift)
        off += 8 * p
        shift += p
    return codes


def affine_table(bits: int) -> np.ndarray:
    """The uniform symmetric full-range codebook c - 2^(b-1) (§1.6)."""
    return (np.arange(1 << bits) - (1 << (bits - 1))).astype(np.int8)


def _int_array(a, name: str, lo: int, hi: int, dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise ValueError(f"{name} values must be in [{lo}, {hi}], got [{int(a.min())}, {int(a.max())}]")
    return np.ascontiguousarray(a, dtype=dtype)


def _check_nm(mask: np.ndarray, nm, K: int) -> tuple[int, int]:
    try:
        n, m = nm
    except (TypeError, ValueError):
        raise ValueError(f"nm must be a pair of ints (n, m), got {nm!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (n, m)):
        raise ValueError(f"nm must be a pair of ints (n, m), got {nm!r}")
    n, m = int(n), int(m)
    if not (1 <= n <= m) or BLOCK % m or K % m:
        raise ValueError(f"invalid N:M {n}:{m}: need 1 <= n <= m, m dividing 64 and K={K} divisible by m")
    counts = mask.reshape(mask.shape[0], K // m, m).sum(axis=2)
    bad = np.argwhere(counts != n)
    if bad.size:
        r, g = bad[0]
        raise ValueError(f"mask violates {n}:{m} sparsity: row {r}, k {g * m}..{g * m + m - 1} "
                         f"has {counts[r, g]} kept weights")
    return n, m


def pack_arrays(codes, bits, codebook, scale, mask=None, nm=None, group_size=0) -> Sections:
    """Validate the arrays of METHODS.md §1 and lay them out as docs/format.md §1."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an int in 1..8, got {bits!r}")
    bits = int(bits)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
        raise ValueError(f"codes must be a non-empty 2-D (N, K) array, got shape {codes.shape}")
    N, K = codes.shape
    if N > _MAX_DIM or K > _MAX_DIM:
        raise ValueError(f"codes shape {codes.shape} is too large")
    codes = _int_array(codes, "codes", 0, (1 << bits) - 1, np.uint8)
    codebook = _int_array(codebook, "codebook", -128, 127, np.int8)
    if codebook.shape == (1 << bits,):
        flags, table = 0, codebook.reshape(1, -1)
    elif codebook.shape == (N, 1 << bits):
        flags, table = FLAG_PER_ROW, codebook
    else:
        raise ValueError(f"codebook must have shape ({1 << bits},) or ({N}, {1 << bits}) for "
                         f"{bits}-bit codes, got {codebook.shape}")
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
            or group_size < 0 or group_size % BLOCK or group_size > _MAX_DIM:
        raise ValueError(f"group_size must be 0 or a positive multiple of 64, got {group_size!r}")
    group_size = int(group_size)
    ngroups = _ngroups(K, group_size)
    scale = np.asarray(scale)
    if not np.issubdtype(scale.dtype, np.floating):
        raise ValueError(f"scale must be a float array, got dtype {scale.dtype}")
    if scale.shape == (N,) and ngroups == 1:
        scale = scale.reshape(N, 1)
    if scale.shape != (N, ngroups):
        raise ValueError(f"scale must have shape ({N},) or ({N}, {ngroups}) for group_size="
                         f"{group_size}, got {scale.shape}")
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    if not np.isfinite(scale).all():
        raise ValueError("scale must be finite")
    if (table == affine_table(bits)).all():
        flags |= FLAG_AFFINE

    nblocks = -(-K // BLOCK)
    Kpad = nblocks * BLOCK
    nm_n = nm_m = 0
    empty64, empty32 = np.zeros(0, np.uint64), np.zeros(0, np.uint32)
    if mask is None:
        if nm is not None:
            raise ValueError("nm needs a mask (which weights are kept)")
        padded = np.zeros((N, Kpad), np.uint8)
        padded[:, :K] = codes
        data = encode_blocks(padded.reshape(N * nblocks, BLOCK), bits)
        return Sections(bits, flags, N, K, group_size, 0, 0, data.reshape(-1), empty64,
                        empty32, np.ascontiguousarray(table), scale)

    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != (N, K):
        raise ValueError(f"mask must be a bool array of shape ({N}, {K}), got {mask.dtype} {mask.shape}")
    flags |= FLAG_SPARSE
    if nm is not None:
        nm_n, nm_m = _check_nm(mask, nm, K)
        flags |= FLAG_NM
    mpad = np.zeros((N, Kpad), bool)
    mpad[:, :K] = mask
    bitmaps = np.packbits(mpad.reshape(N * nblocks, BLOCK), axis=1, bitorder="little")
    bitmaps = np.ascontiguousarray(bitmaps).view("<u8").reshape(-1).astype(np.uint64)
    vblocks = -(-mask.sum(axis=1) // BLOCK)
    offsets = np.zeros(N + 1, np.int64)
    np.cumsum(vblocks, out=offsets[1:])
    if offsets[-1] >= 1 << 32:
        raise ValueError("too many stored codes for 32-bit row offsets")
    stream = np.zeros(int(offsets[-1]) * BLOCK, np.uint8)
    stream[_stream_index(mask, offsets)] = codes[mask]  # mask order = row-major, like the index
    data = encode_blocks(stream.reshape(-1, BLOCK), bits)
    return Sections(bits, flags, N, K, group_size, nm_n, nm_m, data.reshape(-1), bitmaps,
                    offsets.astype(np.uint32), np.ascontiguousarray(table), scale)


def _stream_index(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Position in the compacted stream of every stored code, in row-major mask order.

    Works on the stored codes only (O(nnz)): the j-th stored code overall, in row r, goes to
    64 * offsets[r] + (j - stored codes before row r).
    """
    nnz = mask.sum(axis=1)
    total = int(nnz.sum())
    # int32 indices when they fit: these arrays are as long as the stored codes, and fresh
    # memory (page faults) dominates the cost of packing a large sparse matrix.
    dt = np.int32 if int(offsets[-1]) * BLOCK < 2**31 else np.int64
    before = np.zeros(mask.shape[0], np.int64)
    np.cumsum(nnz[:-1], out=before[1:])
    base = (offsets[:-1].astype(np.int64) * BLOCK - before).astype(dt)
    idx = np.arange(total, dtype=dt)
    idx += np.repeat(base, nnz)
    return idx


def unpack_arrays(s: Sections):
    """(codes, codebook, scale, mask): the inverse of pack_arrays.

    Codes of weights that are not stored (mask False) come back as 0. codebook is 1-D for a
    per-tensor table; scale is (N,) when group_size is 0, else (N, ngroups); mask is None
    for dense weights.
    """
    N, K, bits = s.N, s.K, s.bits
    codebook = s.codebook.copy() if s.flags & FLAG_PER_ROW else s.codebook.reshape(-1).copy()
    scale = s.scales.reshape(N).copy() if s.group_size == 0 else s.scales.copy()
    codes_blocks = decode_blocks(s.codes.reshape(-1, 8 * bits), bits)
    if not s.flags & FLAG_SPARSE:
        return codes_blocks.reshape(N, -1)[:, :K].copy(), codebook, scale, None
    bm = np.ascontiguousarray(s.bitmaps.astype("<u8")).view(np.uint8).reshape(-1, 8)
    mask = np.unpackbits(bm, axis=1, bitorder="little").astype(bool).reshape(N, -1)[:, :K]
    codes = np.zeros((N, K), np.uint8)
    codes[mask] = codes_blocks.reshape(-1)[_stream_index(mask, s.offsets.astype(np.int64))]
    return codes, codebook, scale, mask.copy()


def _align64(v: int) -> int:
    return (v + 63) & ~63


def serialize(s: Sections) -> bytes:
    """Header + sections, each section at a multiple of 64 bytes (§1.9)."""
    out = bytearray(s.header())
    for a in s.sections():
        out += bytes(_align64(len(out)) - len(out))
        out += a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    return bytes(out)


def parse_header(b: bytes) -> dict:
    """Header fields of serialized packed weights (no validation beyond the length)."""
    if len(b) < 64:
        raise ValueError(f"packed weights: {len(b)} bytes is shorter than the 64-byte header")
    keys = ("magic", "version", "bits", "flags", "N", "K", "group_size", "nm_n", "nm_m",
            "reserved", "codes_bytes", "bitmap_bytes", "offsets_bytes", "codebook_bytes",
            "scales_bytes")
    return dict(zip(keys, _HEADER.unpack_from(b, 0)))


def deserialize(b: bytes) -> Sections:
    """Slice serialized bytes into sections. The caller validates them (the C++ reader);
    this only checks what it needs to slice safely.

    The sections are read-only views of `b` (of a private copy when `b` is mutable, e.g. a
    bytearray); PackedWeights copies them again via `Sections.frozen()`."""
    b = bytes(b)  # no copy for bytes; a mutable buffer must not alias the returned arrays
    h = parse_header(b)
    if h["magic"] != b"EKPW" or h["version"] != VERSION or not 1 <= h["bits"] <= 8:
        raise ValueError("packed weights: bad magic, version or bits")
    sizes = [h["codes_bytes"], h["bitmap_bytes"], h["offsets_bytes"], h["codebook_bytes"],
             h["scales_bytes"]]
    pos, offs = 64, []
    for size in sizes:
        offs.append(_align64(pos))
        pos = offs[-1] + size
    if pos != len(b):
        raise ValueError(f"packed weights: buffer is {len(b)} bytes, the header implies {pos}")
    dtypes = (np.uint8, np.dtype("<u8"), np.dtype("<u4"), np.int8, np.dtype("<f4"))
    arrs = []
    for off, size, dt in zip(offs, sizes, dtypes):
        if size % np.dtype(dt).itemsize:
            raise ValueError("packed weights: a section size is not a whole number of elements")
        arrs.append(np.frombuffer(b, dtype=dt, count=size // np.dtype(dt).itemsize, offset=off))
    ntables = h["N"] if h["flags"] & FLAG_PER_ROW else 1
    ngroups = _ngroups(h["K"], h["group_size"])
    if arrs[3].size != ntables << h["bits"] or arrs[4].size != h["N"] * ngroups:
        raise ValueError("packed weights: codebook or scales size does not match the header")
    return Sections(h["bits"], h["flags"], h["N"], h["K"], h["group_size"], h["nm_n"], h["nm_m"],
                    arrs[0], arrs[1].astype(np.uint64, copy=False),
                    arrs[2].astype(np.uint32, copy=False),
                    arrs[3].reshape(ntables, -1), arrs[4].reshape(h["N"], ngroups))


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    r = float(real_multiplier)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"real_multiplier must be finite and >= 0, got {real_multiplier!r}")
    if r == 0.0:
        return 0, 0
    q, shift = math.frexp(r)
    q_fixed = math.floor(q * (1 << 31) + 0.5)  # std::round: halves away from zero
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return q_fixed, shift
