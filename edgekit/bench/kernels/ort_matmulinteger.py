"""Peer: onnxruntime MatMulInteger (int8 x int8 -> int32), the exact-integer ONNX baseline."""

from __future__ import annotations

import numpy as np

from edgekit.bench.kernels import ort_common
from edgekit.bench.kernels.cases import Case
from edgekit.bench.kernels.peer import Options, Prepared

NAME = "ort_matmulinteger"
BITS = (8,)
missing = ort_common.missing


def build_model(w: np.ndarray, M: int) -> bytes:
    """ONNX model Y = MatMulInteger(A, B) with B = w.T (K, N) int8 stored as an initializer."""
    from onnx import TensorProto, helper, numpy_helper

    N, K = w.shape
    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph(
        [node], "matmulinteger",
        [helper.make_tensor_value_info("A", TensorProto.INT8, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [M, N])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T.astype(np.int8)), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ort_common.IR_VERSION
    return model.SerializeToString()


def prepare(case: Case, opts: Options) -> Prepared:
    """Build and bind the session for `case` (its weights must fit int8, which all do)."""
    sess = ort_common.session(build_model(case.w, case.M))
    return ort_common.bound(sess, case.x, (case.M, case.N), np.int32,
                            weight_bytes=case.K * case.N, extra={})


def check(y: np.ndarray, case: Case, extra: dict | None = None) -> str | None:
    """Same integer semantics as edgekit: the int32 result must be identical."""
    if y.shape != case.acc.shape or not np.array_equal(y, case.acc):
        bad = int(np.count_nonzero(y != case.acc)) if y.shape == case.acc.shape else -1
        return f"int32 result differs from the reference in {bad} of {case.acc.size} outputs"
    return None
