"""Which ops of a lowered graph round differently from torch's CPU kernels?

Every intermediate of one graph is published as a graph output, the file is run on the C++
runtime (`Session`) and, op by op, torch recomputes each op from the *runtime's own inputs*:
an op whose result is not bit-identical to torch's is one whose float rounding differs. The
q-ops are recomputed through their compressed torch module, whose calibrated forward is the
runtime's integer arithmetic (`edgekit.compress.layers.exact_linear`), so they must show no
difference at all; the float ops (LayerNorm, softmax, matmul, SiLU, GLU) do, by a few ulps.
Then the end-to-end SNR of the runtime vs the compressed model is printed. `--gemm-order`
shows why the fake-quant float GEMM the compressed model used before could not be matched.

    .venv/bin/python scripts/parity_probe.py conformer --size tiny --recipe int8
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekit import models
from edgekit.compress import compress
from edgekit.export import ekm, parity
from edgekit.export.lower import lower, zoo_graphs
from edgekit.export.lower.models import example_feeds
from edgekit.export.pipeline import calibrate_activations


def build(name: str, size: str, recipe: str, calib_n: int):
    """(fp32, compressed, specs, ir.Model) as `edgekit export` builds them."""
    fp32 = models.build(name, size)
    ex = models.info(name, size)["example_input"]
    calib = [ex(batch=1, seconds=1.0, seed=1000 + i) for i in range(calib_n)]
    q = compress(fp32, recipe, calib=calib)
    calibrate_activations(q, calib)
    specs = zoo_graphs(name, q)
    return fp32, q, specs, lower(q, specs)


def publish_all(mir, graph: str):
    """A copy of `mir` whose graph `graph` also outputs every activation it computes."""
    m = copy.copy(mir)
    m.tensors = dict(mir.tensors)
    g = copy.copy(mir.graphs[graph])
    extra = []
    for op in g.ops:
        for o in op.outputs:
            t = m.tensors[o]
            if t.kind == "activation":
                m.tensors[o] = copy.copy(t)
                m.tensors[o].kind = "output"
                extra.append(o)
    g.outputs = list(g.outputs) + extra
    m.graphs = {graph: g}
    return m


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def torch_op(op, args, q):
    """torch's result for one IR op on the given numpy inputs (None: not checked)."""
    x = [None if a is None else _t(a) for a in args]
    f = op.floats
    t = op.type
    if t == "layer_norm":
        return F.layer_norm(x[0], (x[0].shape[-1],), x[1], x[2], f[0])
    if t == "softmax":
        return torch.softmax(x[0], op.ints[0])
    if t == "matmul":
        return torch.matmul(x[0], x[1])
    if t in ("add", "sub", "mul", "div"):
        return getattr(torch, t)(x[0], x[1])
    if t == "silu":
        return F.silu(x[0])
    if t == "sigmoid":
        return torch.sigmoid(x[0])
    if t == "tanh":
        return torch.tanh(x[0])
    if t == "glu":
        return F.glu(x[0], op.ints[0])
    if t == "relu":
        return F.relu(x[0])
    if t in ("qlinear", "qconv1d"):
        mod = q.get_submodule(op.name)
        y = mod(x[0])
        if t == "qconv1d" and (op.ints[1] or op.ints[2]):   # IR pads explicitly
            y = mod(F.pad(x[0], (op.ints[1], op.ints[2])))
        return y
    return None


FLOAT_OPS = ("layer_norm", "softmax", "matmul", "silu", "sigmoid", "tanh", "glu", "add", "sub",
             "mul", "div", "relu")
Q_OPS = ("qlinear", "qconv1d")


def hybrid(q, as_torch):
    """An Interpreter class whose ops in `as_torch` are computed by torch (`torch_op`)."""
    from edgekit.export.interp import Interpreter

    class Hybrid(Interpreter):
        pass
    for t in as_torch:
        base = getattr(Interpreter, "_op_" + t)

        def f(self, op, *args, _base=base):
            vals = [None if isinstance(a, str) else a for a in args]
            with torch.no_grad():
                r = torch_op(op, vals, q)
            return _base(self, op, *args) if r is None else r.numpy().astype(np.float32)
        setattr(Hybrid, "_op_" + t, f)
    return Hybrid


VARIANTS = {"A": FLOAT_OPS, "B": Q_OPS, "C": FLOAT_OPS + Q_OPS,
            "L": FLOAT_OPS + ("qlinear",), "V": FLOAT_OPS + ("qconv1d",)}


