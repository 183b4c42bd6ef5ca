"""Full-integer conversion of an exported .tflite: every activation int8, end to end.

The emitter (`ops.py`) writes *integer islands*: each quantized IR layer is an integer
FULLY_CONNECTED / CONV_2D between QUANTIZE and DEQUANTIZE, and everything else is float32.
This pass turns that graph into a full-integer one, the way a post-training converter does:

1. `probe_model` makes a calibration variant in which every activation tensor can be read
   after a run: main-subgraph tensors become extra outputs; inside WHILE bodies (the LSTM
   loop) each tensor gets a running min and max carried through the loop, so its range covers
   every iteration, not just the last one.
2. `convert` gives every float32 activation (and the float constants the ops consume) an
   int8 grid:
   * ops that need their inputs and output on one grid (layout moves, CONCATENATION, PAD,
     GATHER, MAXIMUM, SELECT_V2, WHILE's loop-carried values, DEQUANTIZE) tie tensors into
     groups; a group's grid covers the union of its calibrated ranges (and 0);
   * some grids are fixed: QUANTIZE outputs (the IR's activation grids, which the integer
     layers' int32 biases were computed on), LOGISTIC/SOFTMAX (1/256, −128) and TANH
     (1/128, 0) outputs (LiteRT's int8 kernels require them). Where a tie would join two
     different fixed grids a requantizing QUANTIZE (int8 → int8) is inserted instead;
   * a free group whose only exits are QUANTIZEs to one fixed grid adopts that grid, so the
     QUANTIZE disappears (e.g. a LayerNorm output feeding only a quantized layer is produced
     directly on that layer's input grid);
   * DEQUANTIZE and QUANTIZE between equal grids are removed; DIV by a constant becomes MUL
     by its reciprocal (LiteRT's int8 DIV is wrong: measured up to 106 LSB off);
   * float FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D (layers the recipe left float) get
     per-channel symmetric int8 weights and an int32 bias (post-training, reported);
   * ops without a verified int8 kernel stay float behind DEQUANTIZE/QUANTIZE and are
     reported (`float_ops`), never hidden.
   A tensor whose range contained −inf (an attention mask) gets a grid reaching
   `MASK_SPAN` below its maximum, so masked scores saturate to the bottom code and SOFTMAX
   gives them probability 0 at int8 resolution.
3. Tensors the caller marks `wide` (the LSTM's gates and cell state; LayerNorm statistics
   with norm_bits=16) are int16 on symmetric grids, with a QUANTIZE wherever they meet int8.
4. Graph inputs, outputs and streaming states are int8 (`io="int8"`, integer-only devices)
   or keep the float interface with QUANTIZE/DEQUANTIZE at the boundary (`io="float"`).

docs/export-tflite.md says why each rule is there (with the measurements that led to it).

Everything here works on LiteRT's flatbuffer object API (`ModelT`); tensor indices of the main
subgraph are compacted at the end and the old → new map is returned.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict

import numpy as np

from edgekit.export.tflite.builder import _fb
from edgekit.export.tflite.builder import pack_model as pack

BIG = 1e30         # |values| past this are masks (±inf, or ±FLT_MAX after LiteRT's clamps)
MASK_SPAN = 16.0   # exp(-16) < 1/256 / 24 keys: a masked score rounds to probability 0
FIXED_OUT = {"LOGISTIC": (1.0 / 256, -128), "SOFTMAX": (1.0 / 256, -128), "TANH": (1.0 / 128, 0)}
FIXED_OUT16 = {"LOGISTIC": (1.0 / 32768, 0), "TANH": (1.0 / 32768, 0)}
# op → input slots tied to its outputs (None: every input)
SAME_GRID = {"RESHAPE": (0,), "TRANSPOSE": (0,), "STRIDED_SLICE": (0,), "SLICE": (0,),
             "GATHER": (0,), "SPLIT": (1,), "PAD": (0,), "PADV2": (0, 2),
             "DYNAMIC_UPDATE_SLICE": (0, 1), "CONCATENATION": None, "MAXIMUM": (0, 1),
             "MINIMUM": (0, 1), "SELECT_V2": (1, 2), "DEQUANTIZE": (0,)}
COMPARE = ("EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL")
# int8 in → int8 out kernels checked against float math in LiteRT 2.x (both resolvers)
INT8_OPS = {"ADD", "SUB", "MUL", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "RSQRT", "EXP",
            "LOG", "ABS", "NEG", "LOGISTIC", "TANH", "SOFTMAX", "LEAKY_RELU", "RELU", "MEAN",
            "BATCH_MATMUL", "PAD", "PADV2", "RESHAPE", "TRANSPOSE", "STRIDED_SLICE",
            "CONCATENATION", "GATHER", "SPLIT", "DYNAMIC_UPDATE_SLICE", "QUANTIZE",
            "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "EQUAL", "ARG_MIN",
            "SELECT_V2", "WHILE", "DEQUANTIZE"}
WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


def load(data: bytes):
    """A .tflite as LiteRT's object API (`ModelT`), to change and `pack` again."""
    return _fb().ModelT.InitFromPackedBuf(bytearray(data), 0)


