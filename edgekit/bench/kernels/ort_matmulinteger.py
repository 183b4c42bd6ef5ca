"""Peer: onnxruntime MatMulInteger (8-bit x int8 -> int32), the exact-integer ONNX baseline.

The activations are fed as uint8 with zero point 128 (x + 128), which gives exactly the
int32 result of int8 x int8: with onnxruntime 1.31 on x86 the int8-activation form takes a
slow path (~19.5 ms against ~0.2 ms for 1x1024x4096 here), and a benchmark against that
would flatter edgekit. `build_model(..., activations="int8")` keeps the literal form.
"""

from __future__ import annotations

import numpy as np

from edgekit.bench.kernels import ort_common
from edgekit.bench.kernels.cases import Case
from edgekit.bench.kernels.peer import Options, Prepared, exact_check

NAME = "ort_matmulinteger"
BITS = (8,)
missing = ort_common.missing


def build_model(w: np.ndarray, M: int, activations: str = "uint8") -> bytes:
    """ONNX model Y = MatMulInteger(A, B[, a_zero_point]) with B = w.T (K, N) int8.

    activations "uint8": A is uint8 with a_zero_point 128; "int8": A is int8, no zero point.
    """
    from onnx import TensorProto, helper, numpy_helper

    N, K = w.shape
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T.astype(np.int8)), "B")]
    if activations == "uint8":
        a_type, inputs = TensorProto.UINT8, ["A", "B", "a_zero_point"]
        inits.append(numpy_helper.from_array(np.array(128, np.uint8), "a_zero_point"))
    elif activations == "int8":
        a_type, inputs = TensorProto.INT8, ["A", "B"]
    else:
        raise ValueError(f"activations must be 'uint8' or 'int8', got {activations!r}")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["Y"])], "matmulinteger",
        [helper.make_tensor_value_info("A", a_type, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [M, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ort_common.IR_VERSION
    return model.SerializeToString()


def as_uint8(x: np.ndarray) -> np.ndarray:
    """int8 activations shifted by the zero point 128 into uint8 (same values after x - 128)."""
    return (x.astype(np.int16) + 128).astype(np.uint8)


def prepare(case: Case, opts: Options) -> Prepared:
    """Build and bind the session for `case` (its weights fit int8 at every bit width)."""
    sess = ort_common.session(build_model(case.w, case.M))
    return ort_common.bound(sess, as_uint8(case.x), (case.M, case.N), np.int32,
                            weight_bytes=case.K * case.N + 1,
                            extra={"activations": "uint8 zp=128"})


def check(y: np.ndarray, case: Case, extra: dict | None = None) -> str | None:
    """Same integer semantics as edgekit: the int32 result must be identical."""
    return exact_check(y, case)
