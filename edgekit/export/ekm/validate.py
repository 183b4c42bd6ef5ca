"""The model-level rules of docs/format.md §2 on an `ir.Model`.

The writer runs them before writing and the reader after parsing, so a file that one accepts
the other accepts too. Every failure is a ValueError whose one-line message names the tensor,
op or graph at fault.
"""

from __future__ import annotations

import json
import math

import numpy as np

from edgekit.export import ir, shapes
from edgekit.export.ekm.packed_check import check_packed


def _check_name(name, what: str) -> None:
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"{what} name must be a non-empty string without NUL, got {name!r}")


def check_tensor(t: ir.Tensor) -> None:
    """dtype, kind, shape and data of one tensor (§2.2)."""
    _check_name(t.name, "tensor")
    where = f"tensor {t.name!r}"
    if t.dtype not in ir.DTYPES:
        raise ValueError(f"{where}: unknown dtype {t.dtype!r}")
    if t.kind not in ir.KINDS:
        raise ValueError(f"{where}: unknown kind {t.kind!r}")
    shape = t.shape
    if not isinstance(shape, tuple) or len(shape) > ir.MAX_RANK \
            or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1
                       for d in shape):
        raise ValueError(f"{where}: shape must be a tuple of <= {ir.MAX_RANK} ints >= 1, got {shape!r}")
    if math.prod(shape) > shapes.MAX_NUMEL:
        raise ValueError(f"{where}: shape {list(shape)} has more than 2^31 elements")
    if t.kind != "const":
        if t.data is not None:
            raise ValueError(f"{where}: only constants carry data (kind is {t.kind})")
        if t.dtype == "packed":
            raise ValueError(f"{where}: packed tensors must be constants")
        return
    if t.data is None:
        raise ValueError(f"{where}: constant without data")
    if t.dtype == "packed":
        if not isinstance(t.data, (bytes, memoryview)):
            raise ValueError(f"{where}: packed data must be bytes (PackedWeights.to_bytes())")
        if len(shape) != 2:
            raise ValueError(f"{where}: packed tensors have rank 2 (N, K), got {list(shape)}")
        try:
            s = check_packed(t.data)
        except ValueError as exc:
            raise ValueError(f"{where}: packed weights: {exc}") from None
        if (s.N, s.K) != tuple(shape):
            raise ValueError(f"{where}: shape {list(shape)} != packed header (N, K) = ({s.N}, {s.K})")
        return
    a = t.data
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(ir.NP_DTYPES[t.dtype]).newbyteorder("<") \
            or a.shape != tuple(shape):
        got = f"{a.dtype} {list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{where}: data must be a {t.dtype} array of shape {list(shape)}, got {got}")


def _as_float32(values) -> list[float]:
    """The attribute values as FLOATS will hold them, so the writer validates what the reader
    will see (1e300 is finite in Python but inf in float32)."""
    with np.errstate(over="ignore"):
        return [float(v) for v in np.asarray(values, np.float64).astype(np.float32)]


