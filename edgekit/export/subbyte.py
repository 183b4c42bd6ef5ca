"""Sub-byte (2- and 4-bit) integer packing shared by the ONNX and TFLite exporters.

Both formats store element 0 of each byte in its lowest bits, row-major, the last byte
zero-padded; keeping one packer means the two files cannot drift apart on that order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_subbyte"]


def pack_subbyte(values, bits: int, low_first: bool = True, *, signed: bool = True) -> bytes:
    """Pack integers into `8/bits` per byte, element i in bits [(i·bits) mod 8, +bits).

    signed: values must lie in the signed `bits`-bit range (else the unsigned one).
    low_first=False reverses the order inside each byte; it exists only so tests can prove a
    wrongly packed buffer is caught (LiteRT accepts one silently).
    Raises ValueError for another width or out-of-range values.
    """
    if bits not in (4, 2):
        raise ValueError(f"sub-byte packing is for 4 or 2 bits, got {bits}")
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"{'' if signed else 'U'}INT{bits} values must be in [{lo}, {hi}]")
    per = 8 // bits
    vals = (flat & ((1 << bits) - 1)).astype(np.uint8)
    vals = np.concatenate([vals, np.zeros(-len(vals) % per, np.uint8)]).reshape(-1, per)
    if not low_first:
        vals = vals[:, ::-1]
    out = np.zeros(len(vals), dtype=np.uint8)
    for j in range(per):
        out |= (vals[:, j] << (j * bits)).astype(np.uint8)
    return out.tobytes()
