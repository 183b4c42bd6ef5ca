"""Choose how one packed IR weight is stored in a .tflite: width, integer values, scales.

LiteRT has per-channel symmetric integer weights at INT8, INT4 (FULLY_CONNECTED, CONV_2D,
DEPTHWISE_CONV_2D) and INT2 (FULLY_CONNECTED only), one scale per output channel. An IR weight
is `scale[n, g] * codebook[code]` (docs/format.md §1). It is stored exactly when its integer
values fit the chosen width, possibly after dividing each row by a common factor (a non-uniform
codebook whose entries share a divisor). Otherwise it is re-quantized from its dequantized
values at the chosen width, and the extra error is reported — never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.export.parity import snr_db
from edgekit.kernels import packing

WIDTHS = {"fc": (2, 4, 8), "conv": (4, 8)}


@dataclass
class WeightPlan:
    """Integer weights (N, K) in [-2^(bits-1), 2^(bits-1)-1] with per-row float scales."""

    q: np.ndarray        # int8 (N, K)
    scale: np.ndarray    # float64 (N,) > 0; (N, G) when group_size > 0
    bits: int            # stored width: 2, 4 or 8
    ir_bits: int
    exact: bool          # q * scale equals the IR's dequantized weight in float32
    weight_snr_db: float | None  # None when exact
    sparsity: float
    group_size: int = 0  # > 0: one FULLY_CONNECTED per group of K columns, summed

    @property
    def dtype(self) -> str:
        return {8: "i8", 4: "int4", 2: "int2"}[self.bits]

    def groups(self) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """(k0, k1, q[:, k0:k1], scale per row) per K group (one group when ungrouped)."""
        K = self.q.shape[1]
        if not self.group_size:
            return [(0, K, self.q, self.scale)]
        return [(k0, min(k0 + self.group_size, K), self.q[:, k0:k0 + self.group_size],
                 self.scale[:, j]) for j, k0 in enumerate(range(0, K, self.group_size))]

    def dequantized(self) -> np.ndarray:
        out = np.empty(self.q.shape, np.float32)
        for k0, k1, q, sc in self.groups():
            out[:, k0:k1] = q.astype(np.float64) * sc[:, None]
        return out

    def report(self) -> dict:
        return {"ir_bits": self.ir_bits, "bits": self.bits, "widened": self.bits > self.ir_bits,
                "exact": self.exact, "weight_snr_db": self.weight_snr_db,
                "sparsity": round(self.sparsity, 4),
                "k_groups": len(self.groups()) if self.group_size else 1}


def ir_weight(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(integer values (N, K) int32, scales (N, ngroups), group column index (K,), bits) of a
    serialized packed weight; unstored (masked) weights are 0."""
    s = packing.deserialize(data)
    codes, codebook, scale, mask = packing.unpack_arrays(s)
    table = codebook if codebook.ndim == 2 else codebook[None, :]
    rows = np.arange(s.N)[:, None] if table.shape[0] > 1 else np.zeros((s.N, 1), np.int64)
    vals = table[rows, codes.astype(np.int64)].astype(np.int32)
    if mask is not None:
        vals[~mask] = 0
    scales = np.asarray(scale, np.float32).reshape(s.N, -1)
    gcol = (np.zeros(s.K, np.int64) if s.group_size == 0
            else np.arange(s.K) // s.group_size)
    return vals, scales, gcol, s.bits


def dequantize(data: bytes) -> np.ndarray:
    """The IR's float32 weight (N, K): scale[n, g(k)] * codebook[code[n, k]]."""
    vals, scales, gcol, _ = ir_weight(data)
    return (scales[:, gcol] * vals.astype(np.float32)).astype(np.float32)


def _row_divisor(vals: np.ndarray, bits: int) -> np.ndarray | None:
    """Per row, a positive integer d with vals/d integral and inside the signed `bits` range;
    None when some row has none."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = np.ones(len(vals), np.int64)
    for n, row in enumerate(vals):
        g = int(np.gcd.reduce(np.abs(row))) if row.size else 0
        g = max(g, 1)
        if row.min() // g < lo or row.max() // g > hi:
            return None
        # Largest divisor is not needed, any that fits keeps the values exact.
        out[n] = g
    return out


def plan(data: bytes, kind: str, *, lossless: bool = False, min_bits: int | None = None,
         split_groups: bool = True) -> WeightPlan:
    """How to store one packed weight for op `kind` ("fc" or "conv").

    The width is the smallest LiteRT supports that is >= the IR's bits and >= `min_bits`
    (e.g. 8: int8 everywhere; 4: no INT2, which XNNPACK does not run). `lossless=True`
    widens further instead of re-quantizing when the values do not fit exactly.
    `split_groups=False` re-quantizes per-group scales per channel instead of splitting the
    FC by group: smaller files (each group costs LiteRT a float scale and an int64 zero point
    per row), more error.
    """
    if kind not in WIDTHS:
        raise ValueError(f"weight kind must be one of {sorted(WIDTHS)}, got {kind!r}")
    vals, scales, gcol, bits = ir_weight(data)
    widths = [w for w in WIDTHS[kind] if min_bits is None or w >= min_bits]
    want = next((w for w in widths if w >= bits), widths[-1])
    sparsity = float(np.mean(vals == 0)) if vals.size else 0.0
    ref = (scales[:, gcol] * vals.astype(np.float32)).astype(np.float32)
    G = scales.shape[1]
    gs = int(gcol.tolist().count(0)) if G > 1 else 0
    if G == 1 or (kind == "fc" and split_groups):
        # Per-group scales stay exact for FULLY_CONNECTED: one per-channel FC per group of
        # K columns, the partial outputs summed (convs have no such split: their K mixes
        # channels and taps).
        for w in [x for x in widths if x >= want] if lossless else [want]:
            if G > 1 and w == 8 and not lossless:
                # At INT8 a per-channel re-quantization is nearly lossless (~40 dB and up)
                # while each split group costs 12 bytes per row: do not split.
                break
            parts = []
            for j in range(G):
                cols = slice(j * gs, (j + 1) * gs) if G > 1 else slice(None)
                d = _row_divisor(vals[:, cols], w)
                if d is None:
                    break
                sc = scales[:, j].astype(np.float64) * d
                sc[sc <= 0] = 1.0  # an all-zero row: any positive scale is exact
                parts.append(((vals[:, cols] // d[:, None]).astype(np.int8), sc))
            else:
                q = np.concatenate([p[0] for p in parts], axis=1)
                sc = parts[0][1] if G == 1 else np.stack([p[1] for p in parts], axis=1)
                return WeightPlan(q, sc, w, bits, True, None, sparsity, gs)
    if lossless:
        want = widths[-1]  # per-group scales: only the widest grid keeps the error smallest
    qmax = (1 << (want - 1)) - 1
    peak = np.abs(ref).max(axis=1).astype(np.float64)
    sc = np.where(peak > 0, peak / qmax, 1.0)
    q = np.clip(np.rint(ref / sc[:, None]), -qmax - 1, qmax).astype(np.int8)
    got = q.astype(np.float64) * sc[:, None]
    return WeightPlan(q, sc, want, bits, False, round(snr_db(ref, got), 2), sparsity)
