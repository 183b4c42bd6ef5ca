"""Peer: LiteRT FULLY_CONNECTED, int8 activations x int8, INT4 or INT2 weights, one thread.

The .tflite flatbuffer is written with LiteRT's own schema object API (no TensorFlow).
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
    """Signed 4- or 2-bit weights, row-major, 8/bits per byte. LiteRT wants element 0 of
    each byte in the lowest bits; `low_first=False` (reversed order) exists only to prove
    that a wrong layout is caught by the output check."""
    if bits not in (4, 2):
        raise ValueError(f"sub-byte packing is for 4 or 2 bits, got {bits}")
    flat = np.asarray(w, dtype=np.int8).reshape(-1)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"INT{bits} weights must be in [{lo}, {hi}]")
    per = 8 // bits
    vals = (flat.astype(np.int16) & ((1 << bits) - 1)).astype(np.uint8)
    vals = np.concatenate([vals, np.zeros(-len(vals) % per, np.uint8)]).reshape(-1, per)
    if not low_first:
        vals = vals[:, ::-1]
    out = np.zeros(len(vals), dtype=np.uint8)
    for j in range(per):
        out |= (vals[:, j] << (j * bits)).astype(np.uint8)
    return out.tobytes()


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
    no bias."""
    import flatbuffers
    import ai_edge_litert.schema_py_generated as fb

    N, K = w.shape
    if bits == 8:
        data, wtype = np.ascontiguousarray(w, dtype=np.int8).tobytes(), fb.TensorType.INT8
    elif bits in (4, 2):
        data = pack_subbyte(w, bits, low_first)
        wtype = fb.TensorType.INT4 if bits == 4 else fb.TensorType.INT2
    else:
        raise ValueError(f"litert_fc supports bits {BITS}, got {bits}")

    def quant(scale: float):
        p = fb.QuantizationParametersT()
        p.scale, p.zeroPoint = [float(scale)], [0]
        return p

    def tensor(name: str, shape, ttype, buffer: int, scale: float):
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, buffer
        t.quantization = quant(scale)
        return t

    opcode = fb.OperatorCodeT()
    opcode.builtinCode = fb.BuiltinOperator.FULLY_CONNECTED
    opcode.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    opcode.version = 1
    options = fb.FullyConnectedOptionsT()
    options.keepNumDims = True
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]  # -1: no bias
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.FullyConnectedOptions, options

    sub = fb.SubGraphT()
    sub.tensors = [tensor("x", (M, K), fb.TensorType.INT8, 0, q.x),
                   tensor("w", (N, K), wtype, 1, q.w),
                   tensor("y", (M, N), fb.TensorType.INT8, 0, q.y)]
    sub.operators, sub.inputs, sub.outputs, sub.name = [op], [0], [2], "main"
    empty, weights = fb.BufferT(), fb.BufferT()
    weights.data = np.frombuffer(data, dtype=np.uint8)
    model = fb.ModelT()
    model.version, model.description = 3, "edgekit bench-kernels litert_fc"
    model.operatorCodes, model.subgraphs, model.buffers = [opcode], [sub], [empty, weights]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


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
