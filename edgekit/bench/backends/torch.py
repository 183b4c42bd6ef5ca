"""torch eager backend: the float source model from the zoo (what the EKM's META names),
stepped with its streaming state. The reference point, not an edge runtime."""

from __future__ import annotations

from edgekit.bench.backends.common import Plan, measure


def version() -> str | None:
    try:
        from importlib.metadata import version as v

        return v("torch")
    except Exception:
        return None


def run(model: str, plan: Plan, threads: int, seed: int, source: dict | None = None,
        **_) -> dict:
    """Measure `source` = {"model", "size", "seed"} (from the EKM META) one streaming step at a
    time; `model` is only the label of the file it stands for."""
    import torch

    from edgekit import models

    if not source or not source.get("model"):
        raise ValueError("the torch backend needs the source model named in the EKM META")
    torch.set_num_threads(threads)
    name, size = source["model"], source.get("size", "tiny")

    def load():
        m = models.build(name, size=size, seed=int(source.get("seed") or 0))
        g = torch.Generator().manual_seed(seed)
        if name.startswith("nwc"):
            x = torch.randn(1, 480, generator=g) * 0.1
        else:
            x = torch.randn(1, m.chunk_frames, models.N_MELS, generator=g)
        st = {"s": m.init_state(1)}

        @torch.inference_mode()
        def step():
            _, st["s"] = m.step(x, st["s"])
        return step

    out = measure(load, plan)
    out["runner"] = "torch eager (float source model)"
    out["options"] = {"threads": threads, "model": name, "size": size}
    return out
