"""Peer: onnxruntime com.microsoft MatMulNBits (float activations, 8/4/2-bit block weights).

This is what ORT turns DequantizeLinear+MatMul into. With accuracy_level 4 (what ORT picks
for int8-capable CPUs) it quantizes the activations to int8 per block and runs an integer
dot product, so it is the closest ORT peer to edgekit's int8 x b-bit kernels. The level
used is recorded in every result.
"""

from __future__ import annotations

import numpy as np

from edgekit.bench.kernels import ort_common
from edgekit.bench.kernels.cases import Case
from edgekit.bench.kernels.peer import Options, Prepared, close_check

NAME = "ort_matmulnbits"
BITS = (8, 4, 2)
missing = ort_common.missing

# Level 4 re-quantizes activations per block, so the result is close, not exact; 1 % of the
# output norm is far below what a packing or layout mistake produces (~100 %).
REL_TOL = {0: 1e-6, 1: 1e-6, 2: 1e-3, 3: 1e-3, 4: 1e-2}


def pack_blocks(codes: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """(N, K) unsigned codes -> (N, k_blocks, block_size*bits/8) uint8, lowest bits first.

    K is padded to a whole block with the zero point 2^(bits-1), i.e. weight 0.
    """
    N, K = codes.shape
    kblocks = -(-K // block_size)
    padded = np.full((N, kblocks * block_size), 1 << (bits - 1), dtype=np.uint8)
    padded[:, :K] = codes
    per_byte = 8 // bits
    c = padded.reshape(N, kblocks, block_size // per_byte, per_byte)
    out = np.zeros(c.shape[:3], dtype=np.uint8)
    for j in range(per_byte):
        out |= (c[..., j] << (j * bits)).astype(np.uint8)
    return out


def build_model(codes: np.ndarray, bits: int, M: int, block_size: int = 32,
                accuracy_level: int = 4, scales: np.ndarray | None = None) -> bytes:
    """ONNX model Y = A @ dequant(B).T with dequant = scale * (code - 2^(bits-1)).

    Zero points are left to the operator's default, 2^(bits-1), which makes the dequantized
    weights equal to edgekit's affine codebook values times `scales` (default 1).
    """
    from onnx import TensorProto, helper, numpy_helper

    if bits not in BITS:
        raise ValueError(f"MatMulNBits here supports bits {BITS}, got {bits}")
    N, K = codes.shape
    packed = pack_blocks(codes, bits, block_size)
    if scales is None:
        scales = np.ones((N, packed.shape[1]), dtype=np.float32)
    node = helper.make_node(
        "MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft",
        K=K, N=N, bits=bits, block_size=block_size, accuracy_level=accuracy_level)
    graph = helper.make_graph(
        [node], "matmulnbits",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])],
        [numpy_helper.from_array(packed, "B"),
         numpy_helper.from_array(np.asarray(scales, np.float32).reshape(-1), "scales")])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = ort_common.IR_VERSION
    return model.SerializeToString()


def prepare(case: Case, opts: Options) -> Prepared:
    """Session over `case` with unit scales, so the float result is the integer product."""
    level, block = opts.nbits_accuracy_level, opts.nbits_block_size
    sess = ort_common.session(build_model(case.codes, case.bits, case.M, block, level))
    kblocks = -(-case.K // block)
    weight_bytes = case.N * kblocks * (block * case.bits // 8 + 4)  # codes + fp32 scales
    return ort_common.bound(sess, case.x.astype(np.float32), (case.M, case.N), np.float32,
                            weight_bytes=weight_bytes,
                            extra={"accuracy_level": level, "block_size": block})


def check(y: np.ndarray, case: Case, extra: dict | None = None) -> str | None:
    """Close to the exact product; how close depends on the activation quantization."""
    accuracy_level = (extra or {}).get("accuracy_level", 4)
    return close_check(y, case, REL_TOL.get(accuracy_level, 1e-2),
                       f" (accuracy_level {accuracy_level})")
