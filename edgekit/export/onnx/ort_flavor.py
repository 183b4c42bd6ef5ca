"""flavor="ort": uniform 2/4/8-bit `qlinear`/`qlstm` weights as com.microsoft MatMulNBits.

MatMulNBits stores (N, k_blocks, block_size·bits/8) codes, k consecutive within a block and
the first code in the low bits of a byte, one float scale per (n, block) and — when no zero
point is given — the implicit zero point 2^(bits−1). That is exactly the symmetric affine
codebook of §1.6, so only those weights take this route (and only with a power-of-two group
size of at most 256, which MatMulNBits requires; a per-row scale is repeated per block,
with the block size that stores the fewest bytes); everything else falls back to the QDQ route.
"""

from __future__ import annotations

import numpy as np
from onnx import helper, TensorProto

from edgekit.export.onnx import weights

_MAX_BLOCK = 256   # onnxruntime 1.31's MatMulNBits accepts block sizes 16..256


def _pack_blocks(q: np.ndarray, bits: int, block: int) -> np.ndarray:
    """(N, K) codes -> (N, k_blocks, block·bits/8) uint8; padding codes = the zero point."""
    N, K = q.shape
    kb = -(-K // block)
    full = np.full((N, kb * block), 1 << (bits - 1), np.uint8)
    full[:, :K] = q
    per = 8 // bits
    v = full.reshape(N, kb, block // per, per)
    out = np.zeros(v.shape[:3], np.uint8)
    for j in range(per):
        out |= v[..., j] << np.uint8(j * bits)
    return out


def matmulnbits(e, op, x: str, wname: str):
    """x times packed weight `wname` as MatMulNBits (no bias), or None when it does not fit.

    The node goes where the emitter builds (a Scan body for the LSTM's W_hh); its
    initializers go to the main graph, which a body may read."""
    w = e.decoded(wname)
    prog = weights.progression(w.tables)
    if w.bits not in (2, 4, 8) or prog is None:
        return None
    d, z = prog
    if (z != 1 << (w.bits - 1)).any():
        return None
    if w.ngroups > 1:
        block = w.group_size
        if block & (block - 1) or block > _MAX_BLOCK:
            return None
    else:  # one scale per row, repeated per block: pick the block that stores fewest bytes
        block = min((16, 32, 64, 128, _MAX_BLOCK),
                    key=lambda bs: -(-w.K // bs) * (bs * w.bits // 8 + 4))
    rows = np.zeros(w.N, np.int64) if w.tables.shape[0] == 1 else np.arange(w.N)
    codes = w.codes if w.mask is None else np.where(w.mask, w.codes, np.uint8(1 << (w.bits - 1)))
    B = _pack_blocks(codes, w.bits, block)
    scales = (w.scales * d[rows][:, None].astype(np.float32)).astype(np.float32)
    if w.ngroups == 1:
        scales = np.repeat(scales, B.shape[1], axis=1)
    o = e.outer
    bname = o.add_init(helper.make_tensor(o.tmp(), TensorProto.UINT8,
                                          list(B.shape), B.tobytes(), raw=True))
    sname = o.const(scales.reshape(-1))
    y = e.b.one("MatMulNBits", [x, bname, sname], op.name, domain="com.microsoft",
                K=w.K, N=w.N, bits=w.bits, block_size=block)
    widened = ["sparse stored dense (zero code)"] if w.mask is not None else []
    e.record(op, wname, weights.Stored(
        f"MatMulNBits {w.bits}-bit block {block}", w.bits, w.bits, B.size + scales.size * 4,
        w.packed_bytes, widened))
    return y
