"""Packed low-bit weights and the int8 x packed-weight linear kernels.

The facade over `edgekit._C`: numpy in, numpy out, ValueError for bad input. Layout:
docs/format.md §1; kernels and their naming: docs/kernels.md, csrc/kernels/README.md.
"""

from __future__ import annotations

import numpy as np

from edgekit.kernels import packing
from edgekit.kernels.packing import quantize_multiplier

try:
    from edgekit import _C
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError("edgekit._C is not built; run `make build`") from exc

__all__ = [
    "PackedWeights", "pack", "unpack", "linear", "linear_f32", "linear_q8", "accumulate",
    "bench_linear", "quantize_multiplier", "isa", "available_isas", "compiled_isas",
    "kernel_name",
]


class PackedWeights:
    """Packed weights: the numpy sections and the validated C++ view over them (`_C`).

    Build with `pack(...)` or `PackedWeights.from_bytes(...)`. Validation happens once,
    here; kernel calls do not re-validate.
    """

    def __init__(self, sections: packing.Sections):
        self._s = sections.frozen()  # validated once below, so it must never change afterwards
        self._C = _C.PackedLinear(self._s.header(), *self._s.sections())

    @property
    def shape(self) -> tuple[int, int]:
        return (self._s.N, self._s.K)

    N = property(lambda self: self._s.N)
    K = property(lambda self: self._s.K)
    bits = property(lambda self: self._s.bits)
    group_size = property(lambda self: self._s.group_size)
    ngroups = property(lambda self: self._s.ngroups)
    sparse = property(lambda self: bool(self._s.flags & packing.FLAG_SPARSE))
    affine = property(lambda self: bool(self._s.flags & packing.FLAG_AFFINE))
    codebook_per_row = property(lambda self: bool(self._s.flags & packing.FLAG_PER_ROW))

    @property
    def nm(self) -> tuple[int, int] | None:
        return (self._s.nm_n, self._s.nm_m) if self._s.flags & packing.FLAG_NM else None

    @property
    def nbytes(self) -> int:
        """Stored bytes: codes + bitmaps + row offsets + codebook + scales (format §1.8)."""
        return self._s.nbytes

    @property
    def sections(self) -> packing.Sections:
        return self._s

    def to_bytes(self) -> bytes:
        """The serialized form (docs/format.md §1.9)."""
        return packing.serialize(self._s)

    @classmethod
    def from_bytes(cls, b: bytes) -> "PackedWeights":
        """Parse and fully validate serialized packed weights; ValueError if they are bad."""
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise ValueError(f"from_bytes needs bytes, got {type(b).__name__}")
        b = bytes(b)
        _C.validate_serialized(b)  # the C++ reader is the authority on validity
        return cls(packing.deserialize(b))

    def __repr__(self) -> str:
        kind = f"{self.nm[0]}:{self.nm[1]}" if self.nm else ("sparse" if self.sparse else "dense")
        return (f"PackedWeights(N={self.N}, K={self.K}, bits={self.bits}, {kind}, "
                f"groups={self.ngroups}, nbytes={self.nbytes})")


def pack(codes, bits, codebook, scale, mask=None, nm=None, group_size=0) -> PackedWeights:
    """Pack b-bit codes + int8 codebook + scales (+ zero-weight mask) into PackedWeights.

    codes: (N, K) ints < 2**bits; codebook: int8 (2**bits,) or (N, 2**bits); scale: float
    (N,) or (N, ngroups); mask: bool (N, K), False = weight is zero and not stored; nm:
    (n, m), exactly n kept weights per aligned group of m (checked against the mask);
    group_size: 0 (one scale per row) or a multiple of 64.
    """
    return PackedWeights(packing.pack_arrays(codes, bits, codebook, scale, mask, nm, group_size))


def unpack(pw: PackedWeights):
    """(codes, codebook, scale, mask) exactly as packed (unstored codes read back as 0)."""
    _check_pw(pw)
    return packing.unpack_arrays(pw.sections)


def _check_pw(pw) -> None:
    if not isinstance(pw, PackedWeights):
        raise ValueError(f"expected PackedWeights, got {type(pw).__name__}")


