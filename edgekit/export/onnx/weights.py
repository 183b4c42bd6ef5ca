"""Packed weights (docs/format.md §1) -> ONNX initializers with their true bit width.

Two exact routes, chosen per tensor:

* **uniform** codebooks (every table is an integer progression `t[c] = d·(c − z)`, d > 0, z an
  integer the storage type can hold) → one `DequantizeLinear` over INT8/INT4/INT2 codes (when
  z is the symmetric midpoint 2^(b−1)) or UINT8/UINT4/UINT2 codes with a zero point, scale
  `scale·d`, per-channel (`axis`) or blocked (`block_size` = the group size). d = 1 (the
  affine tables of §1.6) gives the compressed model's weights bit for bit.
* everything else (Lloyd-Max / GQ centroids, 1-bit ±a) → codes in the smallest unsigned type
  that holds them, `Cast` to int64, `Gather` (per-tensor table) or `GatherElements` (per-row
  tables) into the int8 codebook cast to float, `Mul` by the (group-expanded) scales.

Masked (pruned) weights are stored densely: with the code whose value is 0 (always present on
the uniform route; on the gather route a zero entry is appended to the table when none exists,
which may cost one more index bit). The report says so — ONNX has no sparse route that
onnxruntime runs without densifying.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper

from edgekit.export.onnx.builder import Builder
from edgekit.export.subbyte import pack_subbyte
from edgekit.kernels import packing

SIGNED = {8: TensorProto.INT8, 4: TensorProto.INT4, 2: TensorProto.INT2}
UNSIGNED = {8: TensorProto.UINT8, 4: TensorProto.UINT4, 2: TensorProto.UINT2}
TYPE_NAMES = {TensorProto.INT8: "INT8", TensorProto.INT4: "INT4", TensorProto.INT2: "INT2",
              TensorProto.UINT8: "UINT8", TensorProto.UINT4: "UINT4", TensorProto.UINT2: "UINT2"}


@dataclass
class Stored:
    """How one packed weight went into the ONNX file."""

    storage: str                   # e.g. "DequantizeLinear INT4 blocked(64)"
    bits: int                      # code width in the packed weight
    container_bits: int            # bits per stored code in the ONNX file
    onnx_bytes: int                # initializer bytes this weight costs in the ONNX file
    packed_bytes: int              # §1.8 stored bytes (the EKM's size for the same weight)
    widened: list[str] = field(default_factory=list)


@dataclass
class Decoded:
    """A packed weight unpacked to dense arrays."""

    bits: int
    N: int
    K: int
    group_size: int
    codes: np.ndarray      # (N, K) uint8, masked codes are 0
    tables: np.ndarray     # (ntables, 2^bits) int8
    scales: np.ndarray     # (N, ngroups) float32
    mask: np.ndarray | None
    packed_bytes: int

    @property
    def ngroups(self) -> int:
        return self.scales.shape[1]


def decode(buf: bytes) -> Decoded:
    """Unpack a §1 serialized buffer; ValueError when it is malformed."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise ValueError(f"packed tensor data must be bytes, got {type(buf).__name__}")
    sec = packing.deserialize(bytes(buf))
    codes, _, _, mask = packing.unpack_arrays(sec)
    return Decoded(sec.bits, sec.N, sec.K, sec.group_size, codes,
                   np.asarray(sec.codebook, np.int8).reshape(-1, 1 << sec.bits),
                   np.asarray(sec.scales, np.float32).reshape(sec.N, -1), mask, sec.nbytes)


def int_tensor(name: str, values: np.ndarray, elem: int, shape) -> tuple:
    """An integer initializer of any ONNX int width; returns (TensorProto, stored bytes)."""
    bits = {TensorProto.INT2: 2, TensorProto.UINT2: 2, TensorProto.INT4: 4,
            TensorProto.UINT4: 4}.get(elem, 8)
    if bits < 8:
        raw = pack_subbyte(values, bits, signed=elem in (TensorProto.INT2, TensorProto.INT4))
    else:
        raw = np.ascontiguousarray(values, np.int8 if elem == TensorProto.INT8 else np.uint8)
        raw = raw.tobytes()
    return helper.make_tensor(name, elem, list(shape), raw, raw=True), len(raw)


def progression(tables: np.ndarray):
    """(d, z) per table when every table is d·(c − z) with integer d > 0 and z, else None."""
    t = tables.astype(np.int64)
    d = t[:, 1] - t[:, 0]
    if (d <= 0).any():
        return None
    c = np.arange(t.shape[1])
    if not (t == t[:, :1] + d[:, None] * c).all() or (t[:, 0] % d).any():
        return None
    return d, -t[:, 0] // d


