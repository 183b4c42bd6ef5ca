"""The measurement loop shared by the in-process backends (Session, onnxruntime, LiteRT,
torch); its output has the same keys as ek-run's JSON (docs/runtime.md), so the harness
treats every backend alike.

Phases: `load_us` (open the model, allocate), `first_us` (the first call, which pays for lazy
allocation and cold caches), then warm-up (by count and/or time; not kept) and steady state
(every sample kept). Each call is bracketed by two `perf_counter_ns` reads with the garbage
collector paused, as timeit does.
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Plan:
    """How long to measure: at least `min_runs` samples and `min_time_s` of them, never past
    `max_time_s` of steady state (which wins over min_runs, keeping at least one sample)."""

    warmup: int = 5
    warmup_time_s: float = 0.0
    min_runs: int = 20
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    paced_chunk_s: float | None = None  # audio-paced: feed one chunk per chunk duration

    def __post_init__(self):
        if self.warmup < 0 or self.warmup_time_s < 0:
            raise ValueError("warmup must be >= 0")
        if self.min_runs < 1:
            raise ValueError("min_runs must be >= 1")
        if self.min_time_s < 0 or self.max_time_s <= 0:
            raise ValueError("min_time must be >= 0 and max_time > 0")
        if self.max_time_s < self.min_time_s:
            raise ValueError("max_time must be >= min_time")
        if self.paced_chunk_s is not None and self.paced_chunk_s <= 0:
            raise ValueError("chunk duration must be > 0 for the audio-paced mode")


def peak_rss_kb() -> int:
    """This process's peak resident set in KiB: VmHWM of its own address space on Linux.

    getrusage's ru_maxrss is the fallback only: Linux carries it across fork+exec, so a child
    started from a big parent would report the parent's peak (docs/bench.md, Memory)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure(load: Callable[[], Callable[[], object]], plan: Plan,
            clock: Callable[[], int] = time.perf_counter_ns,
            sleep: Callable[[float], None] = time.sleep) -> dict:
    """Time `load()` (returns the step callable), the first call, warm-up, then steady state.

    In the audio-paced mode chunk i is released at (i+1)·chunk after the start, as a
    microphone would deliver it; `lag_us[i]` = finish − release. `clock` (ns) and `sleep` (s)
    are replaceable so tests can run the schedule on a virtual clock.
    """
    t0 = clock()
    step = load()
    load_us = (clock() - t0) / 1e3
    t0 = clock()
    step()
    first_us = (clock() - t0) / 1e3
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        n = 0
        while n < plan.warmup or (clock() - start) < plan.warmup_time_s * 1e9:
            step()
            n += 1
        samples: list[float] = []
        lags: list[float] = []
        start = clock()
        chunk_ns = plan.paced_chunk_s * 1e9 if plan.paced_chunk_s else None
        while True:
            if chunk_ns is not None:
                release = start + (len(samples) + 1) * chunk_ns
                wait = release - clock()
                if wait > 0:
                    sleep(wait / 1e9)
            t0 = clock()
            step()
            t1 = clock()
            samples.append((t1 - t0) / 1e3)
            if chunk_ns is not None:
                lags.append((t1 - release) / 1e3)
            elapsed = t1 - start
            if elapsed >= plan.max_time_s * 1e9:
                break
            if len(samples) >= plan.min_runs and elapsed >= plan.min_time_s * 1e9:
                break
    finally:
        if gc_was:
            gc.enable()
    out = {"load_us": load_us, "first_us": first_us, "iters_us": samples,
           "peak_rss_kb": peak_rss_kb()}
    if chunk_ns is not None:
        out["lag_us"] = lags
    return out


def random_inputs(specs, seed: int):
    """Seeded inputs for a list of (name, numpy dtype, shape): standard normal for floats,
    zeros for integers (token ids / lengths must stay in range)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for name, dtype, shape in specs:
        # Symbolic (str/None) or dynamic (-1) dims become 1: batch 1, one chunk.
        shape = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape]
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds
