"""Resolver agreement op by op: each integer op of a .tflite run alone under XNNPACK and
BUILTIN_REF on the same int8 inputs.

Whole-model outputs cannot show the ±1 LSB bound issue 8 asks for: a 1-LSB difference of one
op feeds the next, and the ops after it (LayerNorm, softmax, LSTM recurrences) amplify it. So
every operator with an int8 (or int16) output is cut out into a one-op model whose non-constant inputs
are graph inputs, fed the values the reference run produced, and both resolvers' outputs are
compared in int8 steps. Only the main subgraph is covered: ops inside WHILE bodies (the
LSTM loop) are not cut out.
"""

from __future__ import annotations

import copy

import numpy as np

from edgekit.export.tflite.builder import _fb, pack_model
from edgekit.export.tflite.fullint import _Model, load
from edgekit.export.tflite.runner import interpreter


def _one_op(model, op) -> tuple[bytes, list[int], list[int]]:
    """`model` reduced to operator `op` of its first subgraph, with only that op's tensors and
    buffers (packing the whole model once per op would dominate the check). Returns the file
    and the original tensor indices of its inputs and outputs, in the one-op graph's order."""
    fb = _fb()
    sg = model.subgraphs[0]
    used = [int(i) for i in list(op.inputs) + list(op.outputs) if i >= 0]
    used = list(dict.fromkeys(used))
    new = {old: k for k, old in enumerate(used)}
    m, one = copy.copy(model), fb.SubGraphT()
    m.buffers = [fb.BufferT()]
    one.tensors = []
    for old in used:
        t = copy.copy(sg.tensors[old])
        buf = model.buffers[t.buffer]
        if buf.data is not None and len(buf.data):
            m.buffers.append(buf)
            t.buffer = len(m.buffers) - 1
        else:
            t.buffer = 0
        one.tensors.append(t)
    const = {k for k, t in enumerate(one.tensors) if t.buffer}
    o = copy.copy(op)
    o.inputs = [new[int(i)] if i >= 0 else -1 for i in op.inputs]
    o.outputs = [new[int(i)] for i in op.outputs]
    one.operators = [o]
    one.inputs = [i for i in o.inputs if i >= 0 and i not in const]
    one.outputs = list(o.outputs)
    m.subgraphs = [one]
    return pack_model(m), [used[i] for i in one.inputs], [used[i] for i in one.outputs]


def per_op_max_lsb(data: bytes, feeds: list[dict]) -> dict[str, float]:
    """Per int8- or int16-output operator ("<index>:<builtin op>"), the largest |XNNPACK −
    reference| in int8 steps (an int16 step is 1/256 of one) over `feeds` (lists of input
    arrays in the file's input order)."""
    fb = _fb()
    model = load(data)
    sg = model.subgraphs[0]
    names = _Model(model)   # op names
    ref = interpreter(data, "ref", preserve=True)
    ins = ref.get_input_details()
    worst: dict[str, float] = {}
    cut: dict[int, tuple] = {}
    for feed in feeds:
        for d, v in zip(ins, feed):
            ref.set_tensor(d["index"], np.asarray(v, d["dtype"]))
        ref.invoke()
        for k, op in enumerate(sg.operators):
            outs = [int(i) for i in op.outputs]
            kinds = {sg.tensors[i].type for i in outs}
            if not outs or not kinds <= {fb.TensorType.INT8, fb.TensorType.INT16}:
                continue
            # int16 outputs (LayerNorm statistics, LSTM gates of a full-integer file) are
            # compared at int8 resolution: 256 of their steps make one int8 step
            unit = 256.0 if fb.TensorType.INT16 in kinds else 1.0
            if k not in cut:
                one, ins_, _ = _one_op(model, op)
                cut[k] = (ins_, interpreter(one, "ref"), interpreter(one, "default"))
            key = f"{k}:{names.name(op)}"
            got = []
            for it in cut[k][1:]:
                for d, src in zip(it.get_input_details(), cut[k][0]):
                    it.set_tensor(d["index"], ref.get_tensor(src))
                it.invoke()
                got.append([it.get_tensor(d["index"]).astype(np.int32)
                            for d in it.get_output_details()])
            # The reference run's own output must match the one-op reference run: else the
            # cut changed the op (e.g. a lost constant) and the comparison would mean nothing.
            if not all(np.array_equal(ref.get_tensor(i), g) for i, g in
                       zip(outs, got[0])):
                raise ValueError(f"op {key}: the one-op model does not reproduce the graph")
            diff = max(int(np.max(np.abs(a - b), initial=0)) for a, b in zip(*got)) / unit
            worst[key] = max(worst.get(key, 0), diff)
    return worst
