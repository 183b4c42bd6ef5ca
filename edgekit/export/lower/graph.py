"""Turn one torch.export program into one `ir.Graph` (docs/format.md §2.6).

Every fx value becomes either a `Const` (a torch tensor known at export time: parameters,
buffers, and everything computed from them alone, folded here by running the aten op) or a
`Val` (a named IR tensor computed at run time). Only nodes that reach a graph output are
lowered, so dead code such as the NWC's unused code indices never reaches the file. Ops whose
result depends on their inputs' shapes only (`zeros_like`, `new_ones`, ...) are folded too:
shapes are static.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils import _pytree as pytree

from edgekit import EdgekitError
from edgekit.export import ir

_TORCH_DTYPES = {torch.float32: "f32", torch.int32: "i32", torch.int8: "i8", torch.uint8: "u8",
                 torch.int64: "i64", torch.bool: "u8"}
_SHAPE_ONLY = {"aten.zeros_like.default", "aten.ones_like.default", "aten.full_like.default",
               "aten.empty_like.default", "aten.new_ones.default", "aten.new_zeros.default",
               "aten.new_full.default", "aten.new_empty.default", "aten.zeros.default",
               "aten.ones.default", "aten.full.default", "aten.scalar_tensor.default",
               "aten.arange.default", "aten.arange.start", "aten.arange.start_step"}


@dataclass(frozen=True)
class Val:
    """A run-time tensor of the graph being built."""

    name: str
    shape: tuple
    dtype: str


@dataclass(frozen=True)
class Const:
    """A tensor known at export time."""

    value: torch.Tensor


def ir_dtype(t: torch.dtype, where: str = "") -> str:
    if t not in _TORCH_DTYPES:
        raise EdgekitError(f"unsupported dtype {t} at {where or '<model>'}")
    return _TORCH_DTYPES[t]


class Builder:
    """Accumulates the tensors (shared by all graphs of a model) and one graph's ops."""

    def __init__(self, tensors: dict[str, ir.Tensor], graph: str, layers: list):
        self.tensors = tensors
        self.graph = graph
        self.ops: list[ir.Op] = []
        self.layers = layers          # per-layer report rows, shared by the graphs
        self.path = ""                # module path of the node being lowered
        self.renamed: dict[str, str] = {}   # activation -> its public name (see `rename`)
        self.published: set[str] = set()    # graph outputs and next-state names given out
        self._n = 0

    # -- tensors -------------------------------------------------------------------------
    def const(self, value, name: str | None = None) -> Val:
        """A constant tensor (deduplicated by content unless `name` is given)."""
        if isinstance(value, torch.Tensor):
            t = value.detach()
            dt = ir_dtype(t.dtype, self.path)
            arr = t.to(torch.uint8).numpy() if t.dtype == torch.bool else t.numpy()
        else:
            arr = np.asarray(value)
            dt = next(k for k, v in ir.NP_DTYPES.items() if v == arr.dtype)
        arr = np.ascontiguousarray(arr, dtype=ir.NP_DTYPES[dt])
        if name is None:
            digest = hashlib.sha1(arr.tobytes() + str((dt, arr.shape)).encode()).hexdigest()[:12]
            name = f"const.{digest}"
            if name in self.tensors:
                return self._val(name)
        elif name in self.tensors:
            return self._val(name)
        self.tensors[name] = ir.Tensor(name, dt, tuple(arr.shape), "const", arr)
        return self._val(name)

    def packed(self, name: str, data: bytes, n: int, k: int) -> Val:
        """A packed (§1 serialized) weight constant of shape (N, K)."""
        if name not in self.tensors:
            self.tensors[name] = ir.Tensor(name, "packed", (n, k), "const", data)
        return self._val(name)

    def tensor(self, name: str, shape, dtype: str, kind: str) -> Val:
        if name in self.tensors:
            raise EdgekitError(f"duplicate tensor name {name!r} in graph {self.graph}")
        self.tensors[name] = ir.Tensor(name, dtype, tuple(int(d) for d in shape), kind)
        return self._val(name)

    def rename(self, old: str, new: str, kind: str) -> Val:
        """Give an activation of this graph its public name (graph output, next state)."""
        if new in self.tensors:
            raise EdgekitError(f"duplicate tensor name {new!r} in graph {self.graph}")
        t = self.tensors.pop(old)
        t.name, t.kind = new, kind
        self.renamed[old] = new
        self.tensors[new] = t
        for op in self.ops:
            op.inputs = [new if i == old else i for i in op.inputs]
            op.outputs = [new if o == old else o for o in op.outputs]
        return self._val(new)

    def _val(self, name: str) -> Val:
        t = self.tensors[name]
        return Val(name, t.shape, t.dtype)

    def val(self, v) -> Val | None:
        """A Val for an op operand (a Const becomes a constant tensor; None stays absent)."""
        if v is None or isinstance(v, Val):
            return v
        if isinstance(v, Const):
            return self.const(v.value)
        if isinstance(v, torch.Tensor):
            return self.const(v)
        if isinstance(v, (int, float, bool)):
            return self.const(torch.tensor(v, dtype=torch.float32))
        raise EdgekitError(f"unsupported operand {type(v).__name__} at {self.path}")

    def report_float(self, path: str, type_: str, shape: tuple) -> None:
        """Record a layer the recipe left float: it is stored and run as fp32, not silently."""
        same = [r for r in self.layers if r["name"].split(" ")[0] == path]
        if any(r["shape"] == list(shape) for r in same):
            return   # the same layer called again (streaming step, shared weights)
        # one module can run several float matmuls (nn.MultiheadAttention: in_proj, out_proj):
        # each gets a row, the later ones named by their shape
        name = f"{path} ({'x'.join(map(str, shape))})" if same else path
        self.layers.append({"name": name, "type": type_, "shape": list(shape), "bits": 32,
                            "quantizer": "fp32", "sparsity": 0.0,
                            "bytes": 4 * int(np.prod(shape))})

    # -- ops -----------------------------------------------------------------------------
    def op(self, type_: str, inputs, outs, ints=(), floats=()) -> list[Val]:
        """Append an op; `outs` lists (shape, dtype) of its outputs; returns their Vals."""
        ins = [None if i is None else self.val(i).name for i in inputs]
        results = []
        for shape, dtype in outs:
            self._n += 1
            results.append(self.tensor(f"{self.graph}/{type_}_{self._n}", shape, dtype,
                                       "activation"))
        self.ops.append(ir.Op(type_, self.path, ins, [r.name for r in results],
                              [int(i) for i in ints], [float(f) for f in floats]))
        return results

    def op1(self, type_: str, inputs, shape, dtype: str = "f32", ints=(), floats=()) -> Val:
        return self.op(type_, inputs, [(shape, dtype)], ints, floats)[0]


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "<model>"
    path = list(stack.values())[-1][0]
    path = path[2:] if path.startswith("m.") else ("" if path == "m" else path)
    return path or "<model>"


