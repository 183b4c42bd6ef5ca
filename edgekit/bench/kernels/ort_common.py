"""Shared onnxruntime plumbing: one-thread sessions and IOBinding with preallocated buffers."""

from __future__ import annotations

import numpy as np

from edgekit.bench.kernels.peer import Prepared

# onnx 1.23 stamps IR version 14; onnxruntime 1.31 loads at most 13.
IR_VERSION = 10


def missing() -> str | None:
    """Why onnxruntime-based peers cannot run here, or None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"needs onnx + onnxruntime ({exc.name} not installed)"
    return None


def session(model_bytes: bytes):
    """A CPU session pinned to one thread (intra- and inter-op), sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def bound(sess, x: np.ndarray, y_shape: tuple[int, ...], y_dtype, weight_bytes: int,
          extra: dict) -> Prepared:
    """Bind preallocated input/output OrtValues so each timed call is run_with_iobinding only."""
    import onnxruntime as ort

    x_val = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x))
    y_val = ort.OrtValue.ortvalue_from_numpy(np.empty(y_shape, dtype=y_dtype))
    io = sess.io_binding()
    io.bind_ortvalue_input(sess.get_inputs()[0].name, x_val)
    io.bind_ortvalue_output(sess.get_outputs()[0].name, y_val)

    def call() -> None:
        # No RunOptions argument: passing one (even a default one) cost ~50 us per call
        # with onnxruntime 1.31 here, against ~5 us without.
        sess.run_with_iobinding(io)

    # Keep the OrtValues alive with the closure: the binding points into their buffers.
    keep = (x_val, y_val)
    return Prepared(call=call, output=lambda: keep[1].numpy().copy(),
                    weight_bytes=weight_bytes, extra=extra)
