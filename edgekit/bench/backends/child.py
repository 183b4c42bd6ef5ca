"""Child process for the in-process backends: `python -m edgekit.bench.backends.child SPEC`.

Each backend is measured in a fresh process so that peak RSS (getrusage, read by the child
itself) belongs to that backend alone, thread-count variables take effect before the runtime
loads, and CPU affinity applies only to the measurement. Prints one JSON object like ek-run:
the result, or {"error": "..."} with exit status 2.
"""

from __future__ import annotations

import json
import os
import sys

BACKENDS = ("session", "onnxruntime", "litert", "torch")


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    threads = int(spec.get("threads", 1))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if spec.get("affinity"):
        os.sched_setaffinity(0, set(spec["affinity"]))
    from edgekit.bench.backends.common import Plan

    try:
        plan = Plan(**spec["plan"])
        name = spec["backend"]
        if name == "session":
            from edgekit.bench.backends.edgekit import run_session as run
            from edgekit.bench.backends.edgekit import version
        elif name == "onnxruntime":
            from edgekit.bench.backends.onnxruntime import run, version
        elif name == "litert":
            from edgekit.bench.backends.litert import run, version
        elif name == "torch":
            from edgekit.bench.backends.torch import run, version
        else:
            raise ValueError(f"unknown backend {name!r}")
        out = run(spec["model"], plan, threads, int(spec.get("seed", 0)),
                  **spec.get("extra", {}))
    except Exception as exc:  # the parent turns this into a one-line EdgekitError
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}))
        return 2
    out["version"] = version()  # the runtime this Python (maybe the device's) has
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
