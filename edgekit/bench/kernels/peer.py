"""What the runner needs from one implementation: a prepared, callable, checkable cell.

Each implementation module (edgekit_impl, ort_matmulinteger, ort_matmulnbits, litert_fc,
torch_fp32) exposes `NAME`, `BITS` (weight widths it runs natively), `missing()` (why it
cannot run here, or None), `prepare(case, opts) -> Prepared` and
`check(output, case, extra) -> str | None` (what is wrong with the output, or None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgekit.bench.kernels.cases import Case
from edgekit.bench.kernels.timing import Budget, time_calls


@dataclass
class Prepared:
    """A model built for one case, with inputs and outputs preallocated.

    `call` runs one inference and nothing else (it is what gets timed); `output` returns
    the last result as a numpy array for the correctness check.
    """

    call: Callable[[], object]
    output: Callable[[], np.ndarray]
    weight_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)
    # Implementations timed outside Python (edgekit's C++ loop) replace this.
    timer: Callable[[Budget], np.ndarray] | None = None

    def measure(self, budget: Budget) -> np.ndarray:
        """Per-iteration nanoseconds under `budget`."""
        if self.timer is not None:
            return self.timer(budget)
        return time_calls(self.call, budget)


@dataclass(frozen=True)
class Options:
    """Knobs shared by all implementations for one run."""

    isa: str | None = None           # edgekit kernel ISA; None = best available
    nbits_accuracy_level: int = 4    # ORT MatMulNBits: 4 = int8 activations
    nbits_block_size: int = 128      # the fastest of 32/64/128 at 1x1024x4096 here


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    """||y - ref|| / ||ref|| in float64 (0 when both are zero)."""
    ref64 = ref.astype(np.float64)
    diff = np.linalg.norm(y.astype(np.float64) - ref64)
    norm = np.linalg.norm(ref64)
    return float(diff / norm) if norm else float(diff)


def exact_check(y: np.ndarray, case: Case) -> str | None:
    """None when `y` is exactly the case's int32 reference product, else how many outputs
    differ (-1 when the shape is wrong)."""
    if y.shape != case.acc.shape or not np.array_equal(y, case.acc):
        bad = int(np.count_nonzero(y != case.acc)) if y.shape == case.acc.shape else -1
        return f"int32 result differs from the numpy reference in {bad} of {case.acc.size} outputs"
    return None


def close_check(y: np.ndarray, case: Case, tol: float, context: str = "") -> str | None:
    """None when `y` has the reference's shape and a relative error <= `tol` (NaN fails);
    `context` (e.g. " (accuracy_level 4)") is appended to the failure message."""
    if y.shape != case.acc.shape:
        return f"output shape {y.shape} != {case.acc.shape}"
    err = relative_error(y, case.acc)
    if not err <= tol:
        return f"relative error {err:.3g} > {tol:g}{context}"
    return None