class _Model:
    """Helpers over a ModelT: op names, constants, producers/consumers per subgraph."""

    def __init__(self, model):
        self.m = model
        fb = _fb()
        self.T = fb.TensorType
        names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
        self.codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?")
                      for c in model.operatorCodes]

    def name(self, op) -> str:
        return self.codes[op.opcodeIndex]

    def is_const(self, sg, t: int) -> bool:
        buf = self.m.buffers[sg.tensors[t].buffer]
        return buf.data is not None and len(buf.data) > 0

    def const(self, sg, t: int) -> np.ndarray:
        tt = sg.tensors[t]
        dt = {self.T.FLOAT32: "<f4", self.T.INT32: "<i4", self.T.INT8: "i1",
              self.T.INT16: "<i2"}[tt.type]
        return np.frombuffer(bytes(self.m.buffers[tt.buffer].data), dt).reshape(list(tt.shape))

    def set_const(self, sg, t: int, values: np.ndarray) -> None:
        fb = _fb()
        b = fb.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)
        self.m.buffers.append(b)
        sg.tensors[t].buffer = len(self.m.buffers) - 1

    def opcode(self, name: str) -> int:
        fb = _fb()
        code = getattr(fb.BuiltinOperator, name)
        for i, c in enumerate(self.m.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
                return i
        c = fb.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
        self.m.operatorCodes.append(c)
        self.codes.append(name)
        return len(self.m.operatorCodes) - 1

    def new_tensor(self, sg, like: int, name: str, type_=None) -> int:
        t = copy.copy(sg.tensors[like])
        t.name = (t.name.decode() if isinstance(t.name, bytes) else t.name) + name
        t.buffer, t.quantization = 0, None
        if type_ is not None:
            t.type = type_
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def new_op(self, name: str, inputs, outputs, options=None):
        o = _fb().OperatorT()
        o.opcodeIndex = self.opcode(name)
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(_fb().BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        return o

    def loops(self, sgi: int):
        """(op, cond subgraph, body subgraph) of every WHILE in subgraph `sgi`."""
        sg = self.m.subgraphs[sgi]
        for op in sg.operators:
            if self.name(op) == "WHILE":
                yield op, op.builtinOptions.condSubgraphIndex, op.builtinOptions.bodySubgraphIndex


def _activations(mm: _Model, sgi: int) -> list[int]:
    """Non-constant float32/int8 tensors of subgraph `sgi` that some op or the I/O touches."""
    sg = mm.m.subgraphs[sgi]
    used = {int(i) for op in sg.operators for i in list(op.inputs) + list(op.outputs) if i >= 0}
    used |= {int(i) for i in list(sg.inputs) + list(sg.outputs)}
    return sorted(t for t in used if sg.tensors[t].type in (mm.T.FLOAT32, mm.T.INT8)
                  and not mm.is_const(sg, t))


# ---- 1. calibration variant -------------------------------------------------------------------
def probe_model(data: bytes) -> tuple[bytes, list[tuple]]:
    """A variant of `data` whose extra outputs expose every activation's values (main
    subgraph) or running min/max over all iterations (WHILE bodies). Returns (bytes, keys):
    keys[i] describes output i (the file's own outputs first): ("value", sg, t) or
    ("min"/"max", sg, t). Graph inputs are not outputs: take their ranges from the feeds."""
    fb = _fb()
    m = load(data)
    mm = _Model(m)
    main = m.subgraphs[0]
    keys: list[tuple] = [("value", 0, int(t)) for t in main.outputs]
    extra = []
    for t in _activations(mm, 0):
        if t not in main.outputs and t not in main.inputs:
            keys.append(("value", 0, t))
            extra.append(t)
    for op, ci, bi in list(mm.loops(0)):
        body, cond = m.subgraphs[bi], m.subgraphs[ci]
        new_ops = []
        for t in _activations(mm, bi):
            src = t
            if body.tensors[t].type == mm.T.INT8:
                src = mm.new_tensor(body, t, "/f", mm.T.FLOAT32)
                new_ops.append(mm.new_op("DEQUANTIZE", [t], [src]))
            axes = mm.new_tensor(body, t, "/axes", mm.T.INT32)
            body.tensors[axes].shape = [len(body.tensors[t].shape)]
            mm.set_const(body, axes, np.arange(len(body.tensors[t].shape), dtype=np.int32))
            for kind, red, acc, init in (("min", "REDUCE_MIN", "MINIMUM", 3e38),
                                         ("max", "REDUCE_MAX", "MAXIMUM", -3e38)):
                carried = mm.new_tensor(body, src, f"/{kind}_in", mm.T.FLOAT32)
                r = mm.new_tensor(body, src, f"/{kind}", mm.T.FLOAT32)
                nxt = mm.new_tensor(body, src, f"/{kind}_next", mm.T.FLOAT32)
                for k in (carried, r, nxt):
                    body.tensors[k].shape = [1]
                opt = fb.ReducerOptionsT()
                opt.keepDims = False
                body.tensors[r].shape = []
                new_ops.append(mm.new_op(red, [src, axes], [r], opt))
                new_ops.append(mm.new_op(acc, [carried, r], [nxt]))
                body.inputs = list(body.inputs) + [carried]
                body.outputs = list(body.outputs) + [nxt]
                cin = mm.new_tensor(cond, int(cond.inputs[0]), f"/{kind}{t}", mm.T.FLOAT32)
                cond.tensors[cin].shape = [1]
                cond.inputs = list(cond.inputs) + [cin]
                i0 = mm.new_tensor(main, int(op.inputs[0]), f"/{kind}0_{bi}_{t}", mm.T.FLOAT32)
                main.tensors[i0].shape = [1]
                mm.set_const(main, i0, np.asarray([init], np.float32))
                o = mm.new_tensor(main, int(op.inputs[0]), f"/{kind}_{bi}_{t}", mm.T.FLOAT32)
                main.tensors[o].shape = [1]
                op.inputs = list(op.inputs) + [i0]
                op.outputs = list(op.outputs) + [o]
                keys.append((kind, bi, t))
                extra.append(o)
        body.operators = list(body.operators) + new_ops
    main.outputs = list(main.outputs) + extra
    return pack(m), keys


def ranges_from(keys: list[tuple], steps: list[list[np.ndarray]]) -> dict:
    """Fold probe outputs (one list per step, in `keys` order, dequantized) into
    {(sg, t): [finite min, finite max, saw -inf, saw +inf]}."""
    out: dict = {}
    for values in steps:
        for key, v in zip(keys, values):
            kind, sg, t = key
            v = np.asarray(v, np.float64)
            # LiteRT's float kernels clamp -inf to -FLT_MAX (their activation bounds): a
            # magnitude past BIG is a masked value, not a range to cover
            fin = v[np.isfinite(v) & (np.abs(v) < BIG)]
            r = out.setdefault((sg, t), [np.inf, -np.inf, False, False])
            if kind in ("value", "min") and fin.size:
                r[0] = min(r[0], float(fin.min()))
            if kind in ("value", "max") and fin.size:
                r[1] = max(r[1], float(fin.max()))
            if kind != "max":
                r[2] = r[2] or bool(np.any(v <= -BIG))
            if kind != "min":
                r[3] = r[3] or bool(np.any(v >= BIG))
    return out


# ---- 2. grids ---------------------------------------------------------------------------------
def int8_grid(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0 (0 must be exact so that
    zero padding and ReLU zeros stay exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zp


def int16_grid(lo: float, hi: float) -> tuple[float, int]:
    """Symmetric int16 (scale, 0) covering [lo, hi]: LiteRT's 16-bit kernels want zp 0."""
    peak = max(abs(float(lo)), abs(float(hi)), 1e-8)
    return _off_pot(peak / 32767.0), 0


def _off_pot(scale: float) -> float:
    """LiteRT's int16 ADD/SUB take a separate power-of-two path when their scales are within
    ~1e-3 of 2^k, and abort the process when that path's conditions then fail: calibrated
    int16 scales keep clear of 2^k (widened by at most 1.4 %)."""
    e = np.log2(scale)
    return float(scale * 2.0 ** 0.02) if abs(e - np.round(e)) < 0.01 else float(scale)


def _quantize(x: np.ndarray, grid, bits: int = 8) -> np.ndarray:
    s, zp = grid
    x = np.asarray(x, np.float64)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = np.clip(np.rint(np.nan_to_num(x / s, posinf=1e12, neginf=-1e12)) + zp, lo, hi)
    return q.astype(np.int16 if bits == 16 else np.int8)


def _own_grid(values: np.ndarray, bits: int) -> tuple[float, int]:
    fin = values[np.isfinite(values) & (np.abs(values) < BIG)]
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
    return int16_grid(lo, hi) if bits == 16 else int8_grid(lo, hi)


class _Groups:
    """Union-find over (subgraph, tensor) with a fixed grid per group where one is required."""

    def __init__(self):
        self.parent: dict = {}
        self.fixed: dict = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def fix(self, a, grid) -> bool:
        r = self.find(a)
        if r in self.fixed and not _same(self.fixed[r], grid):
            return False
        self.fixed[r] = grid
        return True

    def union(self, a, b) -> bool:
        """Join a and b; False (nothing joined) when both have different fixed grids."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        fa, fb = self.fixed.get(ra), self.fixed.get(rb)
        if fa is not None and fb is not None and not _same(fa, fb):
            return False
        self.parent[rb] = ra
        if fa is None and fb is not None:
            self.fixed[ra] = fb
        self.fixed.pop(rb, None)
        return True


def _same(a, b) -> bool:
    return abs(a[0] - b[0]) <= 1e-12 * max(abs(a[0]), 1e-30) and int(a[1]) == int(b[1])


def _qparams(grid, axis: int = 0):
    p = _fb().QuantizationParametersT()
    s = np.atleast_1d(grid[0]).astype(np.float64)
    p.scale = [float(v) for v in s]
    zp = np.atleast_1d(grid[1]).astype(np.int64)
    if zp.size == 1 and s.size > 1:
        zp = np.repeat(zp, s.size)
    p.zeroPoint = [int(v) for v in zp]
    p.quantizedDimension = int(axis)
    return p


def _grid_of(t) -> tuple[float, int] | None:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


# ---- 3. the conversion --------------------------------------------------------------------------
def convert(model, ranges: dict, io: str = "int8", wide=(), hints=None,
            outputs=()) -> tuple[dict, dict]:
    """Make `model` (a ModelT, changed in place) full-integer with calibrated `ranges`
    (from `ranges_from`). `wide`: (subgraph, tensor) pairs to keep at int16 (symmetric
    grids, LiteRT's 16-bit kernels), with QUANTIZE where they meet int8 tensors. `hints`:
    (subgraph, tensor) → ("fixed", lo, hi) replaces a group's calibrated range, ("margin",
    k) widens it k times (values the float calibration cannot show, e.g. the error of a
    table lookup that a later op corrects), ("cover", node) makes it cover that node's
    range too (a mean covers its input's), ("rsqrt_cap", node) caps it at 1/sqrt of the
    smallest value `node`'s grid lets through RSQRT. `outputs`: main-subgraph tensors that
    are the graph's results (not streaming states): their groups keep their calibrated grid.
    Returns (old → new main-subgraph tensor index map, report)."""
    if io not in ("int8", "float"):
        raise ValueError(f"io must be 'int8' or 'float', got {io!r}")
    mm = _Model(model)
    subs = [0] + [bi for _, _, bi in mm.loops(0)] + [ci for _, ci, _ in mm.loops(0)]
    rep = {"requantize_ops": 0, "float_ops": Counter(), "requantized_float_layers": []}
    for s in subs:
        _div_to_mul(mm, s)
        _unshare_consts(mm, s)
    g = _Groups()
    requant: list = []          # (sg, op, slot) inputs to requantize onto the op's group
    islands: list = []          # (sg, op) kept float
    for s in subs:
        for t in _activations(mm, s):
            g.find((s, t))
    # fixed grids and ties
    for s in subs:
        sg = model.subgraphs[s]
        for op in sg.operators:
            name = mm.name(op)
            ins = [int(i) for i in op.inputs]
            outs = [int(i) for i in op.outputs]
            if not _is_int8_capable(mm, sg, op, name):
                islands.append((s, op))
                continue
            if name == "QUANTIZE":
                g.fix((s, outs[0]), _grid_of(sg.tensors[outs[0]]))
            if name in WEIGHT_OPS and sg.tensors[ins[0]].type == mm.T.INT8:
                g.fix((s, ins[0]), _grid_of(sg.tensors[ins[0]]))
            if name in FIXED_OUT:
                fixed = FIXED_OUT16 if (s, outs[0]) in wide else FIXED_OUT
                if name not in fixed:
                    raise ValueError(f"{name} has no 16-bit kernel")
                if not g.fix((s, outs[0]), fixed[name]):
                    raise ValueError(f"{name} output has two fixed grids")
            if name in COMPARE and len(ins) == 2 and ins[1] >= 0:
                # a comparison of two int8 grids is exact only on one grid
                if not g.union((s, ins[0]), (s, ins[1])):
                    requant.append((s, op, 1))
            if name in SAME_GRID:
                slots = range(len(ins)) if SAME_GRID[name] is None else SAME_GRID[name]
                for o in outs[1:]:
                    g.union((s, outs[0]), (s, o))
                for k in slots:
                    if ins[k] >= 0 and not g.union((s, outs[0]), (s, ins[k])):
                        requant.append((s, op, k))
    for op, ci, bi in mm.loops(0):
        body, cond = model.subgraphs[bi], model.subgraphs[ci]
        for k in range(len(op.inputs)):
            tt = body.tensors[int(body.inputs[k])]
            if tt.type not in (mm.T.FLOAT32, mm.T.INT8):
                continue
            a = (0, int(op.outputs[k]))
            for b in ((0, int(op.inputs[k])), (bi, int(body.inputs[k])),
                      (bi, int(body.outputs[k])), (ci, int(cond.inputs[k]))):
                if not g.union(a, b):
                    raise ValueError("a loop-carried value has two fixed grids")
    # adoption: a free group whose every exit is a QUANTIZE to one grid takes that grid
    members = defaultdict(list)
    for node in list(g.parent):
        members[g.find(node)].append(node)
    consumers = defaultdict(list)
    for s in subs:
        for op in model.subgraphs[s].operators:
            for k, i in enumerate(op.inputs):
                consumers[(s, int(i))].append((op, k))
    wide_roots = {g.find(n) for n in wide if n in g.parent}
    out_roots = {g.find((0, int(t))) for t in outputs if (0, int(t)) in g.parent}
    for root, nodes in members.items():
        if root in g.fixed or root in wide_roots or root in out_roots:
            continue
        target, ok = None, True
        for node in nodes:
            for op, k in consumers[node]:
                name = mm.name(op)
                if name == "QUANTIZE":
                    gq = _grid_of(model.subgraphs[node[0]].tensors[int(op.outputs[0])])
                    if target is None:
                        target = gq
                    ok = ok and _same(target, gq)
                elif name in SAME_GRID and g.find((node[0], int(op.outputs[0]))) == root:
                    continue
                elif name == "WHILE":
                    continue
                else:
                    ok = False
        if ok and target is not None:
            g.fixed[root] = target
    # free groups: the calibrated range
    span = {}
    for root, nodes in members.items():
        lo, hi, ninf = np.inf, -np.inf, False
        for s, t in nodes:
            sg = model.subgraphs[s]
            if mm.is_const(sg, t) and sg.tensors[t].type == mm.T.FLOAT32:
                v = mm.const(sg, t)
                fin = v[np.isfinite(v) & (np.abs(v) < BIG)]
                if fin.size:
                    lo, hi = min(lo, float(fin.min())), max(hi, float(fin.max()))
                ninf = ninf or bool(np.any(v <= -BIG))
                continue
            r = ranges.get((s, t))
            if r is not None:
                lo, hi, ninf = min(lo, r[0]), max(hi, r[1]), ninf or r[2]
        if not np.isfinite(lo):
            lo = 0.0
        if not np.isfinite(hi):
            hi = 0.0
        if ninf:
            lo = min(lo, max(hi, 0.0) - MASK_SPAN)
        for node in nodes:
            h = (hints or {}).get(node)
            if h is not None and h[0] == "fixed":
                lo, hi = h[1], h[2]
            elif h is not None and h[0] == "margin":
                lo, hi = lo * h[1], hi * h[1]
        span[root] = (lo, hi)
    for node, h in (hints or {}).items():   # "cover": at least the range of another tensor
        if h[0] == "cover" and node in g.parent and h[1] in g.parent:
            a, b = g.find(node), g.find(h[1])
            if a in span and b in span:
                span[a] = (min(span[a][0], span[b][0]), max(span[a][1], span[b][1]))
    for node, h in (hints or {}).items():   # "rsqrt_cap": 1/sqrt of the smallest v it sees
        if h[0] == "rsqrt_cap" and node in g.parent and h[1] in g.parent:
            a, b = g.find(node), g.find(h[1])
            if a in span and b in span:
                bits = 16 if b in wide_roots else 8
                sv = (int16_grid if bits == 16 else int8_grid)(*span[b])[0]
                cap = 1.1 / np.sqrt(sv * (RSQRT16_FLOOR if bits == 16 else RSQRT8_FLOOR))
                span[a] = (span[a][0], min(span[a][1], cap))

    _floor_scales(mm, subs, g, span, wide_roots)

    def grid(node):
        r = g.find(node)
        if r in g.fixed:
            return g.fixed[r]
        return (int16_grid if r in wide_roots else int8_grid)(*span.get(r, (0.0, 0.0)))

    # ---- rewrite
    for s in subs:
        sg = model.subgraphs[s]
        # float islands: DEQUANTIZE int8 inputs, QUANTIZE float outputs
        isl = {id(op) for s2, op in islands if s2 == s}
        rq = {(id(op), k) for s2, op, k in requant if s2 == s}
        ops = []
        for op in sg.operators:
            name = mm.name(op)
            if id(op) in isl:
                rep["float_ops"][name] += 1
                for k, i in enumerate(op.inputs):
                    i = int(i)
                    if i >= 0 and sg.tensors[i].type in (mm.T.FLOAT32,) and not mm.is_const(sg, i):
                        f = mm.new_tensor(sg, i, "/f", mm.T.FLOAT32)
                        ops.append(mm.new_op("DEQUANTIZE", [i], [f]))
                        op.inputs[k] = f
                ops.append(op)
                for k, o in enumerate(op.outputs):
                    o = int(o)
                    if sg.tensors[o].type == mm.T.FLOAT32:
                        f = mm.new_tensor(sg, o, "/f", mm.T.FLOAT32)
                        op.outputs[k] = f
                        ops.append(mm.new_op("QUANTIZE", [f], [o]))
                continue
            for k, i in enumerate(op.inputs):
                if (id(op), k) in rq:
                    t = mm.new_tensor(sg, int(i), "/rq")
                    onto = int(op.inputs[0]) if name in COMPARE else int(op.outputs[0])
                    g.parent[(s, t)] = g.find((s, onto))
                    ops.append(mm.new_op("QUANTIZE", [int(i)], [t]))
                    op.inputs[k] = t
                    rep["requantize_ops"] += 1
            ops.append(op)
        sg.operators = ops
    # tensors: type and grid (constants quantized on their grid)
    for node in list(g.parent):
        s, t = node
        sg = model.subgraphs[s]
        tt = sg.tensors[t]
        if tt.type not in (mm.T.FLOAT32, mm.T.INT8):
            continue
        gr = grid(node)
        bits = 16 if g.find(node) in wide_roots else 8
        if mm.is_const(sg, t):
            if tt.type == mm.T.FLOAT32:
                mm.set_const(sg, t, _quantize(mm.const(sg, t), gr, bits))
            else:
                continue
        tt.type = mm.T.INT16 if bits == 16 else mm.T.INT8
        tt.quantization = _qparams(gr)
    isl_ids = {id(op) for _, op in islands}
    for s in subs:
        _convert_mixed(mm, s, isl_ids, grid, lambda n: span.get(g.find(n), (0.0, 0.0)), rep)
        _quantize_rest(mm, s, rep)
        _fix_rsqrt_eps(mm, s)
    # equal-grid QUANTIZE / DEQUANTIZE become aliases
    alias = {}
    for s in subs:
        sg = model.subgraphs[s]
        keep = []
        for op in sg.operators:
            name = mm.name(op)
            i, o = (int(op.inputs[0]), int(op.outputs[0])) if op.inputs is not None and len(op.inputs) else (-1, -1)
            ints = (mm.T.INT8, mm.T.INT16)
            if (name in ("QUANTIZE", "DEQUANTIZE") and sg.tensors[i].type in ints
                    and sg.tensors[o].type == sg.tensors[i].type
                    and _same(_grid_of(sg.tensors[i]), _grid_of(sg.tensors[o]))):
                alias[(s, o)] = (s, i)
                continue
            if name == "DEQUANTIZE" and sg.tensors[o].type in ints:
                op.opcodeIndex = mm.opcode("QUANTIZE")   # int8 → int8 on another grid
                rep["requantize_ops"] += 1
            keep.append(op)
        sg.operators = keep
    _apply_alias(model, subs, alias)
    if io == "float":
        _float_io(mm)
    for s in subs:
        _dead_code(mm, s)
    index_map = _compact(mm, 0)
    _drop_unused_buffers(model)
    return index_map, rep


def _floor_scales(mm: _Model, subs, g: _Groups, span: dict, wide_roots: set) -> None:
    """XNNPACK refuses (at runtime creation, for the whole graph) an integer FULLY_CONNECTED
    or CONV whose requantization scale s_in·s_w/s_out reaches 256, and a MUL whose
    s_a·s_b/s_out does: a free output group whose calibrated range is that small (a layer
    whose output is ~0 on the calibration data) is widened until the ratio is ≤ 128."""
    def scale(node):
        if node not in g.parent:   # a constant operand: not in any group
            return None
        r = g.find(node)
        if r in g.fixed:
            return g.fixed[r][0]
        return None if r in wide_roots else int8_grid(*span.get(r, (0.0, 0.0)))[0]

    for s in subs:
        sg = mm.m.subgraphs[s]
        for op in sg.operators:
            name = mm.name(op)
            if name not in WEIGHT_OPS + ("MUL", "BATCH_MATMUL") or not len(op.outputs):
                continue
            ins = [int(i) for i in op.inputs]
            out = (s, int(op.outputs[0]))
            root = g.find(out)
            if root in g.fixed or root in wide_roots or root not in span:
                continue
            if name in WEIGHT_OPS:
                t = sg.tensors[ins[1]]
                if t.type == mm.T.FLOAT32:
                    w = np.abs(mm.const(sg, ins[1]))
                    sw = float(w.max()) / 127.0
                else:
                    sw = float(np.max(t.quantization.scale)) if t.quantization else 0.0
                sa = scale((s, ins[0]))
                prod = None if sa is None else sa * sw
            else:
                sa, sb = scale((s, ins[0])), scale((s, ins[1])) if ins[1] >= 0 else None
                if mm.is_const(sg, ins[1]):
                    v = mm.const(sg, ins[1])
                    sb = _own_grid(v.astype(np.float64), 8)[0]
                prod = None if sa is None or sb is None else sa * sb
            if not prod:
                continue
            lo, hi = span[root]
            have = int8_grid(lo, hi)[0]
            if have < prod / 128.0:
                k = prod / 128.0 / have
                lo, hi = min(lo, 0.0) * k, max(hi, 0.0) * k
                if hi - lo <= 1e-8:   # an all-zero range: a symmetric one of the needed size
                    lo, hi = -127.5 * prod / 128.0, 127.5 * prod / 128.0
                span[root] = (lo, hi)


def _convert_mixed(mm: _Model, s: int, isl_ids: set, grid, span_of, rep) -> None:
    """An op computes in its output's type (int8 or int16): inputs of the other width get a
    QUANTIZE first (int8 → int16 exactly on (s8, 0); int16 → int8 on the input's range, or
    on the op's grid when the op needs one grid)."""
    sg = mm.m.subgraphs[s]
    ints = (mm.T.INT8, mm.T.INT16)
    ops = []
    made: dict = {}   # (tensor, type, grid) -> converted tensor: one QUANTIZE per conversion
    for op in sg.operators:
        name = mm.name(op)
        outs = [int(o) for o in op.outputs]
        if (name in ("QUANTIZE", "DEQUANTIZE", "WHILE") or id(op) in isl_ids or not outs
                or sg.tensors[outs[0]].type not in ints):
            ops.append(op)
            continue
        want = sg.tensors[outs[0]].type
        slots = SAME_GRID.get(name, ())
        for k, i in enumerate(op.inputs):
            i = int(i)
            if i < 0 or mm.is_const(sg, i) or sg.tensors[i].type not in ints \
                    or sg.tensors[i].type == want:
                continue
            if name in SAME_GRID and (slots is None or k in slots):
                gr = grid((s, outs[0]))
            elif want == mm.T.INT16:   # exact on (s8, 0) unless s8 is near 2^k
                gr = (_off_pot(_grid_of(sg.tensors[i])[0]), 0)
            else:
                gr = int8_grid(*span_of((s, i)))
            key = (i, want, gr)
            if key not in made:
                made[key] = mm.new_tensor(sg, i, "/cvt", want)
                sg.tensors[made[key]].quantization = _qparams(gr)
                ops.append(mm.new_op("QUANTIZE", [i], [made[key]]))
                rep["requantize_ops"] += 1
            op.inputs[k] = made[key]
        ops.append(op)
    sg.operators = ops


def _is_int8_capable(mm, sg, op, name) -> bool:
    if name in INT8_OPS:
        return True
    # ops on integer/bool tensors only (LESS, CAST between ints, ...) are untouched
    return not any(sg.tensors[int(i)].type == mm.T.FLOAT32 for i in
                   list(op.inputs) + list(op.outputs) if int(i) >= 0)


def _div_to_mul(mm: _Model, s: int) -> None:
    sg = mm.m.subgraphs[s]
    for op in sg.operators:
        if mm.name(op) == "DIV" and mm.is_const(sg, int(op.inputs[1])):
            c = mm.const(sg, int(op.inputs[1])).astype(np.float64)
            t = mm.new_tensor(sg, int(op.inputs[1]), "/recip")
            mm.set_const(sg, t, (1.0 / c).astype(np.float32))
            op.inputs[1] = t
            op.opcodeIndex = mm.opcode("MUL")
            opt = _fb().MulOptionsT()
            opt.fusedActivationFunction = getattr(op.builtinOptions, "fusedActivationFunction", 0)
            op.builtinOptionsType = _fb().BuiltinOptions.MulOptions
            op.builtinOptions = opt


def _unshare_consts(mm: _Model, s: int) -> None:
    """Each use of a float constant gets its own tensor (each use may need its own grid)."""
    sg = mm.m.subgraphs[s]
    seen = set()
    for op in sg.operators:
        for k, i in enumerate(op.inputs):
            i = int(i)
            if i < 0 or not mm.is_const(sg, i) or sg.tensors[i].type != mm.T.FLOAT32:
                continue
            if i in seen:
                t = copy.copy(sg.tensors[i])
                sg.tensors.append(t)
                op.inputs[k] = len(sg.tensors) - 1
            seen.add(i)


def _quantize_rest(mm: _Model, s: int, rep) -> None:
    """Float constants left after grouping: arithmetic operands get their own per-tensor
    grid; float weight layers get per-channel int8 weights and an int32 bias."""
    sg = mm.m.subgraphs[s]
    for op in sg.operators:
        name = mm.name(op)
        ins = [int(i) for i in op.inputs]
        if name in WEIGHT_OPS and len(ins) > 1 and sg.tensors[ins[1]].type == mm.T.FLOAT32 \
                and mm.is_const(sg, ins[1]) and sg.tensors[ins[0]].type == mm.T.INT8:
            w = mm.const(sg, ins[1]).astype(np.float64)
            axis = 3 if name == "DEPTHWISE_CONV_2D" else 0
            wm = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
            ws = np.maximum(np.abs(wm).max(axis=1), 1e-12) / 127.0
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.rint(w / ws.reshape(shape)), -127, 127).astype(np.int8)
            mm.set_const(sg, ins[1], q)
            sg.tensors[ins[1]].type = mm.T.INT8
            sg.tensors[ins[1]].quantization = _qparams((ws, 0), axis)
            xs = _grid_of(sg.tensors[ins[0]])[0]
            if len(ins) > 2 and ins[2] >= 0:
                b = mm.const(sg, ins[2]).astype(np.float64)
                qb = np.clip(np.rint(b / (xs * ws)), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
                mm.set_const(sg, ins[2], qb)
                sg.tensors[ins[2]].type = mm.T.INT32
                sg.tensors[ins[2]].quantization = _qparams((xs * ws, 0), 0)
            err = w - q.astype(np.float64) * ws.reshape(shape)
            snr = 10 * np.log10(max(float((w ** 2).sum()), 1e-30) / max(float((err ** 2).sum()), 1e-30))
            rep["requantized_float_layers"].append(
                {"tensor": _tname(sg.tensors[ins[1]]), "op": name, "weight_snr_db": round(snr, 2)})
            continue
        for k, i in enumerate(ins):
            if i < 0 or not mm.is_const(sg, i) or sg.tensors[i].type != mm.T.FLOAT32:
                continue
            if any(sg.tensors[int(j)].type == mm.T.FLOAT32 for j in list(op.outputs)):
                continue   # a float island keeps its float constants
            v = mm.const(sg, i)
            out = sg.tensors[int(op.outputs[0])]
            bits = 16 if out.type == mm.T.INT16 else 8
            gr = _own_grid(v, bits)
            og = _grid_of(out)
            if bits == 16 and name in ("ADD", "SUB") and og is not None \
                    and np.all(np.abs(v) <= og[0] * 32767):
                # int16 ADD/SUB want comparable input scales (far-apart ones abort LiteRT)
                gr = og
            mm.set_const(sg, i, _quantize(v, gr, bits))
            sg.tensors[i].type = mm.T.INT16 if bits == 16 else mm.T.INT8
            sg.tensors[i].quantization = _qparams(gr)


RSQRT16_FLOOR = 16   # int16 steps: ε ≥ 2^-11 of the variance grid's top
RSQRT8_FLOOR = 1     # int8 steps: ε ≥ one step, rstd's int8 grid stops at 1/sqrt(that)


def _fix_rsqrt_eps(mm: _Model, s: int) -> None:
    """RSQRT's kernels refuse 0: an ADD of a constant ε feeding it must add at least one step
    of its output grid (else a zero variance rounds to 0). At int16 it adds at least
    `RSQRT16_FLOOR` steps: LiteRT's int16 RSQRT is a table that is 3x off in its lowest
    steps, more than the Newton steps after it can repair (rows of variance under 2^-11 of
    the largest are damped: ~1 % at 1/50 of it). At int8 one step, and rstd's int8 grid
    stops at 1/sqrt of it (a constant row in the calibration data would otherwise stretch it
    to 1/sqrt(1e-5); a floor of 4 steps cost 3 dB on the tiny Conformer). ε is put on the output's own grid (LiteRT's
    int16 ADD aborts the process when its two input scales are ~2^15 apart)."""
    sg = mm.m.subgraphs[s]
    prod = {int(o): op for op in sg.operators for o in op.outputs}
    for op in sg.operators:
        if mm.name(op) != "RSQRT":
            continue
        add = prod.get(int(op.inputs[0]))
        if add is None or mm.name(add) != "ADD":
            continue
        out = _grid_of(sg.tensors[int(add.outputs[0])])
        for i in add.inputs:
            i = int(i)
            if mm.is_const(sg, i) and sg.tensors[i].type in (mm.T.INT8, mm.T.INT16):
                gr = _grid_of(sg.tensors[i])
                val = (mm.const(sg, i).astype(np.float64) - gr[1]) * gr[0]
                bits = 16 if sg.tensors[i].type == mm.T.INT16 else 8
                floor = RSQRT16_FLOOR if bits == 16 else RSQRT8_FLOOR
                code = np.maximum(np.rint(val / out[0]), floor) + out[1]
                hi = (1 << (bits - 1)) - 1
                mm.set_const(sg, i, np.clip(code, -hi - 1, hi).astype(
                    np.int16 if bits == 16 else np.int8))
                sg.tensors[i].quantization = _qparams(out)


def _apply_alias(model, subs, alias: dict) -> None:
    """Replace every use of an aliased tensor (whose writer is gone) by its target."""
    def res(node):
        while node in alias:
            node = alias[node]
        return node[1]
    for s in subs:
        sg = model.subgraphs[s]
        for op in sg.operators:
            op.inputs = [res((s, int(i))) if int(i) >= 0 else -1 for i in op.inputs]
            op.outputs = [res((s, int(i))) for i in op.outputs]
        sg.inputs = [res((s, int(i))) for i in sg.inputs]
        sg.outputs = [res((s, int(i))) for i in sg.outputs]


def _float_io(mm: _Model) -> None:
    """Float graph inputs/outputs around the int8 graph (QUANTIZE in, DEQUANTIZE out)."""
    sg = mm.m.subgraphs[0]
    new_in, pre = _float_side(mm, sg, sg.inputs, "QUANTIZE")
    new_out, post = _float_side(mm, sg, sg.outputs, "DEQUANTIZE")
    sg.operators = pre + list(sg.operators) + post
    sg.inputs, sg.outputs = new_in, new_out


def _float_side(mm: _Model, sg, ends, op_name: str) -> tuple[list, list]:
    """(new I/O list, conversion ops) for one side: each int8 end gets a float twin that
    takes its name (the int8 tensor becomes `<name>/q`)."""
    new, ops = [], []
    for i in ends:
        i = int(i)
        if sg.tensors[i].type != mm.T.INT8:
            new.append(i)
            continue
        f = mm.new_tensor(sg, i, "", mm.T.FLOAT32)
        sg.tensors[i].name = _tname(sg.tensors[i]) + "/q"
        ops.append(mm.new_op(op_name, [f], [i]) if op_name == "QUANTIZE"
                   else mm.new_op(op_name, [i], [f]))
        new.append(f)
    return new, ops


def _tname(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _dead_code(mm: _Model, s: int) -> None:
    sg = mm.m.subgraphs[s]
    while True:
        used = {int(i) for op in sg.operators for i in op.inputs} | {int(i) for i in sg.outputs}
        keep = [op for op in sg.operators
                if mm.name(op) == "WHILE" or any(int(o) in used for o in op.outputs)]
        if len(keep) == len(sg.operators):
            return
        sg.operators = keep


def name_io(model, inputs: list[str], outputs: list[str]) -> None:
    """Give the main subgraph's inputs and outputs these names, in order (removing a
    DEQUANTIZE can leave a layer's own tensor as a graph output, under its own name; runners
    find states by name). A tensor at two places (an output that is also an input or another
    output) gets a copy for the second, so each place has its name."""
    fb = _fb()
    mm = _Model(model)
    sg = model.subgraphs[0]
    seen: set = set()
    for ends, names in ((sg.inputs, inputs), (sg.outputs, outputs)):
        for k, (t, name) in enumerate(zip(list(ends), names)):
            t = int(t)
            if t in seen:
                shape = [int(d) for d in sg.tensors[t].shape]
                dims = mm.new_tensor(sg, t, "/shape", mm.T.INT32)
                sg.tensors[dims].shape = [len(shape)]
                mm.set_const(sg, dims, np.asarray(shape, np.int32))
                copy_ = mm.new_tensor(sg, t, "/copy")
                sg.tensors[copy_].quantization = sg.tensors[t].quantization
                opt = fb.ReshapeOptionsT()
                opt.newShape = shape
                sg.operators = list(sg.operators) + [mm.new_op("RESHAPE", [t, dims], [copy_], opt)]
                ends[k] = copy_
                t = copy_
            seen.add(t)
            sg.tensors[t].name = name


def _drop_unused_buffers(model) -> None:
    """Constants replaced by their quantized copies (and tensors compacted away) leave their
    old buffers behind: a file would carry both. Buffer 0 (the empty sentinel) stays."""
    used = {0} | {int(t.buffer) for sg in model.subgraphs for t in sg.tensors}
    keep = [i for i in range(len(model.buffers)) if i in used]
    new = {old: k for k, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for sg in model.subgraphs:
        for t in sg.tensors:
            t.buffer = new[int(t.buffer)]


def _compact(mm: _Model, s: int) -> dict:
    """Drop tensors no op or I/O uses; returns the old → new index map."""
    sg = mm.m.subgraphs[s]
    used = sorted({int(i) for op in sg.operators for i in list(op.inputs) + list(op.outputs)
                   if int(i) >= 0} | {int(i) for i in list(sg.inputs) + list(sg.outputs)})
    new = {old: k for k, old in enumerate(used)}
    sg.tensors = [sg.tensors[i] for i in used]
    for op in sg.operators:
        op.inputs = [new[int(i)] if int(i) >= 0 else -1 for i in op.inputs]
        op.outputs = [new[int(i)] for i in op.outputs]
    sg.inputs = [new[int(i)] for i in sg.inputs]
    sg.outputs = [new[int(i)] for i in sg.outputs]
    return new
