"""LiteRT backend (ai-edge-litert's Interpreter, the TFLite successor), in the child."""

from __future__ import annotations

from edgekit.bench.backends.common import Plan, measure, random_inputs


def version() -> str | None:
    try:
        from importlib.metadata import version as v

        return v("ai-edge-litert")
    except Exception:  # not installed, or metadata missing
        return None


def run(model: str, plan: Plan, threads: int, seed: int, states=(), stream: bool = True,
        **_) -> dict:
    """Measure `model` (.tflite) with the default CPU kernels (XNNPACK delegate included).

    `states`: (state, next value) tensor-name pairs of the graph (the TFLite exporter keeps
    the IR names); in a streaming run each next value is fed back as the state."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    carried = []

    def load():
        it = Interpreter(model_path=model, num_threads=threads)
        it.allocate_tensors()
        details = it.get_input_details()
        feeds = random_inputs([(d["name"], np.dtype(d["dtype"]), list(d["shape"]))
                               for d in details], seed)
        ins = {d["name"]: d for d in details}
        outs = {d["name"]: d for d in it.get_output_details()}
        pairs = [(ins[s]["index"], outs[n]["index"]) for s, n in (states if stream else ())
                 if s in ins and n in outs]
        carried.extend(s for s, n in states if stream and s in ins and n in outs)
        for d in details:
            value = feeds[d["name"]]
            if d["name"] in carried:   # real 0: a quantized state's zero point
                value = np.full_like(value, d["quantization"][1] if d["quantization"][0] else 0)
            it.set_tensor(d["index"], value)

        def step():
            it.invoke()
            for i, o in pairs:
                it.set_tensor(i, it.get_tensor(o))
        return step

    out = measure(load, plan)
    out["runner"] = "ai_edge_litert.Interpreter"
    out["options"] = {"num_threads": threads, "carried_states": carried}
    return out
