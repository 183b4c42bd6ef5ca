"""A small .tflite writer over LiteRT's flatbuffer object API (no TensorFlow needed).

`ModelBuilder` owns buffers, operator codes and subgraphs; `Subgraph` adds tensors (with
quantization parameters) and operators. Sub-byte weights (INT4, INT2) are packed by
`edgekit.export.subbyte` (element 0 of each byte in its lowest bits, LiteRT's order).
"""

from __future__ import annotations

import numpy as np

from edgekit.export.subbyte import pack_subbyte

TYPES = ("f32", "i32", "i64", "i8", "u8", "bool", "int4", "int2", "i16")


def _fb():
    import ai_edge_litert.schema_py_generated as fb
    return fb


def _tensor_type(dtype: str) -> int:
    t = _fb().TensorType
    table = {"f32": t.FLOAT32, "i32": t.INT32, "i64": t.INT64, "i8": t.INT8, "u8": t.UINT8,
             "bool": t.BOOL, "int4": t.INT4, "int2": t.INT2, "i16": t.INT16}
    if dtype not in table:
        raise ValueError(f"unknown tensor dtype {dtype!r}; expected one of {TYPES}")
    return table[dtype]


def _quant(scale, zero_point, axis: int):
    p = _fb().QuantizationParametersT()
    p.scale = [float(s) for s in np.atleast_1d(scale)]
    zp = np.atleast_1d(zero_point).astype(np.int64)
    if zp.size == 1 and len(p.scale) > 1:
        zp = np.repeat(zp, len(p.scale))
    p.zeroPoint = [int(z) for z in zp]
    p.quantizedDimension = int(axis)
    return p


class Subgraph:
    """Tensors and operators of one subgraph; indices are what operators refer to."""

    def __init__(self, model: "ModelBuilder", name: str, index: int):
        self._m = model
        self.index = index
        self._g = _fb().SubGraphT()
        self._g.name = name
        self._g.tensors, self._g.operators = [], []
        self._g.inputs, self._g.outputs = [], []
        self._names: set[str] = set()
        self.dtypes: list[str] = []
        self.shapes: list[tuple[int, ...]] = []

    def tensor(self, name: str, shape, dtype: str, data=None, *, scale=None, zero_point=0,
               axis: int = 0, raw: bytes | None = None) -> int:
        """Add a tensor; `data` (numpy, cast to `dtype`) or `raw` bytes make it a constant.

        Names are made unique with a numeric suffix (LiteRT does not need unique names, but
        tools and error messages do)."""
        base, n = name, 1
        while name in self._names:
            name, n = f"{base}_{n}", n + 1
        self._names.add(name)
        t = _fb().TensorT()
        t.name, t.shape, t.type = name, [int(d) for d in shape], _tensor_type(dtype)
        if raw is None and data is not None:
            if dtype in ("int4", "int2"):
                raw = pack_subbyte(data, 4 if dtype == "int4" else 2)
            else:
                np_dt = {"f32": "<f4", "i32": "<i4", "i64": "<i8", "i8": "i1", "u8": "u1",
                         "bool": "?", "i16": "<i2"}[dtype]
                arr = np.ascontiguousarray(np.asarray(data).astype(np_dt))
                if arr.size != int(np.prod(shape, dtype=np.int64)):
                    raise ValueError(f"constant {name}: {arr.size} values for shape {tuple(shape)}")
                raw = arr.tobytes()
        t.buffer = self._m.buffer(raw)
        if scale is not None:
            t.quantization = _quant(scale, zero_point, axis)
        self._g.tensors.append(t)
        self.dtypes.append(dtype)
        self.shapes.append(tuple(int(d) for d in shape))
        return len(self._g.tensors) - 1

    def const(self, name: str, values, dtype: str) -> int:
        """A constant tensor shaped like `values`."""
        a = np.asarray(values)
        return self.tensor(name, a.shape, dtype, a)

    def quant_of(self, index: int) -> tuple[list[float], list[int]] | None:
        q = self._g.tensors[index].quantization
        return None if q is None or not q.scale else (list(q.scale), list(q.zeroPoint))

    def op(self, name: str, inputs, outputs, options=None, *, version: int = 1) -> None:
        """Add builtin operator `name` (a BuiltinOperator attribute) with its options object
        (an `...OptionsT`; the union type is derived from the class name)."""
        fb = _fb()
        o = fb.OperatorT()
        o.opcodeIndex = self._m.opcode(name, version)
        o.inputs, o.outputs = [int(i) for i in inputs], [int(i) for i in outputs]
        if options is not None:
            kind = type(options).__name__[:-1]  # "AddOptionsT" -> "AddOptions"
            o.builtinOptionsType = getattr(fb.BuiltinOptions, kind)
            o.builtinOptions = options
        self._g.operators.append(o)

    @property
    def n_ops(self) -> int:
        return len(self._g.operators)

    def set_io(self, inputs, outputs) -> None:
        self._g.inputs, self._g.outputs = [int(i) for i in inputs], [int(i) for i in outputs]


class ModelBuilder:
    """Buffers (0 is the empty sentinel LiteRT expects), operator codes and subgraphs."""

    def __init__(self, description: str = "edgekit"):
        fb = _fb()
        self._model = fb.ModelT()
        self._model.version, self._model.description = 3, description
        self._model.buffers, self._model.operatorCodes, self._model.subgraphs = [fb.BufferT()], [], []
        self._codes: dict[tuple[str, int], int] = {}
        self.const_bytes = 0

    def buffer(self, raw: bytes | None) -> int:
        """Index of a new buffer holding `raw` (0, the shared empty buffer, for None)."""
        if raw is None:
            return 0
        b = _fb().BufferT()
        b.data = np.frombuffer(bytes(raw), dtype=np.uint8)
        self._model.buffers.append(b)
        self.const_bytes += len(raw)
        return len(self._model.buffers) - 1

    def opcode(self, name: str, version: int = 1) -> int:
        key = (name, version)
        if key not in self._codes:
            fb = _fb()
            code = getattr(fb.BuiltinOperator, name)
            c = fb.OperatorCodeT()
            c.builtinCode = code
            # Codes above 127 do not fit the deprecated int8 field; the schema says to put
            # PLACEHOLDER_FOR_GREATER_OP_CODES (127) there.
            c.deprecatedBuiltinCode = min(code, 127)
            c.version = version
            self._model.operatorCodes.append(c)
            self._codes[key] = len(self._model.operatorCodes) - 1
        return self._codes[key]

    def subgraph(self, name: str) -> Subgraph:
        """A new subgraph; the first one created is the entry point LiteRT runs."""
        sg = Subgraph(self, name, len(self._model.subgraphs))
        self._model.subgraphs.append(sg._g)
        return sg

    @property
    def n_subgraphs(self) -> int:
        return len(self._model.subgraphs)

    def finish(self) -> bytes:
        """The serialized .tflite (file identifier TFL3)."""
        return pack_model(self._model)


def pack_model(model) -> bytes:
    """A `ModelT` (object API) serialized as a .tflite (file identifier TFL3)."""
    import flatbuffers

    size = sum(len(b.data) for b in model.buffers if b.data is not None)
    b = flatbuffers.Builder(size + 65536)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