def what_if(name, size, recipe, calib_n, steps, variants="ABCLV", built=None, quiet=False):
    """End-to-end SNRs that separate the two sources of rounding difference:
    A: float ops as torch, q-ops by the kernels (int32-exact) vs the compressed model: with the
       compressed model's integer-exact q-ops this is inf unless the hybrid is wrong;
    B: float ops as numpy, q-ops as torch modules vs the compressed model: the float ops' cost;
    C: float ops and q-ops as torch vs the compressed model (checks the hybrid itself);
    D: the C++ runtime vs A (needs A): what the runtime's float ops alone cost;
    L / V: as C but only qlinear (L) or only qconv1d (V) through torch.
    Returns {graph/output: {"runtime": dB, variant: dB, ...}}; `built`: a `build` result."""
    if not parity.runtime_available():
        raise RuntimeError("the C++ runtime (edgekit._C) is not built: run `make build`")
    fp32, q, specs, mir = built or build(name, size, recipe, calib_n)
    feeds = example_feeds(name, fp32, specs, steps, seed=0)
    res = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.ekm"
        ekm.write(mir, path)
        for spec in specs:
            f = feeds[spec.name]
            ref = parity.run_steps(parity.TorchRunner(q, spec), f)
            runs = {k: parity.run_steps(hybrid(q, VARIANTS[k])(mir, spec.name), f)
                    for k in variants}
            runs["runtime"] = parity.run_steps(parity.SessionRunner(path, spec.name), f)

            def db(x, y, o):
                return parity.snr_db(np.concatenate([v.ravel() for v in x[o]]),
                                     np.concatenate([v.ravel() for v in y[o]]))
            for o in ref:
                row = {k: db(ref, v, o) for k, v in runs.items()}
                if "A" in runs:
                    row["D"] = db(runs["A"], runs["runtime"], o)
                res[f"{spec.name}/{o}"] = row
                if not quiet:
                    print(f"  what-if {spec.name}/{o}: "
                          + " | ".join(f"{k} {v:.1f}" for k, v in row.items()))
    return res


def onnx_exact(name, size, recipe, calib_n, steps):
    """onnxruntime on the `exact_act=True` ONNX file (activation grids rounded like the IR,
    q-ops as DequantizeLinear + float MatMul/Conv) vs the compressed model: a float-GEMM
    runtime that is not torch's own GEMM."""
    from edgekit.export import onnx as ek_onnx
    fp32, q, specs, mir = build(name, size, recipe, calib_n)
    feeds = example_feeds(name, fp32, specs, steps, seed=0)
    with tempfile.TemporaryDirectory() as d:
        rep = ek_onnx.export(mir, Path(d) / "exact.onnx", exact_act=True)
        for spec in specs:
            f = feeds[spec.name]
            ref = parity.run_steps(parity.TorchRunner(q, spec), f)
            got = parity.run_steps(parity.OrtRunner(rep["files"][spec.name]["path"], mir,
                                                    spec.name), f)
            for o in ref:
                db = parity.snr_db(np.concatenate([v.ravel() for v in ref[o]]),
                                   np.concatenate([v.ravel() for v in got[o]]))
                print(f"  onnxruntime exact_act {spec.name}/{o}: {db:.1f} dB vs compressed")


def gemm_order(shapes=((1, 192, 768), (8, 192, 768), (32, 144, 576), (8, 768, 192))):
    """Fraction of torch's float32 `F.linear` outputs equal to a sequential FMA chain over k
    (emulated in float64: a product of two floats is exact there, one rounding per step) and
    to the exactly rounded sum: whether a runtime could reproduce torch's GEMM rounding."""
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        x = rng.integers(-128, 128, (m, k)).astype(np.float32) * np.float32(0.0371)
        w = (rng.integers(-127, 128, (n, k)).astype(np.float32)
             * rng.uniform(1e-3, 1e-2, (n, 1)).astype(np.float32))
        y = F.linear(_t(x), _t(w)).numpy()
        c = np.zeros((m, n), np.float32)
        for i in range(k):
            c = (c + x[:, i:i + 1].astype(np.float64) * w[:, i].astype(np.float64)).astype(
                np.float32)
        exact = (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.float32)
        print(f"  F.linear (M, K, N) = {(m, k, n)}: equal to sequential FMA "
              f"{np.mean(y == c):.0%}, to the exact sum {np.mean(y == exact):.0%}")


def _op_args(op, env, mir):
    """The op's inputs as numpy (None for absent/packed operands), or None when one is
    neither computed nor a constant."""
    args = []
    for i in op.inputs:
        t = None if i is None else mir.tensors[i]
        if i is None or t.dtype == "packed":
            args.append(None)
        elif i in env:
            args.append(env[i])
        elif t.data is not None:
            args.append(np.asarray(t.data))
        else:
            return None
    return args


