"""IR ops (docs/format.md §2.6) → TFLite operators, one IR graph → one TFLite subgraph.

Quantized IR ops become integer islands: QUANTIZE (the op's static activation grid) → integer
FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D (int8 activations, INT8/INT4/INT2 per-channel
weights, int32 bias, int8 output on a calibrated grid) → DEQUANTIZE. Layout moves of a conv
input (transpose, padding, zero insertion) happen on the int8 tensor. Every other IR op is
emitted in float32 and counted in `float_ops`, so the report says what is not integer.

The same emitter also writes the *calibration twin* (`calibrating=True`): quantized ops keep
their input fake-quantization but compute in float with the stored integer weights
dequantized, and expose their outputs as probes. Running the twin on calibration inputs gives
the output ranges of every integer op (its int8 grid) and the per-layer reference outputs.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgekit.export import ir
from edgekit.export.tflite import builder, lstm
from edgekit.export.tflite.fullint import int8_grid
from edgekit.export.tflite import weights as wplan

IR_TO_TFL = {"f32": "f32", "i32": "i32", "i8": "i8", "u8": "u8", "i64": "i64"}
CAST_CODES = {1: "f32", 2: "i32", 3: "i8", 4: "u8", 5: "i64"}
UNARY = {"relu": "RELU", "sigmoid": "LOGISTIC", "tanh": "TANH", "exp": "EXP", "log": "LOG",
         "sqrt": "SQRT", "neg": "NEG", "abs": "ABS"}
BINARY = {"add": ("ADD", "AddOptionsT"), "sub": ("SUB", "SubOptionsT"),
          "mul": ("MUL", "MulOptionsT"), "div": ("DIV", "DivOptionsT"),
          "matmul": ("BATCH_MATMUL", "BatchMatMulOptionsT")}


def sym_grid(lo: float, hi: float) -> tuple[float, int]:
    """Symmetric int8 grid (zero point 0), the calibrated stand-in for the IR's dynamic
    per-row grid (act_mode 1), which LiteRT's integer kernels do not have."""
    peak = max(abs(float(lo)), abs(float(hi)), 1e-8)
    return peak / 127.0, 0


