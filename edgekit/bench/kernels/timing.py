"""Per-iteration timing of a Python-callable peer, and the statistics every cell reports."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Budget:
    """How long to measure one cell: warm-up calls, then until `min_time_s` has passed and
    at least `min_iters` calls were timed (capped at `max_iters`). The runner splits this
    over `rounds` interleaved rounds; `time_calls` ignores `rounds`."""

    warmup: int = 5
    min_time_s: float = 0.3
    min_iters: int = 10
    max_iters: int = 1_000_000
    rounds: int = 5


def time_calls(fn: Callable[[], object], budget: Budget) -> np.ndarray:
    """Nanoseconds of each timed call of `fn`, timed one call at a time.

    Each call is bracketed by `perf_counter_ns` alone, so the numbers include the peer's
    own Python binding cost but no loop bookkeeping beyond two clock reads.
    """
    for _ in range(budget.warmup):
        fn()
    clock = time.perf_counter_ns
    samples: list[int] = []
    # As timeit does: a collection pass landing inside one call would be charged to the peer.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        deadline = clock() + int(budget.min_time_s * 1e9)
        while len(samples) < budget.max_iters:
            t0 = clock()
            fn()
            t1 = clock()
            samples.append(t1 - t0)
            if t1 >= deadline and len(samples) >= budget.min_iters:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return np.asarray(samples, dtype=np.int64)


def summarize_ns(samples: np.ndarray) -> tuple[float, float]:
    """(median, p90) of nanosecond samples, in microseconds."""
    if len(samples) == 0:
        raise ValueError("no timing samples")
    s = np.asarray(samples, dtype=np.float64)
    return float(np.median(s) / 1e3), float(np.percentile(s, 90) / 1e3)
