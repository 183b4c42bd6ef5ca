"""Lowering: a compressed PyTorch model -> `edgekit.export.ir.Model` (docs/export.md).

    from edgekit.export.lower import lower, zoo_graphs
    model_ir = lower(compressed, zoo_graphs("conformer", compressed), meta={...})

Capture is torch.export with the quantized layers kept opaque (`capture`); each aten op is
turned into §2.6 ops (`aten`), each quantized layer into its q-op with the packed weight
(`layers`); `graph` holds the builder and the fx walk; `models` says which graphs a model has.
"""

from __future__ import annotations

from torch import nn
from torch.utils import _pytree as pytree

from edgekit import EdgekitError
from edgekit.export import ir
from edgekit.export.lower import aten, capture, layers
from edgekit.export.lower.graph import Builder, Const, Val, ir_dtype, lower_program
from edgekit.export.lower.models import GraphSpec, module_graphs, zoo_graphs

__all__ = ["GraphSpec", "lower", "lower_graph", "module_graphs", "zoo_graphs"]

HANDLERS = {**aten.HANDLERS, **layers.HANDLERS}


def lower(model: nn.Module, graphs: list[GraphSpec], meta: dict | None = None) -> ir.Model:
    """Lower each graph of `model` into one `ir.Model` (tensors shared by name).

    META gets `streaming` from the graph that streams and `layers`: one row per stored weight
    (quantized or left float). Raises EdgekitError for an op outside docs/format.md §2.6.
    """
    tensors: dict[str, ir.Tensor] = {}
    rows: list[dict] = []
    out = ir.Model(tensors, {}, dict(meta or {}))
    model.eval()
    for spec in graphs:
        out.graphs[spec.name] = lower_graph(model, spec, tensors, rows)
        if spec.streaming:
            out.meta["streaming"] = dict(spec.streaming)
    out.meta.setdefault("streaming", None)
    out.meta["layers"] = rows
    return out


def lower_graph(model: nn.Module, spec: GraphSpec, tensors: dict, rows: list) -> ir.Graph:
    """Capture `model.<spec.method>(*spec.args)` and lower it into tensors/rows."""
    try:
        ep = capture.export(model, spec.method, spec.args)
    except EdgekitError:
        raise
    except Exception as exc:  # torch.export's own failures: name the graph, keep one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgekitError(f"cannot capture {spec.name} ({spec.method}): {msg}") from None
    b = Builder(tensors, spec.name, rows)
    inputs, states = [], []
    for i, arg in enumerate(spec.args):
        if i == spec.state_arg:
            for key, t in arg.items():
                name = spec.state_prefix + key
                inputs.append(b.tensor(name, t.shape, ir_dtype(t.dtype, name), "state"))
                states.append(key)
        else:
            inputs.append(b.tensor(spec.input_names[i], arg.shape, ir_dtype(arg.dtype), "input"))
    flat = lower_program(ep, b, inputs, HANDLERS)
    tree = pytree.tree_unflatten(flat, ep.call_spec.out_spec)
    if not isinstance(tree, tuple):
        tree = (tree,)
    b.path = spec.name
    outputs, pairs = [], []
    for i, v in enumerate(tree):
        if i == spec.state_out:
            if sorted(v) != sorted(states):
                raise EdgekitError(f"{spec.name}: state keys out {sorted(v)} != in {states}")
            for key in states:
                nxt = _publish(b, v[key], f"{spec.name}/{spec.state_prefix}{key}.next",
                               "activation")
                pairs.append((spec.state_prefix + key, nxt.name))
        else:
            outputs.append(_publish(b, v, spec.output_names[i], "output").name)
    graph_inputs = [t.name for t in inputs if b.tensors[t.name].kind == "input"]
    return ir.Graph(spec.name, b.ops, graph_inputs, outputs, pairs)


def _publish(b: Builder, v, name: str, kind: str) -> Val:
    """Name `v` as a graph output / next state, copying when it cannot be renamed in place
    (a constant, an input or state, or a value already published)."""
    if isinstance(v, Const) or not isinstance(v, Val):
        v = b.val(v)
    if v.name in b.renamed:   # already published under another name: copy that
        v = Val(b.renamed[v.name], v.shape, v.dtype)
    t = b.tensors[v.name]
    if t.kind == "activation" and v.name not in b.published and any(
            v.name in op.outputs for op in b.ops):
        out = b.rename(v.name, name, kind)
    else:
        out = b.tensor(name, v.shape, v.dtype, kind)
        b.ops.append(ir.Op("copy", b.path, [v.name], [name]))
    b.published.add(name)
    return out