def _check_graph(g: ir.Graph, tensors: dict, producer: dict) -> None:
    where = f"graph {g.name!r}"
    if not g.ops:
        raise ValueError(f"{where}: has no ops")

    def tensor(name, what, kinds):
        t = tensors.get(name)
        if t is None:
            raise ValueError(f"{where}: {what} refers to unknown tensor {name!r}")
        if t.kind not in kinds:
            raise ValueError(f"{where}: {what} {name!r} must be of kind {'/'.join(kinds)}, got {t.kind}")
        return t

    avail = set()
    for name in g.inputs:
        tensor(name, "input", ("input",))
        if name in avail:
            raise ValueError(f"{where}: input {name!r} is listed twice")
        avail.add(name)
    for pair in g.states:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"{where}: state entries are (state, next) pairs, got {pair!r}")
        s = tensor(pair[0], "state", ("state",))
        nxt = tensor(pair[1], "next state", ("activation", "output"))
        if pair[0] in avail:
            raise ValueError(f"{where}: state {pair[0]!r} is listed twice")
        if (s.dtype, s.shape) != (nxt.dtype, nxt.shape):
            raise ValueError(f"{where}: state {s.name!r} {s.dtype} {list(s.shape)} != its next value "
                             f"{nxt.name!r} {nxt.dtype} {list(nxt.shape)}")
        avail.add(pair[0])
    for i, op in enumerate(g.ops):
        at = f"{where}, op {i} ({op.type} {op.name!r})"
        if not isinstance(op.name, str) or "\0" in op.name:
            raise ValueError(f"{at}: op name must be a string without NUL")
        try:
            shapes.check_arity(op.type, len(op.inputs), len(op.outputs), len(op.ints), len(op.floats))
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in op.ints):
            raise ValueError(f"{at}: int attributes must be integers, got {list(op.ints)!r}")
        if not all(isinstance(v, (int, float, np.integer, np.floating)) for v in op.floats):
            raise ValueError(f"{at}: float attributes must be numbers, got {list(op.floats)!r}")
        sigs = []
        for j, name in enumerate(op.inputs):
            if name is None:
                sigs.append(None)
                continue
            t = tensors.get(name)
            if t is None:
                raise ValueError(f"{at}: input {j} is unknown tensor {name!r}")
            if t.kind != "const" and name not in avail:
                raise ValueError(f"{at}: input {j} {name!r} is not a constant, graph input, state "
                                 "or output of an earlier op of this graph")
            sigs.append((t.dtype, tuple(t.shape)))
        try:
            outs = shapes.infer(op.type, sigs, op.ints, _as_float32(op.floats))
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
        for j, (name, (dt, shape)) in enumerate(zip(op.outputs, outs)):
            t = tensor(name, f"op {i} output {j}", ("activation", "output"))
            if name in producer:
                raise ValueError(f"{at}: output {name!r} is already produced by {producer[name]}")
            producer[name] = at
            if (t.dtype, tuple(t.shape)) != (dt, shape):
                raise ValueError(f"{at}: output {j} {name!r} is stored as {t.dtype} {list(t.shape)} "
                                 f"but the op computes {dt} {list(shape)}")
            avail.add(name)
    for i, name in enumerate(g.outputs):
        tensor(name, "output", ("output",))
        if name in g.outputs[:i]:
            raise ValueError(f"{where}: output {name!r} is listed twice")
        if name not in avail:
            raise ValueError(f"{where}: output {name!r} is not produced by this graph")
    for s, nxt in g.states:
        if nxt not in avail:
            raise ValueError(f"{where}: next value {nxt!r} of state {s!r} is not produced by this graph")


def check_model(model: ir.Model) -> None:
    """Raise ValueError (one line) unless `model` satisfies every rule of docs/format.md §2."""
    if not isinstance(model, ir.Model):
        raise ValueError(f"expected an ir.Model, got {type(model).__name__}")
    for key, t in model.tensors.items():
        if not isinstance(t, ir.Tensor) or t.name != key:
            raise ValueError(f"tensor entry {key!r} must be an ir.Tensor named {key!r}")
        check_tensor(t)
    if not model.graphs:
        raise ValueError("the model has no graphs")
    producer: dict[str, str] = {}
    for key, g in model.graphs.items():
        if not isinstance(g, ir.Graph) or g.name != key:
            raise ValueError(f"graph entry {key!r} must be an ir.Graph named {key!r}")
        _check_name(g.name, "graph")
        _check_graph(g, model.tensors, producer)
    for t in model.tensors.values():
        if t.kind in ("activation", "output") and t.name not in producer:
            raise ValueError(f"tensor {t.name!r} ({t.kind}) is not produced by any op")
    if not isinstance(model.meta, dict):
        raise ValueError(f"meta must be a dict (a JSON object), got {type(model.meta).__name__}")
    try:
        json.dumps(model.meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta is not JSON-serializable: {exc}") from None
