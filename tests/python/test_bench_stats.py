"""Bench statistics on synthetic samples with known answers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgekit.bench import stats
from edgekit.bench.backends.common import Plan, measure


def test_percentiles_mean_std_on_1_to_100():
    s = stats.summarize(np.arange(1, 101))
    # numpy's linear interpolation: p = 1 + (n-1)·q
    assert s["p50"] == 50.5 and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == 50.5
    assert s["std"] == pytest.approx(29.011491975882016)
    assert s["min"] == 1 and s["max"] == 100 and s["count"] == 100


def test_trimmed_mean_drops_outliers():
    x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1000]
    assert stats.trimmed_mean(x, 0.1) == pytest.approx(5.5)  # drops 1 and 1000
    assert stats.summarize(x)["trimmed_mean"] == pytest.approx(5.5)
    with pytest.raises(ValueError, match="trim"):
        stats.trimmed_mean(x, 0.5)


def test_bootstrap_ci_is_seeded_and_covers_the_median():
    rng = np.random.default_rng(1)
    x = 100 + rng.standard_normal(400)
    a, b = stats.bootstrap_median_ci(x, seed=3), stats.bootstrap_median_ci(x, seed=3)
    assert a == b
    assert a[0] < 100 < a[1] and a[1] - a[0] < 0.5
    assert stats.bootstrap_median_ci([7.0] * 20) == (7.0, 7.0)


def test_unstable_flag():
    rng = np.random.default_rng(0)
    steady = 1000 + rng.normal(0, 5, 200)
    noisy = rng.exponential(1000, 30)
    assert not stats.summarize(steady)["unstable"]
    assert stats.summarize(noisy)["unstable"]
    assert stats.summarize([5.0, 5.0, 5.0])["unstable"]  # too few samples to tell


def test_bad_samples_are_value_errors():
    for bad in ([], [1.0, float("nan")], [-1.0]):
        with pytest.raises(ValueError):
            stats.summarize(bad)


def test_mann_whitney_known_cases():
    u, p = stats.mann_whitney_u([1, 2, 3, 4, 5, 6, 7, 8], [11, 12, 13, 14, 15, 16, 17, 18])
    assert u == 0.0 and p < 0.001  # complete separation
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 300) + 10, rng.normal(0, 1, 300) + 10
    assert stats.mann_whitney_u(a, b)[1] > 0.01
    u1, _ = stats.mann_whitney_u(a, b)
    u2, _ = stats.mann_whitney_u(b, a)
    assert u1 + u2 == pytest.approx(300 * 300)
    assert stats.mann_whitney_u([3, 3, 3], [3, 3, 3]) == (4.5, 1.0)  # all tied


def test_median_diff_ci():
    rng = np.random.default_rng(4)
    a = 100 + rng.normal(0, 1, 200)
    b = 110 + rng.normal(0, 1, 200)
    lo, hi = stats.bootstrap_median_diff_ci(a, b)
    assert 9 < lo < 10 < hi < 11


def test_paced_lag_queueing():
    # Faster than real time: lag is the compute time. Slower: the queue grows by 5 per chunk.
    assert list(stats.paced_lag([5, 5, 5], 10)) == [5, 5, 5]
    assert list(stats.paced_lag([15, 15, 15], 10)) == [15, 20, 25]


def test_measure_phases_and_budget():
    calls = []

    def load():
        time.sleep(0.02)
        return lambda: calls.append(1)

    out = measure(load, Plan(warmup=3, min_runs=7, min_time_s=0.0, max_time_s=5))
    assert out["load_us"] >= 15_000
    assert len(out["iters_us"]) == 7 and len(calls) == 1 + 3 + 7
    assert out["peak_rss_kb"] > 0
    c = VirtualClock()
    out = measure(lambda: c.work(10_000), Plan(warmup=2, min_runs=10**6, min_time_s=0.0,
                                               max_time_s=0.1), clock=c, sleep=c.sleep)
    assert len(out["iters_us"]) == 10  # max_time wins over min_runs
    c = VirtualClock()
    out = measure(lambda: c.work(10_000), Plan(warmup=0, warmup_time_s=0.05, min_runs=2,
                                               min_time_s=0.3, max_time_s=9),
                  clock=c, sleep=c.sleep)
    assert len(out["iters_us"]) == 30  # min_time wins over min_runs
    assert c.ns == (1 + 5 + 30) * 10_000_000  # first + 50 ms of warm-up + steady


class VirtualClock:
    """A clock that only moves when work is done or someone sleeps: exact paced schedules."""

    def __init__(self):
        self.ns = 0

    def __call__(self):
        return self.ns

    def sleep(self, s):
        self.ns += int(round(s * 1e9))

    def work(self, us):
        def step():
            self.ns += int(us * 1000)
        return step


def test_measure_paced_mode_reports_lag():
    # 2 ms of work per 10 ms chunk keeps up: every lag is the work time.
    c = VirtualClock()
    out = measure(lambda: c.work(2000), Plan(warmup=0, min_runs=8, min_time_s=0.0,
                                             max_time_s=5, paced_chunk_s=0.01),
                  clock=c, sleep=c.sleep)
    assert out["lag_us"] == pytest.approx([2000.0] * 8)
    assert out["lag_us"] == pytest.approx(list(stats.paced_lag(out["iters_us"], 10_000)))
    # 15 ms per 10 ms chunk falls behind by 5 ms a chunk, as the queueing model says.
    c = VirtualClock()
    slow = measure(lambda: c.work(15_000), Plan(warmup=0, min_runs=6, min_time_s=0.0,
                                                max_time_s=5, paced_chunk_s=0.01),
                   clock=c, sleep=c.sleep)
    assert slow["lag_us"] == pytest.approx([15_000, 20_000, 25_000, 30_000, 35_000, 40_000])


def test_measure_paced_mode_real_clock_smoke():
    out = measure(lambda: (lambda: None), Plan(warmup=0, min_runs=5, min_time_s=0.0,
                                               max_time_s=5, paced_chunk_s=0.002))
    assert len(out["lag_us"]) == 5 and min(out["lag_us"]) >= 0


def test_plan_rejects_bad_budgets():
    with pytest.raises(ValueError, match="min_runs"):
        Plan(min_runs=0)
    with pytest.raises(ValueError, match="max_time"):
        Plan(min_time_s=5, max_time_s=1)
