"""edgekit's packed int8 x b-bit linear kernel, timed in C++ by `kernels.bench_linear`."""

from __future__ import annotations

import numpy as np

from edgekit.bench.kernels.cases import Case
from edgekit.bench.kernels.peer import Options, Prepared, exact_check
from edgekit.bench.kernels.timing import Budget

NAME = "edgekit"
BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def missing() -> str | None:
    """Why edgekit's kernels cannot run (extension not built), or None."""
    try:
        from edgekit import kernels

        kernels.isa()
    except (ImportError, AttributeError) as exc:
        return f"edgekit kernels unavailable ({exc}); run `make build`"
    return None


def validate_isa(isa: str) -> None:
    """ValueError unless `isa` names a kernel variant this build and CPU can run."""
    why = missing()
    if why:
        raise ValueError(f"--isa {isa!r}: {why}")
    from edgekit import kernels

    names = kernels.available_isas()
    if isa not in names:
        raise ValueError(f"--isa {isa!r} is not available here; choose from {', '.join(names)}")


def prepare(case: Case, opts: Options) -> Prepared:
    """Pack the case's codes (zeros compressed when it has a mask) with unit scales."""
    from edgekit import kernels

    scale = np.ones(case.N, dtype=np.float32)
    pw = kernels.pack(case.codes, case.bits, case.codebook.reshape(-1), scale, mask=case.mask)
    x = np.ascontiguousarray(case.x)
    isa = opts.isa or kernels.isa()
    out: list[np.ndarray] = []

    def call() -> None:
        # The checked call uses the same variant that is timed.
        out[:] = [kernels.linear(x, pw, isa=opts.isa)]

    def timer(budget: Budget) -> np.ndarray:
        # The C++ loop times each kernel call with a steady clock; no Python in the samples.
        ns = kernels.bench_linear(x, pw, warmup=budget.warmup, iters=budget.min_iters,
                                  isa=opts.isa, min_time_s=budget.min_time_s)
        return np.asarray(ns, dtype=np.int64)

    return Prepared(call=call, output=lambda: out[0], weight_bytes=int(pw.nbytes),
                    extra={"isa": isa, "kernel": kernels.kernel_name(isa)}, timer=timer)


def check(y: np.ndarray, case: Case, extra: dict | None = None) -> str | None:
    """The packed kernel must reproduce the exact int32 product."""
    return exact_check(y, case)
