"""Which ops of a lowered graph round differently from torch's CPU kernels?

Every intermediate of one graph is published as a graph output, the file is run on the C++
runtime (`Session`) and, op by op, torch recomputes each op from the *runtime's own inputs*:
an op whose result is not bit-identical to torch's is one whose float rounding differs (the
q-ops are recomputed through their compressed torch module, i.e. fake-quant + float GEMM).
Then the end-to-end SNR of the runtime vs the compressed model is printed.

    .venv/bin/python scripts/parity_probe.py conformer --size tiny --recipe int8
"""

from __future__ import annotations

import argparse
import copy
import math
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
    A: float ops as torch, q-ops int32-exact (the C++ q-ops) vs the compressed model: what a
       runtime whose every float op rounds exactly like torch would reach;
    B: float ops as numpy, q-ops as torch (fake-quant + float GEMM) vs the compressed model;
    C: float ops and q-ops as torch vs the compressed model (checks the hybrid itself);
    D: the C++ runtime vs A (needs A): what the runtime's float ops alone cost when the
       reference accumulates the q-ops exactly too;
    L / V: as C but only qlinear (L) or only qconv1d (V) through torch.
    Returns {graph/output: {"runtime": dB, variant: dB, ...}}; `built`: a `build` result."""
    from edgekit.runtime import Session  # noqa: F401  (fail early without the extension)
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


def probe(name, size, recipe, calib_n, steps, graph_filter=None):
    from edgekit.runtime import Session
    fp32, q, specs, mir = build(name, size, recipe, calib_n)
    feeds = example_feeds(name, fp32, specs, steps, seed=0)
    for spec in specs:
        if graph_filter and spec.name != graph_filter:
            continue
        g = mir.graphs[spec.name]
        pm = publish_all(mir, spec.name)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "probe.ekm"
            ekm.write(pm, path)
            s = Session(str(path), graph=spec.name, threads=1)
            s.reset()
            ref = parity.run_steps(parity.TorchRunner(q, spec), feeds[spec.name])
            diff = defaultdict(lambda: [0, 0, 0, 0.0])   # ops, ops differing, elems, max ulp
            first = []
            outs_all = []
            for k, feed in enumerate(feeds[spec.name]):
                state_in = {st: np.array(v) for st, v in s.state().items()}
                env = {**feed, **state_in}
                out = {n: np.asarray(v) for n, v in s.step(feed).items()}
                outs_all.append(out)
                env.update(out)
                for op in g.ops:
                    args = []
                    ok = True
                    for i in op.inputs:
                        if i is None:
                            args.append(None)
                        elif i in env:
                            args.append(env[i])
                        elif mir.tensors[i].data is not None and mir.tensors[i].dtype != "packed":
                            args.append(np.asarray(mir.tensors[i].data))
                        elif mir.tensors[i].dtype == "packed":
                            args.append(None)
                        else:
                            ok = False
                    if not ok or op.outputs[0] not in env:
                        continue
                    try:
                        with torch.no_grad():
                            want = torch_op(op, args, q)
                    except Exception as exc:   # a module whose layout differs from the IR's
                        want = None
                        diff[op.type + " (unchecked: " + type(exc).__name__ + ")"][0] += 1
                    if want is None:
                        continue
                    want = want.numpy().reshape(env[op.outputs[0]].shape)
                    got = env[op.outputs[0]]
                    bad = want != got
                    row = diff[op.type]
                    row[0] += 1
                    if bad.any():
                        row[1] += 1
                        row[2] += int(bad.sum())
                        wi = want.view(np.int32).astype(np.int64)
                        gi = got.view(np.int32).astype(np.int64)
                        row[3] = max(row[3], float(np.abs(wi - gi)[bad].max()))
                        if len(first) < 8:
                            first.append((k, op.type, op.name, int(bad.sum()), bad.size))
            print(f"== {name} {size} {recipe} graph {spec.name}: ops whose runtime result "
                  f"differs from torch on the runtime's own inputs")
            print(f"{'op':28s} {'checked':>8s} {'differ':>7s} {'elems':>8s} {'max ulp':>8s}")
            for t, (n, nd, ne, mu) in sorted(diff.items()):
                print(f"{t:28s} {n:8d} {nd:7d} {ne:8d} {mu:8.0f}")
            for k, t, nm, nb, sz in first:
                print(f"  first: step {k} {t} {nm}: {nb}/{sz}")
            for o in g.outputs:
                got = np.concatenate([x[o].ravel() for x in outs_all])
                want = np.concatenate([x.ravel() for x in ref[o]])
                db = parity.snr_db(want, got)
                print(f"  end-to-end {o}: {db:.1f} dB vs compressed"
                      + ("" if math.isfinite(db) else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--recipe", default="int8")
    ap.add_argument("--calib", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--graph", default=None)
    ap.add_argument("--what-if", action="store_true", help="also the hybrid interpreter runs")
    ap.add_argument("--onnx-exact", action="store_true", help="also onnxruntime, exact_act")
    ap.add_argument("--only-what-if", action="store_true", help="only the hybrid runs")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if not a.only_what_if:
        probe(a.model, a.size, a.recipe, a.calib, a.steps, a.graph)
    if a.what_if or a.only_what_if:
        what_if(a.model, a.size, a.recipe, a.calib, a.steps)
    if a.onnx_exact:
        onnx_exact(a.model, a.size, a.recipe, a.calib, a.steps)


if __name__ == "__main__":
    main()
