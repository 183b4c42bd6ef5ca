"""A small ONNX graph builder: unique names, deduplicated constants, value infos.

Names come from a per-graph counter in op order (plus the IR's names where the IR names a
value), so the same `ir.Model` always yields the same names and therefore the same bytes.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# IR dtype -> ONNX element type (docs/format.md §2.2).
ELEM = {"f32": TensorProto.FLOAT, "i32": TensorProto.INT32, "i8": TensorProto.INT8,
        "u8": TensorProto.UINT8, "i64": TensorProto.INT64}


class Builder:
    """Collects nodes and initializers of one ONNX graph (or of a Scan body)."""

    def __init__(self, prefix: str = "", opset: int | None = None):
        self.prefix, self.opset = prefix, opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self._consts: dict[tuple, str] = {}
        self._n = 0

    def tmp(self, hint: str = "") -> str:
        """A fresh tensor name that cannot clash with an IR name (IR names have no '#')."""
        self._n += 1
        return f"{self.prefix}{hint}#{self._n}"

    def node(self, op: str, inputs: list[str], outputs: list[str] | int = 1, hint: str = "",
             domain: str = "", **attrs) -> list[str]:
        """Append a node; `outputs` is a list of names or a count of fresh names.

        Intermediate values and the nodes that only produce them get short names ("#12"):
        on a small model long module paths on every edge cost more bytes than a 4-bit layer.
        The node that produces an IR tensor is named after the IR op (its module path).
        Attributes equal to the schema's default are left out (same meaning, fewer bytes)."""
        if isinstance(outputs, int):
            outputs = [self.tmp() for _ in range(outputs)]
        self._n += 1
        named = hint and any("#" not in o for o in outputs)
        name = f"{self.prefix}{hint if named else ''}#{self._n}"
        node = helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs)
        defaults = _schema_defaults(op, domain, self.opset)
        keep = [a for a in node.attribute
                if a.SerializeToString() != defaults.get(a.name, b"")]
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)
        self.nodes.append(node)
        return outputs

    def one(self, op: str, inputs: list[str], hint: str = "", **attrs) -> str:
        """Append a single-output node and return its output name."""
        return self.node(op, inputs, 1, hint, **attrs)[0]

    def add_init(self, tensor: onnx.TensorProto) -> str:
        """Add a prepared initializer (its name must be unique)."""
        if tensor.name in self.inits:
            raise ValueError(f"duplicate initializer {tensor.name!r}")
        self.inits[tensor.name] = tensor
        return tensor.name

    def const(self, value, dtype=np.float32, hint: str = "") -> str:
        """A constant initializer; small constants with equal value share one name.

        `hint` (an IR name) only for float weights, where it costs nothing next to the data;
        scales, grids and shapes stay "#<n>" (on a small 4-bit model, names add up)."""
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        key = None
        if arr.size <= 16:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.tmp(hint)
        self.inits[name] = numpy_helper.from_array(arr, name)
        if key is not None:
            self._consts[key] = name
        return name

    def named_const(self, name: str, arr: np.ndarray) -> str:
        """An initializer under a given name (IR constants keep their IR names)."""
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(arr), name)
        return name


@functools.lru_cache(maxsize=None)
def _schema_defaults(op: str, domain: str, opset: int | None) -> dict[str, bytes]:
    """Attribute name -> serialized default value of `op` at `opset` ({} when unknown)."""
    if domain or opset is None:
        return {}
    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:
        return {}
    return {k: a.default_value.SerializeToString() for k, a in schema.attributes.items()
            if a.default_value.name == k}


def value_info(name: str, dtype: str, shape) -> onnx.ValueInfoProto:
    """A typed, fully static value info for a graph input or output."""
    if dtype not in ELEM:
        raise ValueError(f"tensor {name!r}: dtype {dtype!r} cannot be a graph input/output")
    return helper.make_tensor_value_info(name, ELEM[dtype], list(shape))
