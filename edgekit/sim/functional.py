"""Functional simulation: the accelerator's integer arithmetic is exactly the runtime's
q-op path (int8 activations x decoded int8 weights, int32 accumulation, the shared epilogue),
so the simulator executes the EKM file through the runtime's *reference* kernels (`isa="ref"`)
— one scalar implementation that every SIMD variant is tested bit-equal against — with the
streaming state carried between steps. `check` runs the same feed through the runtime's
default (fastest) kernels and compares outputs bit for bit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgekit.export.ir import NP_DTYPES


def feeds(inputs: list[dict], steps: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`steps` seeded input dicts: floats uniform in [-1, 1) (like `ek-run --fill random`);
    integer inputs (token ids) stay 0, since their valid range is model-specific."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        d = {}
        for spec in inputs:
            dt = NP_DTYPES[spec["dtype"]]
            shape = tuple(spec["shape"])
            if np.issubdtype(dt, np.floating):
                d[spec["name"]] = rng.uniform(-1.0, 1.0, size=shape).astype(dt)
            else:
                d[spec["name"]] = np.zeros(shape, dtype=dt)
        out.append(d)
    return out


def execute(path: str | Path, graph: str | None = None, steps: int = 3, seed: int = 0,
            isa: str = "ref") -> list[dict[str, np.ndarray]]:
    """Outputs of `steps` consecutive calls of `graph` (state carried) on seeded inputs,
    computed by the runtime's `isa` kernels (default: the reference kernels)."""
    from edgekit.runtime import Session

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    s = Session(str(path), graph=graph, threads=1, isa=isa)
    s.reset()
    return [s.step(feed) for feed in feeds(s.inputs, steps, seed)]


def digest(outputs: list[dict[str, np.ndarray]]) -> str:
    """SHA-256 over every output's name, dtype, shape and bytes, step by step."""
    h = hashlib.sha256()
    for step in outputs:
        for name in sorted(step):
            a = np.ascontiguousarray(step[name])
            h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def check(path: str | Path, graph: str | None = None, steps: int = 3, seed: int = 0) -> dict:
    """Run the simulator's functional path and the runtime's default kernels on the same
    seeded feed; `ok` when every output of every step is bit-identical."""
    from edgekit.runtime import Session

    sim = execute(path, graph, steps, seed, isa="ref")
    best = Session(str(path), graph=graph).isa
    rt = execute(path, graph, steps, seed, isa=best)
    mismatched = [f"step {i} {k}" for i, (a, b) in enumerate(zip(sim, rt)) for k in a
                  if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
                  or a[k].tobytes() != b[k].tobytes()]
    return {"ok": not mismatched, "how": f"runtime reference kernels vs runtime isa={best}, "
            f"{steps} streaming steps, seed {seed}", "steps": steps, "runtime_isa": best,
            "outputs_sha256": digest(sim), "mismatched": mismatched[:5]}
