"""Peer: LiteRT FULLY_CONNECTED, int8 activations x int8, INT4 or INT2 weights, one thread.

The .tflite is written by the TFLite exporter's builder (`edgekit.export.tflite.builder`,
LiteRT's schema object API, no TensorFlow).
LiteRT runs it through its default delegate (XNNPACK) when the delegate takes the node
(int8 and INT4 here; INT2 falls back to LiteRT's builtin kernel); which path ran is
recorded in every result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.bench.kernels.cases import Case
from edgekit.bench.kernels.peer import Options, Prepared

NAME = "litert_fc"
BITS = (8, 4, 2)

# Arbitrary but fixed quantization of the integer data: the check models the requantization
# exactly, so the values only need to keep the multiplier well inside int8's range.
X_SCALE = 0.05
W_SCALE = 0.01


def missing() -> str | None:
    """Why LiteRT cannot run here, or None."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import ai_edge_litert.schema_py_generated  # noqa: F401
        import flatbuffers  # noqa: F401
    except ImportError as exc:
        return f"needs ai-edge-litert ({exc.name} not installed)"
    return None


def pack_subbyte(w: np.ndarray, bits: int, low_first: bool = True) -> bytes:
    """Signed 4- or 2-bit weights in LiteRT's order (the exporter's packer, one writer)."""
    from edgekit.export.tflite.builder import pack_subbyte as pack

    return pack(w, bits, low_first)


@dataclass(frozen=True)
class Quant:
    """Per-tensor scales of the model (zero points are all 0)."""

    x: float
    w: float
    y: float


def output_quant(acc: np.ndarray) -> Quant:
    """Output scale chosen so the largest |accumulator| maps to 127: the int8 outputs then
    use the whole range and a wrong weight layout cannot hide inside one LSB."""
    peak = max(int(np.abs(acc.astype(np.int64)).max(initial=0)), 1)
    return Quant(X_SCALE, W_SCALE, X_SCALE * W_SCALE * peak / 127.0)


def expected_output(acc: np.ndarray, q: Quant) -> np.ndarray:
    """Numpy model of the quantized FC: int32 accumulators requantized to int8 (zp 0)."""
    real = acc.astype(np.float64) * (q.x * q.w / q.y)
    return np.clip(np.round(real), -128, 127).astype(np.int8)


def build_model(w: np.ndarray, bits: int, M: int, q: Quant, *, low_first: bool = True) -> bytes:
    """A one-op .tflite: y(M,N) int8 = FULLY_CONNECTED(x(M,K) int8, w(N,K) int8|INT4|INT2),
    no bias, written with the TFLite exporter's builder."""
    from edgekit.export.tflite.builder import ModelBuilder, _fb

    N, K = w.shape
    if bits == 8:
        wargs = dict(dtype="i8", data=np.ascontiguousarray(w, dtype=np.int8))
    elif bits in (4, 2):
        wargs = dict(dtype="int4" if bits == 4 else "int2", raw=pack_subbyte(w, bits, low_first))
    else:
        raise ValueError(f"litert_fc supports bits {BITS}, got {bits}")
    mb = ModelBuilder("edgekit bench-kernels litert_fc")
    g = mb.subgraph("main")
    x = g.tensor("x", (M, K), "i8", scale=q.x, zero_point=0)
    wt = g.tensor("w", (N, K), scale=q.w, zero_point=0, **wargs)
    y = g.tensor("y", (M, N), "i8", scale=q.y, zero_point=0)
    options = _fb().FullyConnectedOptionsT()
    options.keepNumDims = True
    g.op("FULLY_CONNECTED", [x, wt, -1], [y], options)  # -1: no bias
    g.set_io([x], [y])
    return mb.finish()


def interpreter(model: bytes):
    """A one-thread interpreter with tensors allocated (default delegate applied)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model, num_threads=1)
    interp.allocate_tensors()
    return interp


def run_once(model: bytes, x: np.ndarray) -> np.ndarray:
    """Build an interpreter for `model`, run it on `x`, return the int8 output."""
    interp = interpreter(model)
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(x))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def _delegate(interp) -> str:
    try:
        names = {d.get("op_name") for d in interp._get_ops_details()}
    except Exception:  # private API: absence only loses the label, not the measurement
        return "unknown"
    return "xnnpack" if "DELEGATE" in names else "builtin"


def prepare(case: Case, opts: Options) -> Prepared:
    """Model and interpreter for `case`; the input is set once, each timed call is invoke()."""
    q = output_quant(case.acc)
    model = build_model(case.w, case.bits, case.M, q)
    interp = interpreter(model)
    interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(case.x))
    out_index = interp.get_output_details()[0]["index"]
    weight_bytes = (case.N * case.K * case.bits + 7) // 8 + 4  # packed weights + one scale
    return Prepared(call=interp.invoke, output=lambda: interp.get_tensor(out_index).copy(),
                    weight_bytes=weight_bytes,
                    extra={"delegate": _delegate(interp), "_quant": q})


def check(y: np.ndarray, case: Case, extra: dict | None = None) -> str | None:
    """Equal to the requantized reference within 1 LSB (rounding of the fixed-point
    multiplier differs between LiteRT's kernels and XNNPACK)."""
    q = (extra or {}).get("_quant") or output_quant(case.acc)
    want = expected_output(case.acc, q)
    if y.shape != want.shape:
        return f"output shape {y.shape} != {want.shape}"
    diff = np.abs(y.astype(np.int16) - want.astype(np.int16))
    if diff.max(initial=0) > 1:
        return (f"{int(np.count_nonzero(diff > 1))} of {y.size} int8 outputs differ by more "
                f"than 1 LSB from the requantized reference (max {int(diff.max())})")
    return None