def container(bits: int, opset: int) -> int:
    """Smallest ONNX integer width (2, 4, 8) that holds `bits`-bit values at this opset."""
    if bits <= 2 and opset >= 25:
        return 2
    return 4 if bits <= 4 else 8


def _layout(a: np.ndarray, kn: bool) -> np.ndarray:
    return np.ascontiguousarray(a.T if kn else a)


def _scale_operand(b: Builder, scales: np.ndarray, kn: bool) -> tuple[str, dict, int]:
    """DequantizeLinear scale + attributes: per-channel (1-D) or blocked (same rank)."""
    if scales.shape[1] == 1:
        return b.const(scales[:, 0]), {"axis": 1 if kn else 0}, scales.size * 4
    return b.const(_layout(scales, kn)), {"axis": 0 if kn else 1}, scales.size * 4


def dequantized(b: Builder, w: Decoded, opset: int, kn: bool, hint: str,
                out_shape: tuple | None = None) -> tuple[str, Stored]:
    """Emit the float weight, (K, N) when `kn` else (N, K) — or `out_shape` (same row-major
    order, e.g. a conv's (Cout, Cin/g, k)) when given. Returns its name and the report."""
    prog = progression(w.tables)
    if prog is not None:
        out = _uniform(b, w, prog, opset, kn, hint, out_shape)
        if out is not None:
            return out
    y, stored = _gather(b, w, opset, kn, hint)
    return _reshaped(b, y, out_shape, hint), stored


def _reshaped(b: Builder, y: str, shape, hint: str) -> str:
    return y if shape is None else b.one("Reshape", [y, b.const(list(shape), np.int64)], hint)


def _unfusable(b: Builder, y: str, hint: str) -> str:
    """`y` through a one-input `Sum` (a copy): keeps a 2-bit weight's DequantizeLinear from
    feeding Conv directly.

    onnxruntime 1.32 (default options, any accuracy level) fuses DequantizeLinear(INT2/UINT2
    weight) -> bias-less Conv -> QuantizeLinear into a QLinearConv, which has no 2-bit kernel,
    and the session fails to load ("Type 'tensor(int2)' of input parameter ... of operator
    (QLinearConv) ... is invalid"). It neither removes nor folds a one-input Sum (Identity,
    Cast to float, Mul by 1, Add of 0 and Dropout are all removed, and the fusion comes back),
    and its QDQ selectors want the DequantizeLinear as the Conv's direct input. Same values,
    no constant, ~25 bytes per conv. INT4/INT8 weights do not get it: onnxruntime's int8 conv
    fusion must stay (and 1.32 does not fuse an INT4 one). Weights that already reach their
    consumer through Reshape (grouped scales, ConvTranspose's regrouping) need nothing."""
    return b.one("Sum", [y], hint)


def _uniform(b, w: Decoded, prog, opset, kn, hint, out_shape=None):
    d, z = prog
    cb = container(w.bits, opset)
    rows = np.zeros(w.N, np.int64) if w.tables.shape[0] == 1 else np.arange(w.N)
    zr = z[rows]
    symmetric = cb == w.bits and (zr == 1 << (w.bits - 1)).all()
    if symmetric:
        q, elem, zp = w.codes.astype(np.int16) - (1 << (w.bits - 1)), SIGNED[cb], None
    else:
        if (zr < 0).any() or (zr > (1 << cb) - 1).any():
            return None
        q, elem, zp = w.codes.astype(np.int16), UNSIGNED[cb], zr
    if w.mask is not None:  # the zero weight: code z (symmetric: q = 0)
        q = np.where(w.mask, q, 0 if symmetric else zr[:, None])
    scales = w.scales * d[rows][:, None].astype(np.float32) if (d != 1).any() else w.scales
    shape = (w.K, w.N) if kn else (w.N, w.K)
    per_channel_nd = out_shape is not None and not kn and w.ngroups == 1
    if per_channel_nd:   # stored in the consumer's shape: no Reshape node (axis 0 = rows)
        shape = tuple(out_shape)
    tq, nbytes = int_tensor(b.tmp(), _layout(q, kn), elem, shape)
    qname = b.add_init(tq)
    sname, attrs, sbytes = _scale_operand(b, scales, kn)
    inputs = [qname, sname]
    if zp is not None:
        zarr = np.broadcast_to(zp[:, None], scales.shape)
        zarr = zarr[:, 0] if scales.shape[1] == 1 else _layout(zarr, kn)
        tz, zbytes = int_tensor(b.tmp(), zarr, elem, zarr.shape)
        inputs.append(b.add_init(tz))
        nbytes += zbytes
    if scales.shape[1] > 1:
        attrs["block_size"] = w.group_size
    y = b.one("DequantizeLinear", inputs, hint=hint, **attrs)
    if not per_channel_nd:
        y = _reshaped(b, y, out_shape, hint)
    elif cb == 2:
        y = _unfusable(b, y, hint)
    kind = f"blocked({w.group_size})" if scales.shape[1] > 1 else "per-channel"
    widened = []
    if cb > w.bits:
        widened.append(f"{w.bits}-bit codes stored as {TYPE_NAMES[elem]}")
    if w.mask is not None:
        widened.append("sparse stored dense (zero code)")
    return y, Stored(f"DequantizeLinear {TYPE_NAMES[elem]} {kind}", w.bits, cb,
                     nbytes + sbytes, w.packed_bytes, widened)


