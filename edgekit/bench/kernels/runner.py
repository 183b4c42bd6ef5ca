"""Runs the grid: every implementation on the same cases, checked, then timed, one thread."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from edgekit.bench.kernels import (edgekit_impl, litert_fc, ort_matmulinteger, ort_matmulnbits,
                                   torch_fp32)
from edgekit.bench.kernels.cases import Case, make_case
from edgekit.bench.kernels.peer import Options
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
    notes: list[str] = field(default_factory=list)     # skipped implementations, paths taken
    failures: list[str] = field(default_factory=list)  # wrong answers: not timed, not reported


def pin_one_thread() -> None:
    """Keep every library on one core; env vars cover OpenMP/BLAS pools started later."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def plan(config: Config, available: list[str]) -> list[Cell]:
    """The cells to run, shape by shape, so one shape's data is alive at a time."""
    cells: list[Cell] = []
    widest = max(config.bits)
    for shape in config.shapes:
        for s in config.sparsities:
            for b in sorted(set(config.bits), reverse=True):
                for name in available:
                    native = IMPLS[name].BITS
                    runs_here = b in native or (native == (32,) and b == widest)
                    if runs_here:
                        cells.append(Cell(name, shape, b, s))
    return cells


def _label_bits(impl: str, case_bits: int) -> int:
    return 32 if IMPLS[impl].BITS == (32,) else case_bits


def _measure(impl: str, case: Case, config: Config) -> tuple[dict | None, str | None]:
    """Check then time one cell. Returns (record, None) or (None, why it failed)."""
    mod = IMPLS[impl]
    try:
        prepared = mod.prepare(case, config.opts)
        prepared.call()
        problem = mod.check(prepared.output(), case, prepared.extra)
    except Exception as exc:  # noqa: BLE001
        # Peer libraries raise their own exception types (onnxruntime's derive from
        # Exception only). A cell that cannot run is reported as a failure (exit 1),
        # never silently dropped, and the rest of the grid still runs.
        return None, f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if problem:
        return None, f"wrong result: {problem}"
    samples = prepared.measure(config.budget)
    med, p90 = summarize_ns(samples)
    rec = {"impl": impl, "M": case.M, "K": case.K, "N": case.N,
           "bits": _label_bits(impl, case.bits), "sparsity": case.sparsity,
           "us_median": med, "us_p90": p90, "weight_bytes": int(prepared.weight_bytes),
           "iters": int(len(samples)), "checked": True}
    rec.update({k: v for k, v in prepared.extra.items() if not k.startswith("_")})
    return rec, None


def _overhead(impl: str, config: Config) -> float | None:
    bits = max(b for b in IMPLS[impl].BITS if b <= 8) if IMPLS[impl].BITS != (32,) else 8
    case = make_case(*OVERHEAD_SHAPE, bits=bits)
    small = Budget(warmup=20, min_time_s=min(config.budget.min_time_s, 0.1), min_iters=50)
    rec, _ = _measure(impl, case, Config([OVERHEAD_SHAPE], [bits], [0.0], [impl], small,
                                         config.opts))
    return rec["us_median"] if rec else None


def run(config: Config, on_step: Callable[[str], None] | None = None,
        on_total: Callable[[int], None] | None = None) -> Result:
    """Run every available implementation over the grid; `on_step` is told before each step."""
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
    if on_total:
        on_total(len(cells) + len(available))
    step = on_step or (lambda _desc: None)

    overhead: dict[str, float | None] = {}
    for name in available:
        step(f"{name} call overhead")
        overhead[name] = _overhead(name, config)

    current: tuple | None = None
    case: Case | None = None
    for cell in cells:
        key = (cell.shape, cell.bits, cell.sparsity)
        if key != current:
            case, current = make_case(*cell.shape, bits=cell.bits, sparsity=cell.sparsity), key
        M, K, N = cell.shape
        step(f"{cell.impl} {M}x{K}x{N} int{_label_bits(cell.impl, cell.bits)} "
             f"zeros={cell.sparsity:g}")
        rec, why = _measure(cell.impl, case, config)
        if rec is None:
            result.failures.append(f"{cell.impl} {M}x{K}x{N} bits={cell.bits} "
                                   f"sparsity={cell.sparsity:g}: {why}")
            continue
        rec["overhead_us"] = overhead.get(cell.impl)
        result.records.append(rec)
    return result

