"""Runs the grid: every implementation on the same cases, checked, then timed, one thread."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from edgekit.bench.kernels import (edgekit_impl, litert_fc, ort_matmulinteger, ort_matmulnbits,
                                   torch_fp32)
from edgekit.bench.kernels.cases import Case, make_case
from edgekit.bench.kernels.peer import Options, Prepared
from edgekit.bench.kernels.timing import Budget, summarize_ns

IMPLS = {m.NAME: m for m in (edgekit_impl, ort_matmulinteger, ort_matmulnbits, litert_fc,
                             torch_fp32)}
PEERS = tuple(n for n in IMPLS if n != "edgekit")
# The per-call cost of each Python binding is measured on a shape too small for the
# arithmetic to matter.
OVERHEAD_SHAPE = (1, 16, 16)


@dataclass
class Config:
    """One benchmark run."""

    shapes: list[tuple[int, int, int]]
    bits: list[int]
    sparsities: list[float]
    impls: list[str]
    budget: Budget = field(default_factory=Budget)
    opts: Options = field(default_factory=Options)


@dataclass
class Cell:
    impl: str
    shape: tuple[int, int, int]
    bits: int          # the case's weight width (torch_fp32 runs the widest case's weights)
    sparsity: float


@dataclass
class Result:
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # implementations skipped, and why
    failures: list[str] = field(default_factory=list)  # wrong answers: not timed, not reported


def pin_one_thread() -> None:
    """Keep every library on one core; env vars cover OpenMP/BLAS pools started later."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def _unquantized(impl: str) -> bool:
    """True for the fp32 baseline (BITS == (32,)): it runs the widest case's weights."""
    return IMPLS[impl].BITS == (32,)


def plan(config: Config, available: list[str]) -> list[Cell]:
    """The cells to run, shape by shape, so one shape's data is alive at a time."""
    cells: list[Cell] = []
    widest = max(config.bits)
    for shape in config.shapes:
        for s in config.sparsities:
            for b in sorted(set(config.bits), reverse=True):
                for name in available:
                    if b in IMPLS[name].BITS or (_unquantized(name) and b == widest):
                        cells.append(Cell(name, shape, b, s))
    return cells


def _label_bits(impl: str, case_bits: int) -> int:
    return 32 if _unquantized(impl) else case_bits


def _prepare(impl: str, case: Case, opts: Options) -> tuple[Prepared | None, str | None]:
    """Build one implementation for `case` and check its answer. (prepared, None) or
    (None, why it cannot be timed)."""
    mod = IMPLS[impl]
    try:
        prepared = mod.prepare(case, opts)
        prepared.call()
        problem = mod.check(prepared.output(), case, prepared.extra)
    except Exception as exc:  # noqa: BLE001
        # Peer libraries raise their own exception types (onnxruntime's derive from
        # Exception only). A cell that cannot run is reported as a failure (exit 1),
        # never silently dropped, and the rest of the grid still runs.
        text = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"{exc.__class__.__name__}: {text}"
    return (None, f"wrong result: {problem}") if problem else (prepared, None)


def _record(impl: str, case: Case, prepared: Prepared, samples: np.ndarray) -> dict:
    med, p90 = summarize_ns(samples)
    rec = {"impl": impl, "M": case.M, "K": case.K, "N": case.N,
           "bits": _label_bits(impl, case.bits), "sparsity": case.sparsity,
           "us_median": med, "us_p90": p90, "weight_bytes": int(prepared.weight_bytes),
           "iters": int(len(samples)), "checked": True}
    rec.update({k: v for k, v in prepared.extra.items() if not k.startswith("_")})
    return rec


def _measure_interleaved(prepared: dict[str, Prepared], budget: Budget) -> dict[str, np.ndarray]:
    """Time every implementation of one case in `budget.rounds` round-robin rounds.

    On a shared machine load comes and goes; interleaving spreads it over all the
    implementations being compared instead of charging one of them with a busy spell.
    """
    rounds = max(1, budget.rounds)
    part = replace(budget, min_time_s=budget.min_time_s / rounds,
                   min_iters=max(1, -(-budget.min_iters // rounds)))
    samples: dict[str, list[np.ndarray]] = {name: [] for name in prepared}
    for r in range(rounds):
        for name, p in prepared.items():
            samples[name].append(p.measure(part if r == 0 else replace(part, warmup=1)))
    return {name: np.concatenate(parts) for name, parts in samples.items()}


def _overhead(impl: str, config: Config) -> float | None:
    bits = 8 if _unquantized(impl) else max(b for b in IMPLS[impl].BITS if b <= 8)
    case = make_case(*OVERHEAD_SHAPE, bits=bits)
    prepared, _ = _prepare(impl, case, config.opts)
    if prepared is None:
        return None
    small = Budget(warmup=20, min_time_s=min(config.budget.min_time_s, 0.1), min_iters=50)
    return summarize_ns(prepared.measure(small))[0]


def run(config: Config, on_progress: Callable[[str, int, int], None] | None = None) -> Result:
    """Run every available implementation over the grid.

    `on_progress(description, done, total)` is called before each step (counted in cells).
    """
    pin_one_thread()
    result = Result()
    available = []
    for name in config.impls:
        why = IMPLS[name].missing()
        if why:
            result.notes.append(f"{name} skipped: {why}")
        else:
            available.append(name)
    cells = plan(config, available)
    total = len(cells) + len(available)
    progress = on_progress or (lambda _desc, _done, _total: None)

    overhead: dict[str, float | None] = {}
    for i, name in enumerate(available):
        progress(f"{name} call overhead", i, total)
        overhead[name] = _overhead(name, config)
    done = len(available)

    for key, group in itertools.groupby(cells, key=lambda c: (c.shape, c.bits, c.sparsity)):
        group = list(group)
        (M, K, N), bits, sparsity = key
        where = f"{M}x{K}x{N} int{bits} zeros={sparsity:g}"
        progress(f"{where}: {', '.join(c.impl for c in group)}", done, total)
        case = make_case(M, K, N, bits=bits, sparsity=sparsity)
        prepared: dict[str, Prepared] = {}
        for cell in group:
            p, why = _prepare(cell.impl, case, config.opts)
            if p is None:
                result.failures.append(f"{cell.impl} {M}x{K}x{N} bits={bits} "
                                       f"sparsity={sparsity:g}: {why}")
            else:
                prepared[cell.impl] = p
        for name, samples in _measure_interleaved(prepared, config.budget).items():
            rec = _record(name, case, prepared[name], samples)
            rec["overhead_us"] = overhead.get(name)
            result.records.append(rec)
        done += len(group)
    progress("done", done, total)
    return result
