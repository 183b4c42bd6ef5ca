"""`edgekit compare a.json b.json`: is b faster or slower than a, and is it significant?

Two tests on the kept samples: Mann-Whitney U (two-sided, do the distributions differ?) and
a bootstrap CI of median(b) − median(a) (how much, with what uncertainty). A difference is
called significant when p < alpha AND the CI excludes 0.
"""

from __future__ import annotations

from edgekit.bench import schema, stats

ALPHA = 0.01


def compare(a: dict, b: dict, seed: int = 0, alpha: float = ALPHA) -> dict:
    """Compare two measured results; ValueError if either is an estimate."""
    for name, r in (("first", a), ("second", b)):
        if r["kind"] != "measured":
            raise ValueError(f"the {name} result is an estimate; only measurements compare")
    sa, sb = a["samples_us"], b["samples_us"]
    ma, mb = a["stats"]["p50"], b["stats"]["p50"]
    u, p = stats.mann_whitney_u(sa, sb)
    lo, hi = stats.bootstrap_median_diff_ci(sa, sb, seed=seed)
    sig = p < alpha and (lo > 0 or hi < 0)
    verdict = "no significant difference"
    if sig:
        verdict = "second is slower" if mb > ma else "second is faster"
    notes = []
    if min(len(sa), len(sb)) < 8:
        notes.append("fewer than 8 samples on a side: the U test's normal approximation is rough")
    if a["stats"]["unstable"] or b["stats"]["unstable"]:
        notes.append("a run is flagged unstable: the test sees sample noise, not drift "
                     "between runs (load, thermal); check with --repeat")
    if a["device"]["profile"] != b["device"]["profile"]:
        notes.append("different devices")
    return {"p50_a_us": ma, "p50_b_us": mb, "ratio": mb / ma if ma else float("inf"),
            "diff_us": mb - ma, "diff_ci95_us": [lo, hi], "mann_whitney_u": u, "p_value": p,
            "alpha": alpha, "significant": bool(sig), "verdict": verdict, "notes": notes}


def compare_files(path_a: str, path_b: str, seed: int = 0, alpha: float = ALPHA) -> dict:
    """`compare` on two result files (each validated against the schema)."""
    return compare(schema.load(path_a), schema.load(path_b), seed=seed, alpha=alpha)
