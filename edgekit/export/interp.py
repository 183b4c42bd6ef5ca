"""A small numpy reference interpreter of IR graphs (docs/format.md §2.6).

The oracle for the lowering when the C++ runtime is not there: it runs an `ir.Model` graph op
by op. The quantized ops compute exactly what §2.6 says — input rounded onto the int8 grid,
the int8 codes multiplied with the packed weights by `edgekit.kernels` (the real packed
kernels, int32 accumulation), dequantized by the kernels' float epilogue — never a float
matmul with dequantized weights. Everything else is plain float32 numpy.

    it = Interpreter(model_ir)            # graph None: META streaming graph, else the only one
    outs = it.step({"chunk": x})         # one call, state carried
    it.reset()
"""

from __future__ import annotations

import numpy as np

from edgekit.export import ir

F32 = np.float32


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x))).astype(F32)


def quantize(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """q = clamp(nearbyint(x * (1/scale)) + zp, -128, 127), in float32 like torch's fake-quant."""
    inv = F32(1.0) / F32(scale)
    return np.clip(np.rint(x.astype(F32) * inv) + zp, -128, 127).astype(np.int8)


class _Q:
    """Packed-weight matmuls through edgekit.kernels (parsed once per weight)."""

    def __init__(self, tensors: dict[str, ir.Tensor]):
        self.tensors = tensors
        self.cache: dict[str, object] = {}

    def weights(self, name: str):
        if name not in self.cache:
            from edgekit import kernels
            self.cache[name] = kernels.PackedWeights.from_bytes(self.tensors[name].data)
        return self.cache[name]

    def matmul(self, x2d: np.ndarray, wname: str, mode: int, scale: float, zp: int, bias=None):
        """x2d (M, K) float -> (M, N) float32 per §2.6 (static or dynamic grid)."""
        from edgekit import kernels
        pw = self.weights(wname)
        if mode == 0:
            q = quantize(x2d, scale, zp)
            return kernels.linear_f32(q, pw, F32(scale), zp, bias)
        amax = np.abs(x2d).max(axis=1).astype(F32)
        s = np.where(amax > 0, amax / F32(127.0), F32(1.0)).astype(F32)
        q = np.clip(np.rint(x2d * (F32(1.0) / s)[:, None]), -128, 127).astype(np.int8)
        acc = kernels.accumulate(q, pw, 0).astype(F32)       # (M, N, groups)
        w_scale = pw.sections.scales.astype(F32)              # (N, groups)
        y = s[:, None] * (acc * w_scale[None]).sum(-1, dtype=F32)
        return y if bias is None else (y + bias).astype(F32)


def _im2col(x: np.ndarray, k: int, stride: int, dil: int, groups: int):
    """(Cin, Tpad) -> (groups * Tout, Cin/g * k) rows in (ci, tap) order, group-major."""
    cin, tp = x.shape
    tout = (tp - dil * (k - 1) - 1) // stride + 1
    idx = np.arange(tout)[:, None] * stride + np.arange(k)[None, :] * dil   # (Tout, k)
    cols = x[:, idx]                                                        # (Cin, Tout, k)
    cg = cin // groups
    cols = cols.reshape(groups, cg, tout, k).transpose(0, 2, 1, 3)          # (g, Tout, cg, k)
    return cols.reshape(groups * tout, cg * k), tout


def _group_diag(y: np.ndarray, groups: int, tout: int, cout: int) -> np.ndarray:
    """(g*Tout, Cout) with every group's rows against all outputs -> (Cout, Tout) of own group."""
    og = cout // groups
    y = y.reshape(groups, tout, groups, og)
    return np.stack([y[g, :, g, :] for g in range(groups)]).transpose(0, 2, 1).reshape(cout, tout)


class Interpreter:
    """Runs one graph of an `ir.Model`, keeping its streaming state between `step` calls."""

    def __init__(self, model: ir.Model, graph: str | None = None):
        if graph is None:
            st = model.meta.get("streaming") or {}
            only = next(iter(model.graphs)) if len(model.graphs) == 1 else None
            graph = st.get("graph") or only
            if graph is None:
                raise ValueError(f"model has graphs {list(model.graphs)}: name one")
        if graph not in model.graphs:
            raise ValueError(f"no graph {graph!r}; have {', '.join(model.graphs)}")
        self.model, self.graph = model, model.graphs[graph]
        self.q = _Q(model.tensors)
        self.state: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """Zero every state tensor of the graph."""
        t = self.model.tensors
        self.state = {s: np.zeros(t[s].shape, ir.NP_DTYPES[t[s].dtype])
                      for s, _ in self.graph.states}

    def step(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of the graph with the carried state; returns its outputs by name."""
        env: dict[str, np.ndarray] = dict(self.state)
        for name in self.graph.inputs:
            if name not in inputs:
                raise ValueError(f"missing input {name!r}")
            t = self.model.tensors[name]
            a = np.asarray(inputs[name])
            if tuple(a.shape) != t.shape:
                raise ValueError(f"input {name!r} must have shape {t.shape}, got {a.shape}")
            env[name] = a.astype(ir.NP_DTYPES[t.dtype])
        for op in self.graph.ops:
            args = [None if i is None else self._get(env, i) for i in op.inputs]
            try:
                outs = getattr(self, "_op_" + op.type)(op, *args)
            except Exception as exc:
                raise RuntimeError(f"{op.type} at {op.name}: {exc}") from exc
            outs = outs if isinstance(outs, tuple) else (outs,)
            for name, v in zip(op.outputs, outs):
                want = self.model.tensors[name].shape
                if tuple(v.shape) != want:
                    raise RuntimeError(f"{op.type} at {op.name}: shape {v.shape} != {want}")
                env[name] = v
        self.state = {s: env[n].copy() for s, n in self.graph.states}
        return {o: env[o] for o in self.graph.outputs}

    def _get(self, env, name):
        if name in env:
            return env[name]
        t = self.model.tensors[name]
        if t.kind != "const":
            raise RuntimeError(f"tensor {name!r} read before it is written")
        return name if t.dtype == "packed" else t.data

    # -- quantized ---------------------------------------------------------------------
    def _op_qlinear(self, op, x, w, bias):
        mode, zp = op.ints
        y = self.q.matmul(x.reshape(-1, x.shape[-1]), w, mode, op.floats[0], zp, bias)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _op_qconv1d(self, op, x, w, bias):
        stride, pl, pr, dil, groups, k, mode, zp = op.ints
        scale = op.floats[0]
        # pad with the value that quantizes to the zero point (a real 0)
        xp = np.pad(x[0], ((0, 0), (pl, pr)))
        cols, tout = _im2col(xp, k, stride, dil, groups)
        cout = self.model.tensors[w].shape[0]
        y = self.q.matmul(cols, w, mode, scale, zp, bias)
        return _group_diag(y, groups, tout, cout)[None]

    def _op_qconv_transpose1d(self, op, x, w, bias):
        stride, pad, opad, dil, groups, k, mode, zp = op.ints
        cin, t = x.shape[1:]
        cout = self.model.tensors[w].shape[0]
        tout = (t - 1) * stride - 2 * pad + dil * (k - 1) + opad + 1
        # output o reads input t at tap j when o = t*stride - pad + j*dil: gather those into
        # im2col rows; positions with no input read a real 0 (which quantizes to zp exactly)
        o = np.arange(tout)[:, None] + pad - np.arange(k)[None, :] * dil      # (Tout, k)
        ti = o // stride
        ok = (o % stride == 0) & (ti >= 0) & (ti < t)
        cols = np.where(ok[None], x[0][:, np.clip(ti, 0, t - 1)], F32(0))  # (Cin, Tout, k)
        cg = cin // groups
        cols = cols.reshape(groups, cg, tout, k).transpose(0, 2, 1, 3)
        cols = cols.reshape(groups * tout, cg * k)
        y = self.q.matmul(cols.astype(F32), w, mode, op.floats[0], zp, bias)
        return _group_diag(y, groups, tout, cout)[None]

    def _op_qlstm(self, op, x, h, c, w_ih, w_hh, b_ih, b_hh):
        mode, x_zp, h_zp = op.ints
        x_scale, h_scale = op.floats
        gx = self.q.matmul(x[0], w_ih, mode, x_scale, x_zp)
        h, c = h.astype(F32), c.astype(F32)
        ys = []
        for t in range(x.shape[1]):
            g = gx[t:t + 1] + self.q.matmul(h, w_hh, 0, h_scale, h_zp)
            if b_ih is not None:
                g = g + b_ih
            if b_hh is not None:
                g = g + b_hh
            h, c = self._cell(g, c)
            ys.append(h)
        return np.stack(ys, 1), h, c

    @staticmethod
    def _cell(g, c):
        i, f, gg, o = np.split(g.astype(F32), 4, axis=-1)
        c = (_sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)).astype(F32)
        return (_sigmoid(o) * np.tanh(c)).astype(F32), c

    # -- float layers ------------------------------------------------------------------
    def _op_linear(self, op, x, w, bias):
        y = x @ w.T
        return (y if bias is None else y + bias).astype(F32)

    def _op_conv1d(self, op, x, w, bias):
        stride, pl, pr, dil, groups = op.ints
        cout, cg, k = w.shape
        cols, tout = _im2col(np.pad(x[0], ((0, 0), (pl, pr))), k, stride, dil, groups)
        cols = cols.reshape(groups, tout, cg * k)
        wg = w.reshape(groups, cout // groups, cg * k)
        y = np.einsum("gtk,gok->got", cols, wg).reshape(cout, tout)
        y = y if bias is None else y + bias[:, None]
        return y[None].astype(F32)

    def _op_conv_transpose1d(self, op, x, w, bias):
        stride, pad, opad, dil, groups = op.ints
        cin, og, k = w.shape
        t = x.shape[2]
        full = (t - 1) * stride + dil * (k - 1) + 1 + opad
        y = np.zeros((groups * og, full), F32)
        cg = cin // groups
        for g in range(groups):
            xg = x[0, g * cg:(g + 1) * cg]                   # (cg, T)
            for j in range(k):
                contrib = w[g * cg:(g + 1) * cg, :, j].T @ xg  # (og, T)
                y[g * og:(g + 1) * og, j * dil: j * dil + (t - 1) * stride + 1: stride] += contrib
        tout = full - 2 * pad
        y = y[:, pad:pad + tout]
        y = y if bias is None else y + bias[:, None]
        return y[None].astype(F32)

    def _op_lstm(self, op, x, h, c, w_ih, w_hh, b_ih, b_hh):
        h, c = h.astype(F32), c.astype(F32)
        ys = []
        for t in range(x.shape[1]):
            g = x[:, t] @ w_ih.T + h @ w_hh.T
            g = g + (0 if b_ih is None else b_ih) + (0 if b_hh is None else b_hh)
            h, c = self._cell(g, c)
            ys.append(h)
        return np.stack(ys, 1), h, c

    def _op_layer_norm(self, op, x, g, b):
        m = x.mean(-1, keepdims=True, dtype=F32)
        v = ((x - m) ** 2).mean(-1, keepdims=True, dtype=F32)
        y = (x - m) / np.sqrt(v + F32(op.floats[0]))
        y = y if g is None else y * g
        return (y if b is None else y + b).astype(F32)

    def _op_softmax(self, op, x):
        e = np.exp(x - x.max(axis=op.ints[0], keepdims=True))
        return (e / e.sum(axis=op.ints[0], keepdims=True)).astype(F32)

    def _op_matmul(self, op, a, b):
        return np.matmul(a, b).astype(F32)

    # -- elementwise -------------------------------------------------------------------
    def _op_add(self, op, a, b): return a + b
    def _op_sub(self, op, a, b): return a - b
    def _op_mul(self, op, a, b): return a * b
    def _op_div(self, op, a, b): return a / b
    def _op_where(self, op, c, a, b): return np.where(c != 0, a, b)
    def _op_equal(self, op, a, b): return (a == b).astype(np.uint8)
    def _op_relu(self, op, x): return np.maximum(x, F32(0))
    def _op_leaky_relu(self, op, x): return np.where(x >= 0, x, x * F32(op.floats[0])).astype(F32)
    def _op_silu(self, op, x): return (x * _sigmoid(x)).astype(F32)
    def _op_sigmoid(self, op, x): return _sigmoid(x)
    def _op_tanh(self, op, x): return np.tanh(x)
    def _op_exp(self, op, x): return np.exp(x)
    def _op_log(self, op, x): return np.log(x)
    def _op_sqrt(self, op, x): return np.sqrt(x)
    def _op_neg(self, op, x): return -x
    def _op_abs(self, op, x): return np.abs(x)
    def _op_clamp(self, op, x): return np.clip(x, F32(op.floats[0]), F32(op.floats[1]))

    def _op_glu(self, op, x):
        a, b = np.split(x, 2, axis=op.ints[0])
        return (a * _sigmoid(b)).astype(F32)

    # -- shape -------------------------------------------------------------------------
    def _op_reshape(self, op, x): return x.reshape(op.ints)
    def _op_transpose(self, op, x): return np.ascontiguousarray(x.transpose(op.ints))
    def _op_copy(self, op, x): return x.copy()

    def _op_concat(self, op, *xs):
        return np.concatenate(xs, axis=op.ints[0])

    def _op_slice(self, op, x):
        axis, start, end, step = op.ints
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(start, end, step)
        return x[tuple(sl)].copy()

    def _op_pad(self, op, x):
        axis, before, after = op.ints
        widths = [(0, 0)] * x.ndim
        widths[axis] = (before, after)
        return np.pad(x, widths, constant_values=op.floats[0]).astype(x.dtype)

    def _op_gather(self, op, table, idx):
        axis = op.ints[0]
        if idx.size and (idx.min() < 0 or idx.max() >= table.shape[axis]):
            raise ValueError("gather index out of range")
        return np.take(table, idx, axis=axis)

    def _op_cast(self, op, x):
        return x.astype(ir.NP_DTYPES[{v: k for k, v in ir.DTYPES.items()}[op.ints[0]]])

    def _op_nearest(self, op, x, values):
        idx = np.abs(x[..., None] - values).argmin(-1)   # argmin: first of ties = lower index
        return values[idx]

    def _op_reduce_mean(self, op, x):
        return x.mean(axis=op.ints[0], keepdims=bool(op.ints[1]), dtype=F32)
