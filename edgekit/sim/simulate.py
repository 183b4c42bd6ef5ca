"""One simulation: per-layer costs of a streaming step, totals, streaming figures and the
functional check, as one deterministic JSON-able dict (docs/sim.md)."""

from __future__ import annotations

from pathlib import Path

from edgekit.export.ir import Model
from edgekit.sim import cost

BOUNDS = ("compute", "dram", "sram", "decoder", "host", "overhead")


def graphs_for(model: Model, graph: str | None) -> list[str]:
    """The graph calls of one step: `graph` is "all" (every graph once), or a comma list of
    NAME or NAME*COUNT (e.g. "encoder,joiner*10,predictor" for an RNN-T step whose encoder
    emits 10 frames); None: META's streaming graph, else the only graph."""
    if graph == "all":
        return list(model.graphs)
    if graph is not None:
        calls: list[str] = []
        for item in graph.split(","):
            name, _, count = item.strip().partition("*")
            if name not in model.graphs:
                raise ValueError(f"no graph {name!r}; graphs: {', '.join(model.graphs)} "
                                 "(or all)")
            if count and (not count.isdigit() or not 1 <= int(count) <= 10_000):
                raise ValueError(f"graph call count must be 1..10000, got {item.strip()!r}")
            calls += [name] * (int(count) if count else 1)
        return calls
    from edgekit.bench.estimate import graph_name

    return [graph_name(model, None)]  # the rule every bench result follows


def chunk_ms(meta: dict) -> float | None:
    """Audio per streaming step, by the same rule as measured bench runs."""
    from edgekit.bench.harness import chunk_ms_of

    return chunk_ms_of(meta)


def _totals(rows: list[cost.LayerCost], clock_mhz: float) -> dict:
    cycles = sum(r.cycles for r in rows)
    by_bound = {b: sum(r.cycles for r in rows if r.bound == b) for b in BOUNDS}
    return {
        "cycles": cycles, "latency_us": cycles / clock_mhz,
        "macs": sum(r.macs for r in rows),
        "weight_stored_bytes": sum(r.weight_stored_bytes for r in rows),
        "weight_decoded_bytes": sum(r.weight_decoded_bytes for r in rows),
        "activation_bytes": sum(r.act_in_bytes + r.act_out_bytes for r in rows),
        "dram_bytes": sum(r.dram_bytes for r in rows),
        "sram_bytes": sum(r.sram_bytes for r in rows),
        "decoder_cycles": sum(r.decoder_cycles for r in rows),
        "host_ops": sum(r.unit == "host" for r in rows),
        "cycles_by_bound": by_bound,
    }


def simulate(model: Model, prof: dict, graph: str | None = None,
             residency: bool | None = None, step_ms: float | None = None) -> dict:
    """Cost of one streaming step of `model` on accelerator profile `prof`.

    `steady` is a step after the first (resident weights already in SRAM), `first` the first
    step (every weight from DRAM). `residency` None follows the profile. Pure function of its
    arguments: the numbers are what CI gates on.
    """
    names = graphs_for(model, graph)
    rows, res = cost.graph_costs(model, names, prof, residency)
    first_rows, _ = cost.graph_costs(model, names, prof, False)
    clock = float(prof["clock_mhz"])
    steady, first = _totals(rows, clock), _totals(first_rows, clock)
    ms = step_ms if step_ms is not None else chunk_ms(model.meta)
    streaming = None
    if ms:
        streaming = {"chunk_ms": ms, "chunk_latency_us": steady["latency_us"],
                     "first_chunk_latency_us": first["latency_us"],
                     "rtf": steady["latency_us"] / (ms * 1e3),
                     "dram_bytes_per_s_audio": steady["dram_bytes"] * 1000.0 / ms}
    stored_file = sum(cost._const_bytes(model, n) for n, t in model.tensors.items()
                      if t.kind == "const")
    return {
        "profile": prof["name"], "clock_mhz": clock, "graphs": names,
        "meta_source": model.meta.get("source"),
        "meta_recipe": (model.meta.get("recipe") or {}).get("name"),
        "residency": res, "model_stored_bytes": stored_file,
        "steady": steady, "first": first, "streaming": streaming,
        "fits_sram": res["peak_sram_bytes"] <= prof["sram"]["bytes"],
        "layers": [r.as_dict() for r in rows],
    }


def simulate_file(path: str | Path, prof: dict, graph: str | None = None,
                  residency: bool | None = None, step_ms: float | None = None,
                  functional_steps: int = 0, seed: int = 0) -> dict:
    """`simulate` on an EKM file, plus (with `functional_steps` > 0) the bit-exact functional
    run through the runtime's reference kernels checked against its default kernels.
    ValueError with a one-line reason for a bad file or graph."""
    from edgekit.export import ekm

    try:
        model = ekm.read(path)
    except ekm.EkmError as exc:
        raise ValueError(str(exc)) from None  # the reader's message already names the file
    out = {"model": str(path), **simulate(model, prof, graph, residency, step_ms)}
    out["functional"] = None
    if functional_steps > 0:
        from edgekit.sim import functional

        names = list(dict.fromkeys(out["graphs"]))
        checks = [functional.check(path, g, functional_steps, seed) for g in names]
        out["functional"] = {"ok": all(c["ok"] for c in checks),
                             "how": "; ".join(f"{g}: {c['how']}" for g, c in zip(names, checks)),
                             "graphs": dict(zip(names, checks))}
    return out
