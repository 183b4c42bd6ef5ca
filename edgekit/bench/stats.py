"""Statistics over per-iteration latency samples (microseconds).

Latency distributions are skewed (a preempted iteration is 10x slower, never 10x faster), so
the headline is the median with a bootstrap confidence interval, not mean ± std; the mean and
std are kept because users compare them with other tools.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# A run whose median is uncertain by more than this (CI half-width / median) is flagged:
# two such runs can differ by that much without any change in the model.
UNSTABLE_REL_HALF_WIDTH = 0.03
BOOTSTRAP_RESAMPLES = 2000
TRIM = 0.1  # fraction cut from each tail for the trimmed mean


def _as_samples(samples: Sequence[float]) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no samples to summarize")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("samples must be finite and non-negative")
    return x


def trimmed_mean(samples: Sequence[float], trim: float = TRIM) -> float:
    """Mean after dropping floor(trim·n) samples from each end of the sorted samples."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    x = np.sort(_as_samples(samples))
    k = int(math.floor(trim * x.size))
    return float(x[k:x.size - k].mean())


def bootstrap_median_ci(samples: Sequence[float], seed: int = 0, level: float = 0.95,
                        resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median (seeded: same input, same CI)."""
    x = _as_samples(samples)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    medians = np.median(x[idx], axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(medians, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(samples: Sequence[float], seed: int = 0) -> dict:
    """The stats block of a bench result: count, min/max, p50/p90/p99, mean, std (ddof 1),
    trimmed mean, bootstrap 95 % CI of the median, and `unstable` when that CI is wide."""
    x = _as_samples(samples)
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    lo, hi = bootstrap_median_ci(x, seed=seed)
    rel = (hi - lo) / 2 / p50 if p50 > 0 else 0.0
    return {
        "count": int(x.size),
        "min": float(x.min()), "max": float(x.max()),
        "p50": p50, "p90": p90, "p99": p99,
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "trimmed_mean": trimmed_mean(x),
        "median_ci95": [lo, hi],
        "ci_rel_half_width": float(rel),
        "unstable": bool(rel > UNSTABLE_REL_HALF_WIDTH or x.size < 5),
    }


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test (normal approximation with tie correction).

    Returns (U of `a`, p-value). Good for the sample counts a bench keeps (tens to thousands);
    below ~8 samples per side the approximation is rough, which `compare` reports.
    """
    x, y = _as_samples(a), _as_samples(b)
    n1, n2 = x.size, y.size
    both = np.concatenate([x, y])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size)
    sorted_vals = both[order]
    # Average ranks over ties.
    i = 0
    tie_term = 0.0
    while i < both.size:
        j = i
        while j + 1 < both.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        t = j - i + 1
        tie_term += t ** 3 - t
        i = j + 1
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return float(u1), 1.0
    z = (abs(u1 - n1 * n2 / 2) - 0.5) / math.sqrt(var)  # continuity correction
    p = math.erfc(max(z, 0.0) / math.sqrt(2))
    return float(u1), float(min(1.0, p))


def bootstrap_median_diff_ci(a: Sequence[float], b: Sequence[float], seed: int = 0,
                             level: float = 0.95,
                             resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Bootstrap CI of median(b) - median(a), resampling each side independently."""
    x, y = _as_samples(a), _as_samples(b)
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, x.size, size=(resamples, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, size=(resamples, y.size))], axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(my - mx, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paced_lag(step_us: Sequence[float], chunk_us: float) -> np.ndarray:
    """Lag of each chunk when chunks arrive in real time, from measured per-chunk times.

    Chunk i is complete at (i+1)·chunk_us; its processing starts when it is complete and the
    previous chunk is done; lag = finish − arrival. This is the queueing the audio-paced mode
    measures with real sleeps; here it is used to check that mode in tests.
    """
    t = _as_samples(step_us)
    if chunk_us <= 0:
        raise ValueError("chunk duration must be positive")
    lags = np.empty_like(t)
    done = 0.0
    for i, dt in enumerate(t):
        arrival = (i + 1) * chunk_us
        done = max(arrival, done) + dt
        lags[i] = done - arrival
    return lags
