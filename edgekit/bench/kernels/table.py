"""Ratios, the project's kernel performance targets, and the rich table of one run's records."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

EDGEKIT = "edgekit"
TARGET_SHAPE = (1, 1024, 4096)


def _key(r: dict) -> tuple:
    return (r["M"], r["K"], r["N"], r["sparsity"])


def _median(records: list[dict], impl: str, shape: tuple, bits: int, sparsity: float = 0.0):
    """`us_median` of the first record of `impl` at this shape, bit width and zero fraction."""
    for r in records:
        if (r["impl"] == impl and (r["M"], r["K"], r["N"]) == tuple(shape)
                and r["bits"] == bits and r["sparsity"] == sparsity):
            return r["us_median"]
    return None


def annotate(records: list[dict]) -> list[dict]:
    """Add derived fields to every record (in place, also returned).

    * `gbps`: stored weight bytes / median time.
    * `vs_best_peer`, `best_peer`: median / the fastest peer at the same shape and zero
      fraction among peers whose weights can hold this row's bit width exactly (a peer
      with b' >= b bits; torch_fp32 holds all). Peers store zeros densely, so at a zero
      fraction > 0 they run the same weights at dense cost.
    * edgekit rows: `vs_edgekit_int4`, `vs_edgekit_int8`: median / edgekit's dense int4 and
      dense int8 medians at the same shape (what the targets compare against).
    """
    peers: dict[tuple, list[dict]] = {}
    for r in records:
        if r["impl"] != EDGEKIT:
            peers.setdefault(_key(r), []).append(r)
    for r in records:
        r["gbps"] = r["weight_bytes"] / (r["us_median"] * 1e3)
        able = [p for p in peers.get(_key(r), []) if p["bits"] >= r["bits"]]
        best = min(able, key=lambda p: p["us_median"], default=None)
        r["vs_best_peer"] = r["us_median"] / best["us_median"] if best else None
        r["best_peer"] = f"{best['impl']}@{best['bits']}" if best else None
        if r["impl"] == EDGEKIT:
            shape = (r["M"], r["K"], r["N"])
            for bits in (4, 8):
                base = _median(records, EDGEKIT, shape, bits)
                r[f"vs_edgekit_int{bits}"] = r["us_median"] / base if base else None
    return records


@dataclass(frozen=True)
class TargetResult:
    status: str   # "PASS", "MISS" or "N/A" (not measured in this run)
    text: str


def _worst(pairs: list[tuple[tuple, float]], limit: float, what: str) -> TargetResult:
    if not pairs:
        return TargetResult("N/A", f"{what}: not measured in this run")
    shape, ratio = max(pairs, key=lambda p: p[1])
    where = "x".join(map(str, shape))
    status = "PASS" if all(r <= limit for _, r in pairs) else "MISS"
    shapes = len(pairs)
    return TargetResult(status, f"{what}: worst {ratio:.2f}x at {where} ({shapes} shape"
                                f"{'s' if shapes != 1 else ''})")


def targets(records: list[dict]) -> list[TargetResult]:
    """The kernel performance targets, evaluated on dense weights at every M=1 shape of the run (the
    zero-weight target at 1x1024x4096 only)."""
    m1 = sorted({(r["M"], r["K"], r["N"]) for r in records if r["M"] == 1})
    out: list[TargetResult] = []
    for bits in (8, 4):
        pairs = []
        for shape in m1:
            ek = _median(records, EDGEKIT, shape, bits)
            lt = _median(records, "litert_fc", shape, bits)
            if ek and lt:
                pairs.append((shape, ek / lt))
        out.append(_worst(pairs, 1.0, f"edgekit int{bits} <= 1.0x litert_fc int{bits} at every M=1 shape"))
    for bits, limit in ((2, 0.6), (1, 0.5)):
        pairs = []
        for shape in m1:
            ek, base = _median(records, EDGEKIT, shape, bits), _median(records, EDGEKIT, shape, 4)
            if ek and base:
                pairs.append((shape, ek / base))
        out.append(_worst(pairs, limit, f"edgekit int{bits} <= {limit}x edgekit int4 at every M=1 shape"))
    sparse = _median(records, EDGEKIT, TARGET_SHAPE, 8, 0.5)
    dense = _median(records, EDGEKIT, TARGET_SHAPE, 8)
    pairs = [(TARGET_SHAPE, sparse / dense)] if sparse and dense else []
    out.append(_worst(pairs, 0.7, "edgekit int8 50% zero weights <= 0.7x dense int8 at 1x1024x4096"))
    return out


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(records: list[dict], console: Console) -> None:
    """One table per shape: by bit width, edgekit first, then peers by time; fp32 last."""
    shapes = sorted({(r["M"], r["K"], r["N"]) for r in records}, key=lambda s: (s[0], s[1] * s[2]))
    for shape in shapes:
        rows = [r for r in records if (r["M"], r["K"], r["N"]) == shape]
        # torch's fp32 rows go last: they are the reference point, not a bit-width peer.
        rows.sort(key=lambda r: (r["bits"] > 8, -r["bits"], r["sparsity"], r["impl"] != EDGEKIT,
                                 r["us_median"]))
        t = Table(title=f"M={shape[0]} K={shape[1]} N={shape[2]}  (1 thread)", title_justify="left")
        for col in ("impl", "path", "bits", "zeros", "µs med", "µs p90", "weight KiB", "GB/s",
                    "÷ best peer", "÷ ek int4", "÷ ek int8", "call µs*"):
            t.add_column(col, justify="left" if col in ("impl", "path") else "right",
                         no_wrap=col in ("impl", "path"))
        for r in rows:
            path = r.get("isa") or r.get("delegate") or (
                f"acc{r['accuracy_level']}" if "accuracy_level" in r else "")
            t.add_row(r["impl"], path, str(r["bits"]),
                      f"{r['sparsity']:g}", f"{r['us_median']:.1f}", f"{r['us_p90']:.1f}",
                      f"{r['weight_bytes'] / 1024:.0f}", f"{r['gbps']:.1f}",
                      _fmt(r.get("vs_best_peer"), ".2f"), _fmt(r.get("vs_edgekit_int4"), ".2f"),
                      _fmt(r.get("vs_edgekit_int8"), ".2f"), _fmt(r.get("overhead_us"), ".1f"))
        console.print(t)
    console.print("* call µs: median time of one call at 1x16x16 - the fixed cost of the call "
                  "path (Python binding for peers; edgekit is timed in C++).\n"
                  "Peers have no zero-weight compression: at zeros > 0 they run the same "
                  "weights stored dense. '÷ best peer' compares with the fastest peer whose "
                  "weights hold this bit width exactly (>= bits).")


def print_targets(results: list[TargetResult], console: Console) -> None:
    """One PASS/MISS/N/A line per target."""
    style = {"PASS": "green", "MISS": "red", "N/A": "yellow"}
    for res in results:
        console.print(f"[{style[res.status]}]{res.status:4}[/] {res.text}", highlight=False)