class Emitter:
    """Translate `graph` of `model` into a new subgraph of `mb`.

    ranges: probe key → (min, max) from calibration (unused when calibrating);
    plans: cache of WeightPlan by (weight tensor, kind), shared with the twin so both use the
    same integer weights; opts: `lossless`, `min_bits`, `low_first` (test hook).
    """

    def __init__(self, model: ir.Model, graph: ir.Graph, mb: builder.ModelBuilder, *,
                 calibrating: bool, ranges: dict, plans: dict, opts: dict):
        self.m, self.g, self.mb = model, graph, mb
        self.sg = mb.subgraph(graph.name)
        self.calibrating, self.ranges, self.plans, self.opts = calibrating, ranges, plans, opts
        self.t: dict[str, int] = {}
        self.probes: dict[str, int] = {}
        self.float_ops: Counter = Counter()
        self.int_ops: Counter = Counter()
        self.layers: list[dict] = []
        self.key = ""
        self.main_sg = self.sg
        self.body_probes: list[tuple[str, int]] = []
        self._i32: dict = {}
        self.lsb: dict[int, float] = {}  # DEQUANTIZE outputs: the int8 step they come from
        # tensors a full-integer conversion may keep at 16 bits (fullint.py): LayerNorm's
        # statistics (with norm_bits=16) and the LSTM's gates and cell state
        self.wide: dict[tuple[int, int], str] = {}   # (subgraph, tensor) -> "norm" | "lstm"
        self.range_hints: dict[tuple[int, int], tuple] = {}   # grid overrides (fullint)

    # ---- tensors -------------------------------------------------------------------------
    def tin(self, name: str | None) -> int:
        """The TFLite tensor of IR tensor `name` (constants are materialized on first use)."""
        if name is None:
            return -1
        if name not in self.t:
            t = self.m.tensors[name]
            if t.kind != "const" or t.dtype == "packed":
                raise ValueError(f"tensor {name} is used before it is produced")
            self.t[name] = self.sg.tensor(name, t.shape, IR_TO_TFL[t.dtype], t.data)
        return self.t[name]

    def tout(self, name: str) -> int:
        t = self.m.tensors[name]
        self.t[name] = self.sg.tensor(name, t.shape, IR_TO_TFL[t.dtype])
        return self.t[name]

    def new(self, name: str, shape, dtype: str = "f32", q=None) -> int:
        if q is None:
            return self.sg.tensor(name, shape, dtype)
        return self.sg.tensor(name, shape, dtype, scale=q[0], zero_point=q[1])

    def i32(self, name: str, values) -> int:
        """An int32 constant (shapes, axes, indices); equal ones in a subgraph are shared,
        which keeps the many small layout constants from bloating the file."""
        a = np.asarray(values, np.int32)
        key = (self.sg.index, a.shape, a.tobytes())
        if key not in self._i32:
            self._i32[key] = self.sg.const(name, a, "i32")
        return self._i32[key]

    def f32(self, name: str, values) -> int:
        return self.sg.const(name, np.asarray(values, np.float32), "f32")

    @staticmethod
    def mb_shape(sg, index: int) -> tuple[int, ...]:
        return sg.shapes[index]

    @staticmethod
    def mb_dtype(sg, index: int) -> str:
        return sg.dtypes[index]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.m.tensors[name].shape)

    def probe(self, key: str, index: int) -> None:
        """Remember a tensor to read after a run. Inside a loop body (not readable after
        the run) the LSTM emitter collects them per step instead (`body_probes`)."""
        if self.sg is self.main_sg:
            self.probes[key] = index
        else:
            self.body_probes.append((key, index))

    def grid(self, key: str, symmetric: bool = False) -> tuple[float, int]:
        if key not in self.ranges:
            raise ValueError(f"no calibration range for {key} (calibration did not reach it)")
        return (sym_grid if symmetric else int8_grid)(*self.ranges[key])

    # ---- small op helpers ------------------------------------------------------------------
    def op(self, name: str, ins, outs, options=None) -> None:
        self.sg.op(name, ins, outs, options)

    def like(self, src: int, shape, name: str) -> int:
        """A new tensor with `src`'s dtype and quantization (layout ops keep the grid)."""
        q = self.sg.quant_of(src)
        dt = self.sg.dtypes[src]
        return self.new(name, shape, dt, None if q is None else (q[0][0], q[1][0]))

    def reshape(self, src: int, shape, name: str, out: int | None = None) -> int:
        fb = builder._fb()
        o = self.like(src, shape, name) if out is None else out
        opt = fb.ReshapeOptionsT()
        opt.newShape = [int(d) for d in shape]
        self.op("RESHAPE", [src, self.i32(name + "/shape", shape)], [o], opt)
        return o

    def transpose(self, src: int, perm, shape, name: str, out: int | None = None) -> int:
        o = self.like(src, shape, name) if out is None else out
        self.op("TRANSPOSE", [src, self.i32(name + "/perm", perm)], [o])
        return o

    def pad(self, src: int, pads, shape, name: str) -> int:
        """Zero padding (an int8 tensor pads with its zero point, i.e. real 0)."""
        o = self.like(src, shape, name)
        self.op("PAD", [src, self.i32(name + "/pads", pads)], [o])
        return o

    def strided_slice(self, src: int, begin, end, shape, name: str, out=None) -> int:
        o = self.like(src, shape, name) if out is None else out
        opt = builder._fb().StridedSliceOptionsT()
        self.op("STRIDED_SLICE", [src, self.i32(name + "/b", begin), self.i32(name + "/e", end),
                                  self.i32(name + "/s", [1] * len(begin))], [o], opt)
        return o

    def quantize(self, src: int, shape, q, name: str) -> int:
        o = self.new(name, shape, "i8", q)
        self.op("QUANTIZE", [src], [o])
        return o

    def dequantize(self, src: int, shape, name: str, out: int | None = None) -> int:
        o = self.new(name, shape) if out is None else out
        self.op("DEQUANTIZE", [src], [o])
        if self.sg is self.main_sg:
            self.lsb[o] = self.sg.quant_of(src)[0][0]
        return o

    def fake_quant(self, src: int, shape, q, name: str) -> int:
        return self.dequantize(self.quantize(src, shape, q, name + "/q"), shape, name + "/dq")

    def weight_plan(self, name: str, kind: str) -> wplan.WeightPlan:
        key = (name, kind)
        if key not in self.plans:
            t = self.m.tensors[name]
            if t.dtype != "packed":
                raise ValueError(f"{name}: a quantized op needs a packed weight, got {t.dtype}")
            self.plans[key] = wplan.plan(t.data, kind, lossless=self.opts.get("lossless", False),
                                         min_bits=self.opts.get("min_bits"),
                                         split_groups=self.opts.get("split_groups", True))
        return self.plans[key]

    def int_weight(self, name: str, p: wplan.WeightPlan, values: np.ndarray, shape, axis: int) -> int:
        """A per-channel integer weight constant (INT4/INT2 packed low nibble first)."""
        if p.bits == 8:
            return self.sg.tensor(name, shape, "i8", values, scale=p.scale, axis=axis)
        raw = builder.pack_subbyte(values, p.bits, self.opts.get("low_first", True))
        return self.sg.tensor(name, shape, p.dtype, raw=raw, scale=p.scale, axis=axis)

    def int_bias(self, name: str, bias: str | None, in_scale: float, w_scale: np.ndarray,
                 rows: slice = slice(None)) -> int:
        """int32 bias on the grid in_scale · w_scale[n] (what LiteRT's kernels require)."""
        if bias is None:
            return -1
        b = np.asarray(self.m.tensors[bias].data, np.float64).reshape(-1)[rows]
        bs = in_scale * w_scale
        q = np.clip(np.rint(b / bs), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        return self.sg.tensor(name, (len(q),), "i32", q, scale=bs, axis=0)

    def record_layer(self, op: ir.Op, p: wplan.WeightPlan, tflite_op: str, weight: str) -> None:
        if not self.calibrating:
            self.layers.append({"name": op.name, "weight": weight, "op": op.type,
                                "tflite": tflite_op, **p.report()})
            self.int_ops[tflite_op] += 1

    # ---- the graph ---------------------------------------------------------------------------
    def emit(self) -> None:
        g = self.g
        state_names = [s for s, _ in g.states]
        for name in list(g.inputs) + state_names:
            self.tout(name)
        for i, op in enumerate(g.ops):
            self.key = f"{g.name}/{i}"
            handler = getattr(self, "op_" + op.type, None)
            if handler is None:
                raise ValueError(f"unsupported op {op.type} at {op.name} (TFLite exporter)")
            handler(op)
        outs = list(g.outputs) + [n for _, n in g.states if n not in g.outputs]
        missing = [n for n in outs if n not in self.t]
        if missing:
            raise ValueError(f"graph {g.name}: outputs {missing} are never produced")
        self.sg.set_io([self.t[n] for n in list(g.inputs) + state_names],
                       [self.t[n] for n in outs])

    def floating(self, op: ir.Op) -> None:
        self.float_ops[op.type] += 1

    # ---- quantized and float layers --------------------------------------------------------
    def op_qlinear(self, op: ir.Op) -> None:
        from edgekit.export.tflite import fc

        x, w, b = op.inputs
        act_mode, x_zp = op.ints
        xs, ys = self.shape(x), self.shape(op.outputs[0])
        p = self.weight_plan(w, "fc")
        if self.calibrating:
            self.probe(self.key + "/in", self.tin(x))
            xin = (self.fake_quant(self.tin(x), xs, (op.floats[0], x_zp), op.name + "/x")
                   if act_mode == 0 else self.tin(x))
            fc.emit(self, op.name, xin, xs, p, b, None, self.key, ys, w)
            # The twin's float result is the IR output (a same-shape RESHAPE names it).
            self.reshape(self.probes[self.key + "/out"], ys, op.name + "/y",
                         self.tout(op.outputs[0]))
            return
        qin = (op.floats[0], x_zp) if act_mode == 0 else self.grid(self.key + "/in", True)
        xq = self.quantize(self.tin(x), xs, qin, op.name + "/xq")
        yq = fc.emit(self, op.name, xq, xs, p, b, qin, self.key, ys, w)
        self.dequantize(yq, ys, op.name + "/y", self.tout(op.outputs[0]))
        self.record_layer(op, p, "FULLY_CONNECTED", w)

    def op_linear(self, op: ir.Op) -> None:
        self.floating(op)
        fc = builder._fb().FullyConnectedOptionsT()
        fc.keepNumDims = True
        x, w, b = op.inputs
        self.op("FULLY_CONNECTED", [self.tin(x), self.tin(w), self.tin(b)],
                [self.tout(op.outputs[0])], fc)

    def op_qconv1d(self, op: ir.Op) -> None:
        stride, pl, pr, dil, groups, k, act_mode, x_zp = op.ints
        self._qconv(op, stride, pl, pr, dil, groups, k, act_mode, x_zp, upsample=1)

    def op_qconv_transpose1d(self, op: ir.Op) -> None:
        stride, padding, out_pad, dil, groups, k, act_mode, x_zp = op.ints
        edge = dil * (k - 1) - padding
        self._qconv(op, 1, edge, edge + out_pad, dil, groups, k, act_mode, x_zp,
                    upsample=stride)

    def _qconv(self, op, stride, pl, pr, dil, groups, k, act_mode, x_zp, upsample) -> None:
        from edgekit.export.tflite import conv

        x, w, b = op.inputs
        if (k, groups, stride, upsample, pl, pr) == (1, 1, 1, 1, 0, 0):
            return self._pointwise(op, act_mode, x_zp)
        p = self.weight_plan(w, "conv")
        flip = upsample > 1 or op.type == "qconv_transpose1d"
        # The unfolding filter costs k·Cin·k bytes: worth it only while that stays under a
        # quarter of the weights' Cout·Cin·k·bits/8 (else the re-quantization is reported).
        cheap = k * 32 <= self.shape(op.outputs[0])[1] * p.bits
        if not p.exact and groups == 1 and cheap and self.weight_plan(w, "fc").exact:
            return self._im2col(op, stride, pl, pr, dil, k, act_mode, x_zp, upsample, flip)
        if self.calibrating:
            self.probe(self.key + "/in", self.tin(x))
            xin = (self.fake_quant(self.tin(x), self.shape(x), (op.floats[0], x_zp), op.name + "/x")
                   if act_mode == 0 else self.tin(x))
            wf = p.dequantized()
            y = conv.emit(self, op, xin, wf, None, b, stride, pl, pr, dil, groups, k,
                          upsample, flip, None, None)
            self.probe(self.key + "/out", y)
            return
        qin = (op.floats[0], x_zp) if act_mode == 0 else self.grid(self.key + "/in", True)
        xq = self.quantize(self.tin(x), self.shape(x), qin, op.name + "/xq")
        conv.emit(self, op, xq, p.q, p, b, stride, pl, pr, dil, groups, k, upsample, flip, qin,
                  self.grid(self.key + "/out"))
        self.record_layer(op, p, "DEPTHWISE_CONV_2D" if groups == self.shape(x)[1]
                          and groups > 1 else "CONV_2D", w)

    def _im2col(self, op, stride, pl, pr, dil, k, act_mode, x_zp, upsample, flip) -> None:
        """Group-scaled conv weights: exact through unfold + per-group FCs (conv.py)."""
        from edgekit.export.tflite import conv

        x, w, b = op.inputs
        p = self.weight_plan(w, "fc")
        if self.calibrating:
            self.probe(self.key + "/in", self.tin(x))
            xin = (self.fake_quant(self.tin(x), self.shape(x), (op.floats[0], x_zp),
                                   op.name + "/x") if act_mode == 0 else self.tin(x))
            conv.emit_im2col(self, op, xin, p, b, stride, pl, pr, dil, k, upsample, flip, None)
            return
        qin = (op.floats[0], x_zp) if act_mode == 0 else self.grid(self.key + "/in", True)
        xq = self.quantize(self.tin(x), self.shape(x), qin, op.name + "/xq")
        conv.emit_im2col(self, op, xq, p, b, stride, pl, pr, dil, k, upsample, flip, qin)
        self.record_layer(op, p, "FULLY_CONNECTED (im2col)", w)

    def _pointwise(self, op, act_mode, x_zp) -> None:
        """A 1x1 conv is a FULLY_CONNECTED over (1, T, Cin): LiteRT's FC takes INT2 and
        per-group scales (see fc.py), and XNNPACK runs it faster than a CONV_2D."""
        from edgekit.export.tflite import fc

        x, w, b = op.inputs
        _, cin, T = self.shape(x)
        cout = self.shape(op.outputs[0])[1]
        p = self.weight_plan(w, "fc")
        n = op.name
        if self.calibrating:
            self.probe(self.key + "/in", self.tin(x))
            xin = (self.fake_quant(self.tin(x), (1, cin, T), (op.floats[0], x_zp), n + "/x")
                   if act_mode == 0 else self.tin(x))
            xt = self.transpose(xin, [0, 2, 1], (1, T, cin), n + "/ntc")
            y = fc.emit(self, n, xt, (1, T, cin), p, b, None, self.key, (1, T, cout), w)
            self.transpose(y, [0, 2, 1], (1, cout, T), n + "/ncw", self.tout(op.outputs[0]))
            return
        qin = (op.floats[0], x_zp) if act_mode == 0 else self.grid(self.key + "/in", True)
        xq = self.quantize(self.tin(x), (1, cin, T), qin, n + "/xq")
        xt = self.transpose(xq, [0, 2, 1], (1, T, cin), n + "/ntc")
        yq = fc.emit(self, n, xt, (1, T, cin), p, b, qin, self.key, (1, T, cout), w)
        yt = self.transpose(yq, [0, 2, 1], (1, cout, T), n + "/ncw")
        self.dequantize(yt, (1, cout, T), n + "/y", self.tout(op.outputs[0]))
        self.record_layer(op, p, "FULLY_CONNECTED", w)

    def op_conv1d(self, op: ir.Op) -> None:
        from edgekit.export.tflite import conv

        self.floating(op)
        x, w, b = op.inputs
        stride, pl, pr, dil, groups = op.ints
        wt = np.asarray(self.m.tensors[w].data, np.float32)
        cout, cig, k = wt.shape
        conv.emit(self, op, self.tin(x), wt.reshape(cout, cig * k), None, b, stride, pl,
                  pr, dil, groups, k, 1, False, None, None)

    def op_conv_transpose1d(self, op: ir.Op) -> None:
        from edgekit.export.tflite import conv

        self.floating(op)
        x, w, b = op.inputs
        stride, padding, out_pad, dil, groups = op.ints
        wt = np.asarray(self.m.tensors[w].data, np.float32)
        cin, cog, k = wt.shape
        # The (Cout, Cin/g·k) per-group view of compress.layers.weight_2d.
        w2 = wt.reshape(groups, cin // groups, cog, k).transpose(0, 2, 1, 3)
        w2 = w2.reshape(groups * cog, (cin // groups) * k)
        edge = dil * (k - 1) - padding
        conv.emit(self, op, self.tin(x), w2, None, b, 1, edge, edge + out_pad, dil,
                  groups, k, stride, True, None, None)

    def op_qlstm(self, op: ir.Op) -> None:
        lstm.emit(self, op, quantized=True)

    def op_lstm(self, op: ir.Op) -> None:
        self.floating(op)
        lstm.emit(self, op, quantized=False)

    # ---- float ops ---------------------------------------------------------------------------
    def _simple(self, op: ir.Op, name: str, options=None) -> None:
        self.floating(op)
        self.op(name, [self.tin(i) for i in op.inputs], [self.tout(op.outputs[0])], options)

    def __getattr__(self, attr: str):
        # Table-driven handlers for the plain unary and binary ops.
        if attr.startswith("op_"):
            kind = attr[3:]
            if kind in UNARY:
                return lambda op: self._simple(op, UNARY[kind])
            if kind in BINARY:
                name, opt = BINARY[kind]
                return lambda op: self._simple(op, name, getattr(builder._fb(), opt)())
        raise AttributeError(attr)

    def op_leaky_relu(self, op: ir.Op) -> None:
        opt = builder._fb().LeakyReluOptionsT()
        opt.alpha = float(op.floats[0])
        self._simple(op, "LEAKY_RELU", opt)

    def op_silu(self, op: ir.Op) -> None:
        self.floating(op)
        x, shape = self.tin(op.inputs[0]), self.shape(op.inputs[0])
        s = self.new(op.name + "/sigmoid", shape)
        self.op("LOGISTIC", [x], [s])
        self.op("MUL", [x, s], [self.tout(op.outputs[0])], builder._fb().MulOptionsT())

    def op_glu(self, op: ir.Op) -> None:
        self.floating(op)
        shape = self.shape(op.inputs[0])
        axis = op.ints[0] % len(shape)
        half = list(shape)
        half[axis] //= 2
        a, b = self.new(op.name + "/a", half), self.new(op.name + "/b", half)
        opt = builder._fb().SplitOptionsT()
        opt.numSplits = 2
        self.op("SPLIT", [self.i32(op.name + "/axis", axis), self.tin(op.inputs[0])], [a, b], opt)
        s = self.new(op.name + "/sigmoid", half)
        self.op("LOGISTIC", [b], [s])
        self.op("MUL", [a, s], [self.tout(op.outputs[0])], builder._fb().MulOptionsT())

    def op_clamp(self, op: ir.Op) -> None:
        self.floating(op)
        shape = self.shape(op.inputs[0])
        lo, hi = op.floats
        m = self.new(op.name + "/max", shape)
        self.op("MAXIMUM", [self.tin(op.inputs[0]), self.f32(op.name + "/lo", lo)], [m])
        self.op("MINIMUM", [m, self.f32(op.name + "/hi", hi)], [self.tout(op.outputs[0])])

    def op_layer_norm(self, op: ir.Op) -> None:
        self.floating(op)
        x, gamma, beta = op.inputs
        shape = self.shape(x)
        red = shape[:-1] + (1,)
        n, fb = op.name, builder._fb()
        axis = self.i32(n + "/axis", [len(shape) - 1])
        keep = fb.ReducerOptionsT()
        keep.keepDims = True
        mean, d = self.new(n + "/mean", red), self.new(n + "/centered", shape)
        self.op("MEAN", [self.tin(x), axis], [mean], keep)
        self.op("SUB", [self.tin(x), mean], [d], fb.SubOptionsT())
        sq, var = self.new(n + "/sq", shape), self.new(n + "/var", red)
        self.op("MUL", [d, d], [sq], fb.MulOptionsT())
        self.op("MEAN", [sq, axis], [var], keep)
        ve, r = self.new(n + "/var_eps", red), self.new(n + "/rstd", red)
        self.op("ADD", [var, self.f32(n + "/eps", op.floats[0])], [ve], fb.AddOptionsT())
        stats, rstds = [mean, d, sq, var, ve], [r]
        if self.opts.get("full_integer") and self.opts.get("norm_bits") == 16:
            # int16 statistics: LiteRT's int16 RSQRT is a table that needs repair (int8's
            # is exact per input step, and float needs none)
            r0, r1 = self.new(n + "/rstd0", red), self.new(n + "/rstd1", red)
            self.op("RSQRT", [ve], [r0])
            rstds += [r0, r1]
            stats += self._newton_rsqrt(n + "/n1", ve, r0, r1, red)
            stats += self._newton_rsqrt(n + "/n2", ve, r1, r, red)
        else:
            self.op("RSQRT", [ve], [r])
        i = self.sg.index
        self.range_hints[(i, mean)] = ("cover", (i, self.tin(x)))
        self.range_hints.update({(i, t): ("rsqrt_cap", (i, ve)) for t in rstds})
        out = self.tout(op.outputs[0])
        steps = [("MUL", r, fb.MulOptionsT())]
        if gamma is not None:
            steps.append(("MUL", self.tin(gamma), fb.MulOptionsT()))
        if beta is not None:
            steps.append(("ADD", self.tin(beta), fb.AddOptionsT()))
        cur, made = d, stats + rstds
        for j, (name, other, opt) in enumerate(steps):
            o = out if j == len(steps) - 1 else self.new(f"{n}/ln{j}", shape)
            self.op(name, [cur, other], [o], opt)
            cur = o
            made.append(o)
        self.wide.update({(self.sg.index, t): "norm" for t in made})

    def _newton_rsqrt(self, n: str, v: int, r0: int, r: int, shape) -> list[int]:
        """r = r0·(1.5 − 0.5·v·r0²), one Newton step on r0 ≈ 1/sqrt(v) (two are used: error
        e → 1.5·e² each), written only for int16 LayerNorm statistics: it repairs LiteRT's
        int16 RSQRT, a table whose error grows to ~9 % for inputs near 1 % of the grid's top
        and ~14 % at 0.1 % (rows of small variance). In float it changes nothing. The
        product is formed as (v·r0)·r0 so no intermediate spans more than sqrt of v's range;
        the ones that sit at ~1 get fixed grids with headroom for r0's error (`range_hints`)."""
        fb = builder._fb()
        a, b, h, c = (self.new(f"{n}/newton_{k}", shape) for k in "abhc")
        self.op("MUL", [v, r0], [a], fb.MulOptionsT())
        self.op("MUL", [a, r0], [b], fb.MulOptionsT())
        self.op("MUL", [b, self.f32(n + "/minus_half", -0.5)], [h], fb.MulOptionsT())
        self.op("ADD", [h, self.f32(n + "/three_halves", 1.5)], [c], fb.AddOptionsT())
        self.op("MUL", [r0, c], [r], fb.MulOptionsT())
        hints = {a: ("margin", 1.25), b: ("fixed", 0.0, 2.0), h: ("fixed", -1.0, 0.0),
                 c: ("fixed", 0.0, 1.5)}
        self.range_hints.update({(self.sg.index, t): v for t, v in hints.items()})
        return [a, b, h, c]

    def op_softmax(self, op: ir.Op) -> None:
        self.floating(op)
        shape = self.shape(op.inputs[0])
        axis, last = op.ints[0] % len(shape), len(shape) - 1
        opt = builder._fb().SoftmaxOptionsT()
        opt.beta = 1.0
        if axis == last:
            self.op("SOFTMAX", [self.tin(op.inputs[0])], [self.tout(op.outputs[0])], opt)
            return
        perm = list(range(len(shape)))
        perm[axis], perm[last] = last, axis
        tshape = [shape[i] for i in perm]
        t = self.transpose(self.tin(op.inputs[0]), perm, tshape, op.name + "/t")
        s = self.new(op.name + "/softmax", tshape)
        self.op("SOFTMAX", [t], [s], opt)
        self.transpose(s, perm, shape, op.name + "/back", self.tout(op.outputs[0]))

    def op_where(self, op: ir.Op) -> None:
        self.floating(op)
        c, a, b = op.inputs
        cb = self.new(op.name + "/cond", self.shape(c), "bool")
        self.op("CAST", [self.tin(c)], [cb])
        self.op("SELECT_V2", [cb, self.tin(a), self.tin(b)], [self.tout(op.outputs[0])])

    def op_equal(self, op: ir.Op) -> None:
        self.floating(op)
        e = self.new(op.name + "/eq", self.shape(op.outputs[0]), "bool")
        self.op("EQUAL", [self.tin(i) for i in op.inputs], [e])
        self.op("CAST", [e], [self.tout(op.outputs[0])])

    def op_reshape(self, op: ir.Op) -> None:
        self.floating(op)
        self.reshape(self.tin(op.inputs[0]), self.shape(op.outputs[0]), op.name,
                     self.tout(op.outputs[0]))

    def op_copy(self, op: ir.Op) -> None:
        self.op_reshape(op)  # a same-shape RESHAPE: LiteRT needs a distinct output tensor

    def op_transpose(self, op: ir.Op) -> None:
        self.floating(op)
        self.transpose(self.tin(op.inputs[0]), op.ints, self.shape(op.outputs[0]), op.name,
                       self.tout(op.outputs[0]))

    def op_concat(self, op: ir.Op) -> None:
        opt = builder._fb().ConcatenationOptionsT()
        opt.axis = op.ints[0] % len(self.shape(op.outputs[0]))
        self._simple(op, "CONCATENATION", opt)

    def op_slice(self, op: ir.Op) -> None:
        self.floating(op)
        axis, start, end, step = op.ints
        shape = self.shape(op.inputs[0])
        axis %= len(shape)
        begin, stop, strides = [0] * len(shape), list(shape), [1] * len(shape)
        begin[axis], stop[axis], strides[axis] = start, end, step
        opt = builder._fb().StridedSliceOptionsT()
        n = op.name
        self.op("STRIDED_SLICE", [self.tin(op.inputs[0]), self.i32(n + "/b", begin),
                                  self.i32(n + "/e", stop), self.i32(n + "/s", strides)],
                [self.tout(op.outputs[0])], opt)

    def op_pad(self, op: ir.Op) -> None:
        self.floating(op)
        axis, before, after = op.ints
        shape = self.shape(op.inputs[0])
        pads = np.zeros((len(shape), 2), np.int32)
        pads[axis % len(shape)] = (before, after)
        self.op("PADV2", [self.tin(op.inputs[0]), self.i32(op.name + "/pads", pads),
                          self.f32(op.name + "/value", op.floats[0])],
                [self.tout(op.outputs[0])])

    def op_gather(self, op: ir.Op) -> None:
        opt = builder._fb().GatherOptionsT()
        opt.axis = op.ints[0] % len(self.shape(op.inputs[0]))
        self._simple(op, "GATHER", opt)

    def op_cast(self, op: ir.Op) -> None:
        if op.ints[0] not in CAST_CODES:
            raise ValueError(f"cast at {op.name}: unknown dtype code {op.ints[0]}")
        self._simple(op, "CAST")

    def op_reduce_mean(self, op: ir.Op) -> None:
        self.floating(op)
        axis, keep = op.ints
        opt = builder._fb().ReducerOptionsT()
        opt.keepDims = bool(keep)
        ax = self.i32(op.name + "/axis", [axis % len(self.shape(op.inputs[0]))])
        self.op("MEAN", [self.tin(op.inputs[0]), ax], [self.tout(op.outputs[0])], opt)

    def op_nearest(self, op: ir.Op) -> None:
        # |x - v| over a trailing axis of the L values, ARG_MIN (first index on ties, as the
        # IR says), GATHER the winning value.
        self.floating(op)
        x, v = op.inputs
        shape, L = self.shape(x), self.shape(v)[0]
        n, fb = op.name, builder._fb()
        xe = self.reshape(self.tin(x), shape + (1,), n + "/expand")
        d, a = self.new(n + "/diff", shape + (L,)), self.new(n + "/absdiff", shape + (L,))
        self.op("SUB", [xe, self.tin(v)], [d], fb.SubOptionsT())
        self.op("ABS", [d], [a])
        idx = self.new(n + "/idx", shape, "i32")
        opt = fb.ArgMinOptionsT()
        opt.outputType = fb.TensorType.INT32
        self.op("ARG_MIN", [a, self.i32(n + "/axis", [len(shape)])], [idx], opt)
        g = fb.GatherOptionsT()
        self.op("GATHER", [self.tin(v), idx], [self.tout(op.outputs[0])], g)