def probe(name, size, recipe, calib_n, steps, graph_filter=None, built=None, quiet=False):
    """Print, per op type, how many of the runtime's op results differ from torch's on the
    same (runtime-computed) inputs: elements differing, the largest difference in ulps, and
    the largest difference relative to the tensor's largest magnitude (ulps near zero are
    large and harmless; the relative figure is what moves a rounding boundary). Returns
    {graph: {op type: [checked, differing, elements differing, max ulp, max relative]}};
    `built`: a `build` result."""
    from edgekit.runtime import Session
    fp32, q, specs, mir = built or build(name, size, recipe, calib_n)
    result = {}
    feeds = example_feeds(name, fp32, specs, steps, seed=0)
    for spec in [s for s in specs if graph_filter in (None, s.name)]:
        g = mir.graphs[spec.name]
        ref = parity.run_steps(parity.TorchRunner(q, spec), feeds[spec.name])
        # op type -> [checked, differing, elements differing, max ulp, max relative]
        diff = defaultdict(lambda: [0, 0, 0, 0, 0.0])
        outs_all = []
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "probe.ekm"
            ekm.write(publish_all(mir, spec.name), path)
            s = Session(str(path), graph=spec.name, threads=1)
            s.reset()
            for feed in feeds[spec.name]:
                env = {**feed, **{st: np.array(v) for st, v in s.state().items()}}
                outs_all.append({n: np.asarray(v) for n, v in s.step(feed).items()})
                env.update(outs_all[-1])
                for op in g.ops:
                    args = _op_args(op, env, mir)
                    if args is None or op.outputs[0] not in env:
                        continue
                    with torch.no_grad():
                        want = torch_op(op, args, q)
                    if want is None:
                        continue
                    got = env[op.outputs[0]]
                    want = want.numpy().reshape(got.shape)
                    bad = want != got
                    row = diff[op.type]
                    row[0] += 1
                    if bad.any():
                        ulp = np.abs(want.view(np.int32).astype(np.int64)
                                     - got.view(np.int32).astype(np.int64))[bad].max()
                        rel = np.abs(want - got).max() / max(np.abs(want).max(), 1e-30)
                        row[1:] = [row[1] + 1, row[2] + int(bad.sum()), max(row[3], int(ulp)),
                                   max(row[4], float(rel))]
        result[spec.name] = {t: list(r) for t, r in diff.items()}
        if quiet:
            continue
        print(f"== {name} {size} {recipe} graph {spec.name}: runtime op results that differ "
              f"from torch's on the same inputs")
        print(f"{'op':12s} {'checked':>8s} {'differ':>7s} {'elems':>8s} {'max ulp':>8s} "
              f"{'max rel':>9s}")
        for t, (n, nd, ne, mu, mr) in sorted(diff.items()):
            print(f"{t:12s} {n:8d} {nd:7d} {ne:8d} {mu:8d} {mr:9.1e}")
        for o in g.outputs:
            db = parity.snr_db(np.concatenate([x.ravel() for x in ref[o]]),
                               np.concatenate([x[o].ravel() for x in outs_all]))
            print(f"  end-to-end {o}: {db:.1f} dB vs compressed")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--recipe", default="int8")
    ap.add_argument("--calib", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--graph", default=None)
    ap.add_argument("--what-if", action="store_true", help="also the hybrid interpreter runs")
    ap.add_argument("--gemm-order", action="store_true", help="also torch's GEMM rounding")
    ap.add_argument("--onnx-exact", action="store_true", help="also onnxruntime, exact_act")
    ap.add_argument("--only-what-if", action="store_true", help="only the hybrid runs")
    a = ap.parse_args()
    if a.model not in models.names():
        ap.error(f"unknown model {a.model!r}; zoo models: {', '.join(models.names())}")
    if a.calib < 1 or a.steps < 1:
        ap.error("--calib and --steps must be >= 1")
    if not parity.runtime_available():
        ap.error("the C++ runtime (edgekit._C) is not built: run `make build`")
    torch.set_num_threads(1)
    try:
        if not a.only_what_if:
            probe(a.model, a.size, a.recipe, a.calib, a.steps, a.graph)
        if a.what_if or a.only_what_if:
            what_if(a.model, a.size, a.recipe, a.calib, a.steps)
        if a.gemm_order:
            gemm_order()
        if a.onnx_exact:
            onnx_exact(a.model, a.size, a.recipe, a.calib, a.steps)
    except ValueError as exc:   # bad --size / --recipe, reported by the zoo or compress
        ap.error(str(exc).strip().splitlines()[0])

if __name__ == "__main__":
    main()
