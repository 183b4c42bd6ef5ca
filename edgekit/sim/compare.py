"""Per-layer deltas between two simulations (e.g. int8 vs mixed precision of one model)."""

from __future__ import annotations

_FIELDS = ("cycles", "dram_bytes", "weight_stored_bytes", "decoder_cycles")


def _pct(a: float, b: float) -> float | None:
    return None if a == 0 else 100.0 * (b - a) / a


def compare(a: dict, b: dict) -> dict:
    """Match layers of simulations `a` and `b` by (graph, op name, op type, occurrence) and
    return per-layer and total deltas (b − a, and percent of a). Layers present in one side
    only are listed with the other side as 0."""
    def keyed(sim):
        seen: dict = {}
        out = {}
        for r in sim["layers"]:
            k = (r["graph"], r["name"], r["op"])
            seen[k] = seen.get(k, 0) + 1
            out[(*k, seen[k])] = r
        return out

    ka, kb = keyed(a), keyed(b)
    rows = []
    for k in list(ka) + [k for k in kb if k not in ka]:
        ra, rb = ka.get(k), kb.get(k)
        row = {"graph": k[0], "name": k[1], "op": k[2],
               "bound_a": ra["bound"] if ra else None, "bound_b": rb["bound"] if rb else None}
        for f in _FIELDS:
            va, vb = (ra or {}).get(f, 0), (rb or {}).get(f, 0)
            row[f"{f}_a"], row[f"{f}_b"] = va, vb
            row[f"{f}_delta"] = vb - va
        rows.append(row)
    totals = {}
    for key in ("cycles", "latency_us", "dram_bytes", "weight_stored_bytes",
                "weight_decoded_bytes", "decoder_cycles"):
        va, vb = a["steady"][key], b["steady"][key]
        totals[key] = {"a": va, "b": vb, "delta": vb - va, "pct": _pct(va, vb)}
    va, vb = a["model_stored_bytes"], b["model_stored_bytes"]
    totals["model_stored_bytes"] = {"a": va, "b": vb, "delta": vb - va, "pct": _pct(va, vb)}
    return {"a": a.get("model"), "b": b.get("model"), "profile": b["profile"],
            "totals": totals, "layers": rows}