def _gather(b, w: Decoded, opset, kn, hint):
    tables, codes = w.tables, w.codes
    widened, mask = [], None
    if w.mask is not None and w.bits == 8 and not (tables == 0).any(axis=1).all():
        # No room for a 257th entry in 8 bits: keep the mask as its own BOOL tensor.
        mask = w.mask
        widened.append("sparse stored dense + BOOL mask (8 bits per weight)")
    elif w.mask is not None:
        has_zero = (tables == 0).any(axis=1)
        if has_zero.all():
            zero_code = np.argmax(tables == 0, axis=1).astype(np.uint8)
            rows = np.zeros(w.N, np.int64) if tables.shape[0] == 1 else np.arange(w.N)
            codes = np.where(w.mask, codes, zero_code[rows][:, None])
            widened.append("sparse stored dense (zero code)")
        else:  # no zero entry: append one at index 2^b
            tables = np.concatenate([tables, np.zeros((tables.shape[0], 1), np.int8)], axis=1)
            codes = np.where(w.mask, codes, np.uint8(1 << w.bits))
            widened.append("sparse stored dense (zero entry appended to the codebook)")
    index_bits = max(1, int(tables.shape[1] - 1).bit_length())
    cb = container(index_bits, opset)
    if cb > w.bits:
        widened.append(f"{w.bits}-bit codes stored as {TYPE_NAMES[UNSIGNED[cb]]}")
    shape = (w.K, w.N) if kn else (w.N, w.K)
    tq, nbytes = int_tensor(b.tmp(), _layout(codes, kn), UNSIGNED[cb], shape)
    idx = b.one("Cast", [b.add_init(tq)], hint=hint, to=TensorProto.INT64)
    if tables.shape[0] == 1:
        table = b.one("Cast", [b.const(tables[0], np.int8)], hint=hint, to=TensorProto.FLOAT)
        vals = b.one("Gather", [table, idx], hint=hint, axis=0)
    else:
        table = b.one("Cast", [b.const(_layout(tables, kn), np.int8)],
                      hint=hint, to=TensorProto.FLOAT)
        vals = b.one("GatherElements", [table, idx], hint=hint, axis=1 if not kn else 0)
    nbytes += tables.size
    scale = _expanded_scales(b, w, kn, hint)
    y = b.one("Mul", [vals, scale], hint=hint)
    if mask is not None:
        m = b.const(_layout(mask, kn), np.bool_)
        y = b.one("Where", [m, y, b.const(np.float32(0))], hint=hint)
        nbytes += mask.size
    kind = f"blocked({w.group_size})" if w.ngroups > 1 else "per-channel"
    storage = (f"Gather {TYPE_NAMES[UNSIGNED[cb]]} codes, "
               f"{'per-row' if tables.shape[0] > 1 else 'per-tensor'} int8 codebook, {kind}")
    return y, Stored(storage, w.bits, cb, nbytes + w.scales.size * 4, w.packed_bytes, widened)


def _expanded_scales(b: Builder, w: Decoded, kn: bool, hint: str) -> str:
    """Scales broadcastable to the weight: (N,) / (N, 1), or groups expanded to every k."""
    if w.ngroups == 1:
        return b.const(w.scales[:, 0] if kn else w.scales)
    G, gs = w.ngroups, w.group_size
    if kn:  # (G, N) -> (G, gs, N) -> (G·gs, N) -> first K rows
        s = b.const(w.scales.T.reshape(G, 1, w.N))
        full = b.one("Expand", [s, b.const([G, gs, w.N], np.int64)], hint=hint)
        flat = b.one("Reshape", [full, b.const([G * gs, w.N], np.int64)], hint=hint)
        axis = 0
    else:
        s = b.const(w.scales.reshape(w.N, G, 1))
        full = b.one("Expand", [s, b.const([w.N, G, gs], np.int64)], hint=hint)
        flat = b.one("Reshape", [full, b.const([w.N, G * gs], np.int64)], hint=hint)
        axis = 1
    return b.one("Slice", [flat, b.const([0], np.int64), b.const([w.K], np.int64),
                           b.const([axis], np.int64)], hint=hint)