def _needed(outputs) -> set:
    seen, todo = set(), list(outputs)
    while todo:
        n = todo.pop()
        if n in seen or not isinstance(n, torch.fx.Node):
            continue
        seen.add(n)
        todo.extend(n.all_input_nodes)
    return seen


def _materialize(v):
    """Stand-in torch values for folding: Val -> zeros of its shape (only shapes matter)."""
    if isinstance(v, Const):
        return v.value
    if isinstance(v, Val):
        dt = {k: t for t, k in _TORCH_DTYPES.items() if t != torch.bool}[v.dtype]
        return torch.zeros(v.shape, dtype=dt)
    return v


def _has_val(x) -> bool:
    return any(isinstance(v, Val) for v in pytree.tree_leaves(x))


def lower_program(ep, b: Builder, inputs: dict, handlers: dict) -> list:
    """Lower `ep` into `b`: `inputs` maps each user-input position (flattened) to its Val.

    Returns the flattened user outputs as Vals/Consts, in the program's output order.
    """
    sig = ep.graph_signature
    state = {**ep.state_dict, **ep.constants}
    env: dict = {}
    user_pos = 0
    for spec in sig.input_specs:
        node_name = spec.arg.name
        if spec.kind.name == "USER_INPUT":
            env[node_name] = inputs[user_pos]
            user_pos += 1
        else:
            env[node_name] = Const(state[spec.target])
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    outs = out_node.args[0]
    needed = _needed(outs)
    for node in ep.graph.nodes:
        if node.op != "call_function" or node not in needed:
            continue
        b.path = _module_path(node)
        args, kwargs = pytree.tree_map(
            lambda a: env[a.name] if isinstance(a, torch.fx.Node) else a, (node.args, node.kwargs))
        env[node.name] = _lower_node(b, node, args, kwargs, handlers)
    return [env[o.name] if isinstance(o, torch.fx.Node) else Const(torch.tensor(o))
            for o in outs]


def _lower_node(b: Builder, node, args, kwargs, handlers):
    target = node.target
    if target is operator.getitem:
        return args[0][args[1]]
    key = str(target)
    if not key.startswith("edgekit.") and (not _has_val((args, kwargs)) or key in _SHAPE_ONLY):
        a, k = pytree.tree_map(_materialize, (args, kwargs))
        out = target(*a, **k)
        return pytree.tree_map(lambda t: Const(t) if isinstance(t, torch.Tensor) else t, out)
    fn = handlers.get(key)
    if fn is None:
        raise EdgekitError(f"unsupported op {key} at {b.path}")
    return fn(b, node, *args, **kwargs)
