"""onnxruntime backend (CPU execution provider), in the child process."""

from __future__ import annotations

from edgekit.bench.backends.common import Plan, measure, random_inputs

_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def run(model: str, plan: Plan, threads: int, seed: int, stream: bool = True, **_) -> dict:
    """Measure `model` (.onnx) with onnxruntime at its default graph optimization level."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Say which MatMulNBits path runs (DESIGN.md): ORT's default fuses DQ+MatMul into
    # MatMulNBits with int8 activations (accuracy level 4).
    state: dict = {}

    def load():
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        specs = [(i.name, np.dtype(_ORT_TYPES.get(i.type, "float32")), i.shape)
                 for i in sess.get_inputs()]
        feeds = random_inputs(specs, seed)
        state["inputs"] = [{"name": n, "dtype": str(d), "shape": list(feeds[n].shape)}
                           for n, d, _ in specs]
        outs = [o.name for o in sess.get_outputs()]
        # The ONNX exporter names a state's next value "<state>:next": carry it, so a
        # streaming run sees evolving state as the other backends do.
        pairs = [(outs.index(n + ":next"), n) for n, _, _ in specs
                 if stream and n + ":next" in outs]
        state["states"] = [n for _, n in pairs]
        zeros = {n: np.zeros_like(feeds[n]) for _, n in pairs}
        feeds.update(zeros)

        def step():
            res = sess.run(None, feeds)
            for i, n in pairs:
                feeds[n] = res[i]
        return step

    out = measure(load, plan)
    out["runner"] = "onnxruntime.InferenceSession"
    out["options"] = {"graph_optimization_level": "ORT_ENABLE_ALL (default)",
                      "qdq_matmulnbits_accuracy_level": "default (4)",
                      "inputs": state.get("inputs"), "carried_states": state.get("states")}
    return out
