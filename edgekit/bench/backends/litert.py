"""LiteRT backend (ai-edge-litert's Interpreter, the TFLite successor), in the child."""

from __future__ import annotations

from edgekit.bench.backends.common import Plan, measure, random_inputs


def version() -> str | None:
    try:
        from importlib.metadata import version as v

        return v("ai-edge-litert")
    except Exception:  # not installed, or metadata missing
        return None


def run(model: str, plan: Plan, threads: int, seed: int, **_) -> dict:
    """Measure `model` (.tflite) with the default CPU kernels (XNNPACK delegate included)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    def load():
        it = Interpreter(model_path=model, num_threads=threads)
        it.allocate_tensors()
        details = it.get_input_details()
        feeds = random_inputs([(d["name"], np.dtype(d["dtype"]), list(d["shape"]))
                               for d in details], seed)
        for d in details:
            it.set_tensor(d["index"], feeds[d["name"]])
        return it.invoke

    out = measure(load, plan)
    out["runner"] = "ai_edge_litert.Interpreter"
    out["options"] = {"num_threads": threads}
    return out
