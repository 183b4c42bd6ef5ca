"""Parity: how close an exported file's outputs are to the compressed PyTorch model and to fp32.

Every graph is driven over a few consecutive calls (streaming state carried) with the same
feeds on every backend; per graph output the SNR is computed over all calls together:
`10·log10(Σ ref² / Σ (ref − got)²)` (inf when equal). Backends:

* `ekm`: the C++ runtime (`edgekit.runtime.Session`) when importable, else the numpy reference
  interpreter (`edgekit.export.interp`) on the file read back from disk — which one ran is in
  the result (`backend`);
* `onnx`: onnxruntime (one thread, default graph optimisations but
  `session.qdq_matmulnbits_accuracy_level` = 0, so that a fused MatMulNBits keeps float
  activations: the file's own arithmetic); `tflite`: LiteRT (XNNPACK). A file onnxruntime
  refuses to load or run raises ValueError with onnxruntime's first line (not its traceback).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from edgekit.export import ir
from edgekit.export.lower.models import GraphSpec


def snr_db(ref, got) -> float:
    """SNR of `got` against `ref` in dB (inf when identical, -inf when ref is all zero)."""
    ref = np.asarray(ref, np.float64).ravel()
    got = np.asarray(got, np.float64).ravel()
    if ref.shape != got.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {got.shape}")
    err = float(np.sum((ref - got) ** 2))
    sig = float(np.sum(ref ** 2))
    if err == 0.0:
        return float("inf")
    if sig == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(sig / err))


class TorchRunner:
    """Calls `model.<spec.method>` with the spec's state carried between calls."""

    def __init__(self, model, spec: GraphSpec):
        self.model, self.spec = model, spec
        self.reset()

    def reset(self) -> None:
        sa = self.spec.state_arg
        self.state = None if sa is None else copy.deepcopy(self.spec.args[sa])

    def step(self, feed: dict) -> dict:
        args = []
        for i, name in enumerate(self.spec.input_names):
            args.append(self.state if i == self.spec.state_arg else torch.from_numpy(feed[name]))
        with torch.no_grad():
            out = getattr(self.model, self.spec.method)(*args)
        out = out if isinstance(out, tuple) else (out,)
        res = {}
        for i, v in enumerate(out):
            if i == self.spec.state_out:
                self.state = v
            else:
                res[self.spec.output_names[i]] = v.detach().float().numpy()
        return res


class InterpRunner:
    """The numpy reference interpreter on one graph."""

    backend = "interpreter"

    def __init__(self, model: ir.Model, graph: str):
        from edgekit.export.interp import Interpreter
        self.it = Interpreter(model, graph)

    def step(self, feed: dict) -> dict:
        return self.it.step(feed)


class SessionRunner:
    """The C++ runtime on one graph (`Session.step`: one call, state carried)."""

    backend = "runtime"

    def __init__(self, path: str, graph: str):
        from edgekit.runtime import Session
        self.s = Session(str(path), graph=graph, threads=1)
        self.s.reset()

    def step(self, feed: dict) -> dict:
        return {k: np.asarray(v) for k, v in self.s.step(feed).items()}


ORT_ACCURACY_LEVEL = 0   # recorded in export.json's onnx entry


class OrtRunner:
    """onnxruntime on one graph's file: IR names in, states fed back as `<state>:next`."""

    backend = "onnxruntime"

    def __init__(self, path: str, model: ir.Model, graph: str,
                 accuracy_level: str | None = str(ORT_ACCURACY_LEVEL)):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        # Level 4 (the default) fuses DequantizeLinear+MatMul into MatMulNBits with int8
        # activations re-quantized per block: a different model. Parity measures the file;
        # None keeps onnxruntime's default (what a user gets, e.g. for latency).
        if accuracy_level is not None:
            opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level",
                                          accuracy_level)
        try:
            self.s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except _ort_errors() as exc:
            raise ValueError(f"onnxruntime cannot load {Path(path).name}: {_first_line(exc)}") \
                from None
        self.name = Path(path).name
        g = model.graphs[graph]
        self.outputs = list(g.outputs)
        self.state = {s: np.zeros(model.tensors[s].shape, ir.NP_DTYPES[model.tensors[s].dtype])
                      for s, _ in g.states}

    def step(self, feed: dict) -> dict:
        names = [o.name for o in self.s.get_outputs()]
        try:
            res = dict(zip(names, self.s.run(names, {**feed, **self.state})))
        except _ort_errors() as exc:
            raise ValueError(f"onnxruntime cannot run {self.name}: {_first_line(exc)}") from None
        for s in self.state:
            self.state[s] = res[s + ":next"]
        return {o: res[o] for o in self.outputs}


def _ort_errors() -> tuple:
    """What onnxruntime raises for a file it refuses: its pybind error classes (Fail,
    InvalidGraph, NotImplemented, ...: plain Exception subclasses) and RuntimeError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C
    own = [v for v in vars(C).values() if isinstance(v, type) and issubclass(v, Exception)]
    return (RuntimeError, *own)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TfliteRunner:
    """LiteRT on one graph's .tflite, through the TFLite exporter's own `Stream`."""

    backend = "litert"

    def __init__(self, info: dict, graph: ir.Graph):
        from edgekit.export.tflite.runner import Stream
        with open(info["file"], "rb") as f:
            data = f.read()
        self.s = Stream(data, graph.inputs, [s for s, _ in graph.states], info["outputs"],
                        dict(graph.states))
        self.outputs = list(graph.outputs)

    def step(self, feed: dict) -> dict:
        out = self.s.step(feed)
        return {o: out[o] for o in self.outputs}


def ekm_runner(path: str, graph: str, prefer_runtime: bool = True):
    """Session when the C++ runtime imports, else the interpreter on the file read back."""
    from edgekit.export import ekm
    model = ekm.read(path)
    if prefer_runtime and runtime_available():
        return SessionRunner(path, graph)
    return InterpRunner(model, graph)


def runtime_available() -> bool:
    """Whether the C++ runtime (edgekit._C with the runtime) can be used."""
    try:
        from edgekit import runtime
    except ImportError:
        return False
    return bool(getattr(runtime, "available", lambda: False)())


def run_steps(runner, feeds: list[dict]) -> dict[str, list[np.ndarray]]:
    """Outputs per name over consecutive calls."""
    out: dict[str, list] = {}
    for feed in feeds:
        for k, v in runner.step(feed).items():
            out.setdefault(k, []).append(np.asarray(v, np.float32))
    return out


def compare(got: dict, compressed: dict, fp32: dict | None) -> dict:
    """Per output: SNR vs the compressed model and vs fp32 over all calls."""
    res = {}
    for name, ref in compressed.items():
        cat = np.concatenate([r.ravel() for r in ref])
        g = np.concatenate([x.ravel() for x in got[name]])
        row = {"snr_vs_compressed_db": _r(snr_db(cat, g))}
        if fp32 is not None:
            f = np.concatenate([x.ravel() for x in fp32[name]])
            row["snr_vs_fp32_db"] = _r(snr_db(f, g))
        res[name] = row
    return res


def _r(v: float) -> float | str:
    return round(v, 2) if np.isfinite(v) else ("inf" if v > 0 else "-inf")


def worst(parity: dict, key: str = "snr_vs_compressed_db") -> float:
    """The lowest SNR of one kind over every graph output of a parity result."""
    vals = [float(row[key]) for g in parity.values() for row in g.values() if key in row]
    return min(vals) if vals else float("nan")