def _check_x(x, pw: PackedWeights, x_zero_point) -> tuple[np.ndarray, int]:
    _check_pw(pw)
    if not isinstance(x, np.ndarray) or x.dtype != np.int8:
        raise ValueError(f"x must be an int8 numpy array, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 2 or x.shape[1] != pw.K:
        raise ValueError(f"x must have shape (M, {pw.K}), got {x.shape}")
    zp = _int_scalar(x_zero_point, "x_zero_point", -128, 127)
    return np.ascontiguousarray(x), zp


def _int_scalar(v, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {v!r}")
    return int(v)


def _isa_arg(isa):
    if isa is not None and not isinstance(isa, str):
        raise ValueError(f"isa must be a string or None, got {isa!r}")
    return isa


def accumulate(x, pw: PackedWeights, x_zero_point=0, isa=None) -> np.ndarray:
    """int32 accumulators (M, N, ngroups): per scale group, before any epilogue."""
    x, zp = _check_x(x, pw, x_zero_point)
    return pw._C.accumulate(x, zp, _isa_arg(isa))


def linear(x, pw: PackedWeights, x_zero_point=0, isa=None) -> np.ndarray:
    """int32 (M, N): sum_k (x[m,k] - x_zero_point) * codebook[code[n,k]] over stored weights."""
    x, zp = _check_x(x, pw, x_zero_point)
    return pw._C.linear(x, zp, _isa_arg(isa))


def linear_f32(x, pw: PackedWeights, x_scale, x_zero_point=0, bias=None, isa=None) -> np.ndarray:
    """float32 (M, N) = x_scale * sum_g scale[n,g] * acc[m,n,g] + bias[n] (float32, this order)."""
    x, zp = _check_x(x, pw, x_zero_point)
    if np.ndim(x_scale) != 0 or isinstance(x_scale, (bool, np.bool_)):
        raise ValueError(f"x_scale must be a float scalar, got {x_scale!r}")
    try:
        with np.errstate(over="ignore"):
            xs = float(np.float32(x_scale))  # the epilogue computes in float32
    except (TypeError, ValueError):
        raise ValueError(f"x_scale must be a float scalar, got {x_scale!r}") from None
    if not np.isfinite(xs):
        raise ValueError(f"x_scale must be finite in float32, got {x_scale!r}")
    if bias is not None:
        bias = np.asarray(bias)
        if not np.issubdtype(bias.dtype, np.floating) or bias.shape != (pw.N,):
            raise ValueError(f"bias must be a float array of shape ({pw.N},), got {bias.dtype} {bias.shape}")
        bias = np.ascontiguousarray(bias, dtype=np.float32)
    return pw._C.linear_f32(x, xs, zp, bias, _isa_arg(isa))


def _per_channel_i32(v, name: str, N: int, lo: int, hi: int) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an int or an integer array, got {a.dtype}")
    if a.ndim == 0:
        a = np.full(N, int(a), np.int64)
    if a.shape != (N,):
        raise ValueError(f"{name} must be a scalar or have shape ({N},), got {a.shape}")
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise ValueError(f"{name} values must be in [{lo}, {hi}]")
    return np.ascontiguousarray(a, dtype=np.int32)


def linear_q8(x, pw: PackedWeights, x_zero_point, multiplier, shift, out_zero_point, bias=None,
              isa=None) -> np.ndarray:
    """int8 (M, N): TFLite per-channel requantization of the int32 accumulator (+ int32 bias).

    out = clamp(SRDHM((acc + bias) << max(shift, 0), multiplier) RDBPOT max(-shift, 0)
    + out_zero_point, -128, 127). Needs one scale group per row.
    """
    x, zp = _check_x(x, pw, x_zero_point)
    if pw.ngroups != 1:
        raise ValueError(f"linear_q8 needs one scale group per row; these weights have {pw.ngroups}")
    i32 = (-(1 << 31), (1 << 31) - 1)
    mult = _per_channel_i32(multiplier, "multiplier", pw.N, *i32)
    sh = _per_channel_i32(shift, "shift", pw.N, -31, 30)
    ozp = _int_scalar(out_zero_point, "out_zero_point", -128, 127)
    b = None if bias is None else _per_channel_i32(bias, "bias", pw.N, *i32)
    return pw._C.linear_q8(x, zp, mult, sh, ozp, b, _isa_arg(isa))


def bench_linear(x, pw: PackedWeights, warmup: int = 10, iters: int = 100, isa=None,
                 min_time_s=None, x_zero_point=0) -> np.ndarray:
    """Per-iteration wall times (ns, int64) of `linear`, timed in C++ around the kernel call
    (steady_clock, scratch preallocated, GIL released). Runs at least `iters` iterations and
    until `min_time_s` seconds of samples if given. One thread."""
    x, zp = _check_x(x, pw, x_zero_point)
    w = _int_scalar(warmup, "warmup", 0, 1 << 30)
    it = _int_scalar(iters, "iters", 1, 1 << 30)
    mt = None
    if min_time_s is not None:
        mt = float(min_time_s)
        if not 0 <= mt <= 3600:
            raise ValueError(f"min_time_s must be in [0, 3600], got {min_time_s!r}")
    return pw._C.bench(x, zp, _isa_arg(isa), w, it, mt)


def isa() -> str:
    """The ISA `linear` uses by default (EDGEKIT_ISA if set, else the best available)."""
    return _C.default_isa()


def available_isas() -> list[str]:
    """ISAs compiled into this build AND supported by this CPU, worst to best."""
    return list(_C.available_isas())


def compiled_isas() -> list[str]:
    """ISAs compiled into this build."""
    return list(_C.compiled_isas())


def kernel_name(isa: str) -> str:
    """Full kernel name of a variant (naming rule: csrc/kernels/README.md)."""
    return _C.kernel_name(isa)
