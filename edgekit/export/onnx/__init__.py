"""ONNX exporter: `ir.Model` -> one ONNX file per graph, weights at their true bit width.

    from edgekit.export import onnx as ek_onnx
    report = ek_onnx.export(model, "out/model.onnx", flavor="qdq")

See docs/export-onnx.md for the op mapping, file naming, state naming and the size report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgekit import __version__
from edgekit._io import atomic_write_bytes
from edgekit.export import ir
from edgekit.export.onnx import ops, weights
from edgekit.export.onnx.builder import Builder, value_info
from edgekit.kernels import packing

FLAVORS = ("qdq", "ort")
MIN_OPSET, MAX_OPSET = 21, 25     # 21: INT4/UINT4 + blocked scales; 25: INT2/UINT2
MAX_IR_VERSION = 13               # onnxruntime 1.31 rejects IR 14 (what onnx 1.23 stamps)
STATE_SUFFIX = ":next"            # ONNX output carrying a state's next value: "<state>:next"
_PROTO_LIMIT = 2**31 - 1          # a single protobuf cannot exceed 2 GiB


class Emitter:
    """Translates one IR graph; shared lookups for the op functions in `ops`/`lstm`."""

    def __init__(self, model: ir.Model, opset: int, flavor: str, exact_act: bool):
        self.model, self.opset, self.flavor, self.exact_act = model, opset, flavor, exact_act
        # `b` is where nodes go (a Scan body switches it)
        self.b = self.outer = Builder(opset=opset)
        self.layers: list[dict] = []
        self._cache: dict = {}

    def tensor(self, name) -> ir.Tensor:
        t = self.model.tensors.get(name) if isinstance(name, str) else None
        if t is None:
            raise ValueError(f"unknown tensor {name!r}")
        return t

    def array(self, name: str) -> np.ndarray:
        """The data of a non-packed constant, checked against its declared dtype and shape."""
        t = self.tensor(name)
        if t.kind != "const" or t.dtype == "packed" or not isinstance(t.data, np.ndarray):
            raise ValueError(f"tensor {name!r} must be a float/int constant with array data")
        if t.data.dtype != ir.NP_DTYPES[t.dtype] or tuple(t.data.shape) != tuple(t.shape):
            raise ValueError(f"tensor {name!r}: data {t.data.dtype}{t.data.shape} does not match "
                             f"declared {t.dtype}{tuple(t.shape)}")
        return t.data

    def value(self, name) -> str:
        """ONNX name of an IR operand (constants become initializers on first use)."""
        t = self.tensor(name)
        if t.kind == "const":
            if t.dtype == "packed":
                raise ValueError(f"packed tensor {name!r} used where a float tensor is expected")
            return self.outer.named_const(name, self.array(name))
        return name

    def cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def weight(self, name: str, op: ir.Op, kn: bool, shape: tuple | None = None) -> str:
        """The float weight of packed tensor `name`: (K, N) if `kn`, else (N, K) or `shape`."""
        return self.cached(("w", name, kn, shape), lambda: self._weight(name, op, kn, shape))

    def decoded(self, name: str) -> weights.Decoded:
        t = self.tensor(name)
        if t.dtype != "packed" or t.kind != "const":
            raise ValueError(f"{name!r} must be a packed constant")
        w = self.cached(("dec", name), lambda: weights.decode(t.data))
        if (w.N, w.K) != tuple(t.shape):
            raise ValueError(f"packed tensor {name!r}: buffer is {w.N}x{w.K}, declared {t.shape}")
        return w

    def _weight(self, name, op, kn, shape):
        # Weights live in the main graph even when a Scan body uses them: dequantized once
        # per call, not once per time step.
        y, stored = weights.dequantized(self.outer, self.decoded(name), self.opset, kn, name,
                                        shape)
        self.record(op, name, stored)
        return y

    def record(self, op: ir.Op, name: str, stored: weights.Stored) -> None:
        w = self.decoded(name)
        self.layers.append({"layer": op.name, "op": op.type, "tensor": name, "shape": [w.N, w.K],
                            "bits": stored.bits, "storage": stored.storage,
                            "container_bits": stored.container_bits,
                            "onnx_bytes": stored.onnx_bytes, "packed_bytes": stored.packed_bytes,
                            "widened": stored.widened})

    def qmatmul(self, x: str, w: str, op: ir.Op) -> str:
        """x (..., K) times packed weight `w` (N, K) transposed: MatMulNBits for flavor "ort"
        where it applies, else MatMul with the dequantized (K, N) weight."""
        if self.flavor == "ort":
            from edgekit.export.onnx import ort_flavor

            y = ort_flavor.matmulnbits(self, op, x, w)
            if y is not None:
                return y
        return self.b.one("MatMul", [x, self.weight(w, op, kn=True)], op.name)


def _check_op(op: ir.Op) -> None:
    spec = ir.OPS.get(op.type) if isinstance(op, ir.Op) else None
    if spec is None:
        raise ValueError(f"unsupported op {getattr(op, 'type', op)!r} at "
                         f"{getattr(op, 'name', '?')}")
    n_in = len(op.inputs)
    if n_in < spec.min_in or (spec.max_in >= 0 and n_in > spec.max_in) \
            or len(op.outputs) != spec.n_out:
        raise ValueError(f"{op.name}: {op.type} has {n_in} inputs / {len(op.outputs)} outputs")
    if any(v is None for i, v in enumerate(op.inputs) if i not in spec.optional):
        raise ValueError(f"{op.name}: {op.type} is missing a required input")
    if (spec.n_ints >= 0 and len(op.ints) != spec.n_ints) or len(op.floats) != spec.n_floats:
        raise ValueError(f"{op.name}: {op.type} takes {spec.n_ints} ints and {spec.n_floats} "
                         f"floats, got {len(op.ints)} and {len(op.floats)}")


def _graph_proto(model: ir.Model, graph: ir.Graph, opset: int, flavor: str, exact_act: bool):
    e = Emitter(model, opset, flavor, exact_act)
    for op in graph.ops:
        _check_op(op)
        try:
            ops.OPS[op.type](e, op)
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{op.name}: malformed {op.type} op ({exc})") from None
    b = e.b
    states = []
    for s, s_next in graph.states:
        out = s + STATE_SUFFIX
        b.node("Identity", [s_next], [out], f"state/{s}")
        states.append({"input": s, "output": out})

    def decl(n, name=None):
        return value_info(name or n, e.tensor(n).dtype, e.tensor(n).shape)

    inputs = [decl(n) for n in graph.inputs] + [decl(s) for s, _ in graph.states]
    outputs = [decl(n) for n in graph.outputs] + [decl(s, s + STATE_SUFFIX)
                                                  for s, _ in graph.states]
    g = helper.make_graph(b.nodes, graph.name, inputs, outputs, list(b.inits.values()))
    return g, e.layers, states


def _meta_json(meta: dict) -> str:
    """The META keys a runner needs; the per-layer table and recipe text stay in the EKM and
    export.json (on a small model they would outweigh a 4-bit layer)."""
    keep = {k: meta[k] for k in ("edgekit_version", "source", "streaming") if k in meta}
    recipe = meta.get("recipe")
    if isinstance(recipe, dict) and "name" in recipe:
        keep["recipe"] = recipe["name"]
    return json.dumps(keep, sort_keys=True, default=str)


def _default_opset(model: ir.Model) -> int:
    """21 unless some packed weight has <= 2-bit codes (INT2/UINT2 need opset 25)."""
    for t in model.tensors.values():
        if t.dtype == "packed" and isinstance(t.data, (bytes, bytearray, memoryview)) \
                and len(t.data) >= 64:
            if packing.parse_header(bytes(t.data))["bits"] <= 2:
                return 25
    return MIN_OPSET


def graph_paths(path, graph_names) -> dict[str, Path]:
    """One file per graph: `path` itself for a single graph, else `<stem>.<graph><suffix>`
    (out/model.onnx -> out/model.encoder.onnx, out/model.predictor.onnx, ...)."""
    path = Path(path)
    names = list(graph_names)
    if len(names) == 1:
        return {names[0]: path}
    suffix = path.suffix or ".onnx"
    return {n: path.with_name(f"{path.stem if path.suffix else path.name}.{n}{suffix}")
            for n in names}


def _check_args(model, path, flavor, opset):
    if not isinstance(model, ir.Model) or not model.graphs:
        raise ValueError("model must be an edgekit.export.ir.Model with at least one graph")
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"path must be a file path, got {path!r}")
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {flavor!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)
                              or not MIN_OPSET <= opset <= MAX_OPSET):
        raise ValueError(f"opset must be an int in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}")


def build(model: ir.Model, flavor: str = "qdq", opset: int | None = None,
          exact_act: bool = False) -> tuple[dict[str, onnx.ModelProto], dict]:
    """The ONNX models (graph name -> ModelProto, checked) and the report, without writing."""
    _check_args(model, "x.onnx", flavor, opset)
    opset = opset or _default_opset(model)
    protos, layers, states = {}, [], {}
    for name, graph in model.graphs.items():
        g, lay, st = _graph_proto(model, graph, opset, flavor, exact_act)
        imports = [helper.make_opsetid("", opset)]
        if any(n.domain == "com.microsoft" for n in g.node):
            imports.append(helper.make_opsetid("com.microsoft", 1))
        m = helper.make_model(g, opset_imports=imports, producer_name="edgekit",
                              producer_version=__version__)
        m.ir_version = min(MAX_IR_VERSION, helper.find_min_ir_version_for(imports[:1]))
        helper.set_model_props(m, {"edgekit.graph": name,
                                   "edgekit.states": json.dumps(st),
                                   "edgekit.meta": _meta_json(model.meta)})
        if m.ByteSize() > _PROTO_LIMIT:
            raise ValueError(f"graph {name!r} is over 2 GiB: external data is not supported")
        try:
            onnx.checker.check_model(m, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            # an IR whose declared shapes/dtypes disagree with its ops (or a bug here)
            raise ValueError(f"graph {name!r}: ONNX checker: {str(exc).splitlines()[0]}") from None
        protos[name] = m
        layers += [dict(row, graph=name) for row in lay]
        states[name] = st
    return protos, {"flavor": flavor, "opset": opset, "layers": layers, "states": states}


def export(model: ir.Model, path, flavor: str = "qdq", opset: int | None = None,
           exact_act: bool = False) -> dict:
    """Write `model` as ONNX (one file per graph, see `graph_paths`) and return the report.

    flavor "qdq": standard ops only (DequantizeLinear / Gather); "ort": 2/4/8-bit uniform
    `qlinear`s as com.microsoft MatMulNBits where they fit, QDQ elsewhere. `opset` 21..25
    (default: 21, or 25 when a weight has <= 2-bit codes). `exact_act`: round q-op inputs
    with Mul/Round/Clip like the IR instead of QuantizeLinear (see docs/export-onnx.md).

    Report: file bytes per graph and in total, theoretical bytes (§1.8 packed bytes + other
    constants, i.e. the EKM payload), per packed weight how it is stored and whether it was
    widened, and the state input/output names. Raises ValueError on a bad model or argument.
    """
    _check_args(model, path, flavor, opset)
    protos, report = build(model, flavor, opset, exact_act)
    files, total = {}, 0
    for name, p in graph_paths(path, protos).items():
        data = protos[name].SerializeToString()
        atomic_write_bytes(p, data)
        files[name] = {"path": str(p), "bytes": len(data)}
        total += len(data)
    packed, consts = ir.payload_bytes(model)
    widened = sorted({row["layer"] for row in report["layers"] if row["widened"]})
    return {"format": "onnx", "files": files, "file_bytes": total,
            "theoretical_bytes": packed + consts, "packed_bytes": packed,
            "const_bytes": consts, "widened_layers": widened, **report}
