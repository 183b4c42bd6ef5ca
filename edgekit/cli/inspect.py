"""`edgekit inspect FILE`: what is inside an .ekm file — graphs, layers, bits, bytes, arena.

Reads the file with the pure-Python reader (no C++ needed); the arena size comes from the C++
runtime when it is built.
"""

from __future__ import annotations

import importlib
import json
import os

import click
import numpy as np

from edgekit.export import ir

# Ops whose second input is the weight matrix (the "layers" of the per-layer table).
_WEIGHTS = {"qlinear": (1,), "linear": (1,), "qconv1d": (1,), "conv1d": (1,),
            "qconv_transpose1d": (1,), "conv_transpose1d": (1,), "qlstm": (3, 4), "lstm": (3, 4)}


def _packed_row(data) -> dict:
    from edgekit.export.ekm.packed_check import check_packed, packing

    s = check_packed(data)  # already validated by the reader; this only slices
    if s.flags & packing.FLAG_NM:
        sparsity = f"{s.nm_n}:{s.nm_m}"
    elif s.flags & packing.FLAG_SPARSE:
        nnz = int(np.unpackbits(s.bitmaps.view(np.uint8)).sum())
        sparsity = f"{100.0 * (1 - nnz / (s.N * s.K)):.1f}% zero"
    else:
        sparsity = "dense"
    if s.flags & packing.FLAG_AFFINE:
        codebook = "affine"
    else:
        codebook = "lut/row" if s.flags & packing.FLAG_PER_ROW else "lut"
    return {"bits": s.bits, "sparsity": sparsity, "stored_bytes": s.nbytes, "codebook": codebook,
            "group_size": s.group_size or "row"}


def _float_row(t: ir.Tensor) -> dict:
    zeros = float(np.count_nonzero(t.data == 0)) / max(t.numel, 1)
    return {"bits": 32, "sparsity": f"{100.0 * zeros:.1f}% zero" if zeros else "dense",
            "stored_bytes": t.nbytes, "codebook": "-", "group_size": "-"}


def _layers(model: ir.Model) -> list[dict]:
    rows = []
    for g in model.graphs.values():
        for op in g.ops:
            for pos in _WEIGHTS.get(op.type, ()):
                t = model.tensors[op.inputs[pos]]
                row = {"name": op.name, "graph": g.name, "op": op.type, "weight": t.name,
                       "shape": list(t.shape)}
                row.update(_packed_row(t.data) if t.dtype == "packed" else _float_row(t))
                rows.append(row)
    return rows


def _io(model: ir.Model, names) -> list[dict]:
    return [{"name": n, "dtype": model.tensors[n].dtype, "shape": list(model.tensors[n].shape)}
            for n in names]


def _arena(path: str, graphs) -> dict:
    """graph -> (arena bytes from the C++ runtime, or None and why there are none)."""
    try:
        runtime = importlib.import_module("edgekit.runtime")
        Session = runtime.Session
        built = runtime.available() if hasattr(runtime, "available") else True
    except (ImportError, AttributeError):
        built = False
    if not built:
        return {g: (None, "n/a (C++ runtime not built)") for g in graphs}
    out = {}
    for g in graphs:
        try:
            out[g] = (int(Session(path, graph=g).arena_bytes), None)
        except Exception as exc:  # noqa: BLE001 - the arena is an extra: a runtime that
            # cannot load this file (or a stale build) must not hide the report of the file.
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            out[g] = (None, f"n/a (runtime: {why})")
    return out


def summarize(path: str) -> dict:
    """Everything `edgekit inspect` shows, as a JSON-able dict. EkmError on a bad file."""
    from edgekit.export import ekm

    model = ekm.read(path)
    file_bytes = os.path.getsize(path)
    consts = [t for t in model.tensors.values() if t.kind == "const"]
    meta = model.meta
    source, recipe = meta.get("source"), meta.get("recipe")
    arena = _arena(path, list(model.graphs))
    graphs = [{"name": g.name, "ops": len(g.ops), "inputs": _io(model, g.inputs),
               "outputs": _io(model, g.outputs),
               "states": [dict(_io(model, [s])[0], next=n) for s, n in g.states],
               "arena_bytes": arena[g.name][0], "arena_note": arena[g.name][1]}
              for g in model.graphs.values()]
    layers = _layers(model)
    packed_stored = sum(_packed_row(t.data)["stored_bytes"] for t in consts if t.dtype == "packed")
    return {
        "file": path,
        "graphs": graphs,
        "layers": layers,
        "totals": {
            "file_bytes": file_bytes,
            "packed_weight_bytes": packed_stored,
            "packed_buffer_bytes": sum(t.nbytes for t in consts if t.dtype == "packed"),
            "float_const_bytes": sum(t.nbytes for t in consts if t.dtype == "f32"),
            "other_const_bytes": sum(t.nbytes for t in consts if t.dtype not in ("f32", "packed")),
            "ops": sum(len(g.ops) for g in model.graphs.values()),
            "tensors": len(model.tensors),
        },
        "metadata": {
            "edgekit_version": meta.get("edgekit_version"),
            "source_model": source.get("model") if isinstance(source, dict) else source,
            "source_size": source.get("size") if isinstance(source, dict) else None,
            "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe,
            "created": meta.get("created"),
            "streaming": meta.get("streaming"),
        },
    }


def _fmt_io(items) -> str:
    return ", ".join(f"{d['name']} {d['dtype']}{d['shape']}" for d in items) or "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def render(info: dict) -> str:
    """The human-readable report."""
    lines = [f"{'file':16s}{info['file']}"]
    md = info["metadata"]
    for key in ("source_model", "source_size", "recipe", "edgekit_version", "created"):
        if md.get(key) is not None:
            lines.append(f"{key.replace('_', ' '):16s}{md[key]}")
    for g in info["graphs"]:
        arena = g["arena_note"] or f"{g['arena_bytes']:,} bytes"
        lines += ["", f"graph {g['name']}: {g['ops']} ops, arena {arena}",
                  f"  inputs   {_fmt_io(g['inputs'])}", f"  outputs  {_fmt_io(g['outputs'])}"]
        if g["states"]:
            lines.append(f"  states   {_fmt_io(g['states'])}")
    if info["layers"]:
        rows = [["layer", "op", "shape", "bits", "sparsity", "bytes", "codebook", "group"]]
        rows += [[r["name"] + ("" if r["op"] not in ("qlstm", "lstm") else f" ({r['weight']})"),
                  r["op"], "x".join(map(str, r["shape"])), str(r["bits"]), r["sparsity"],
                  f"{r['stored_bytes']:,}", r["codebook"], str(r["group_size"])]
                 for r in info["layers"]]
        lines += [""] + _table(rows)
    t = info["totals"]
    lines += ["", f"file bytes          {t['file_bytes']:,}",
              f"packed weight bytes {t['packed_weight_bytes']:,} (stored, format §1.8; "
              f"{t['packed_buffer_bytes']:,} with headers and padding)",
              f"float const bytes   {t['float_const_bytes']:,}",
              f"other const bytes   {t['other_const_bytes']:,}",
              f"ops / tensors       {t['ops']} / {t['tensors']}"]
    return "\n".join(lines)


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect(file: str, as_json: bool) -> None:
    """Show an .ekm file's graphs, per-layer bits/sparsity/bytes, totals and arena size."""
    info = summarize(file)
    click.echo(json.dumps(info, indent=2) if as_json else render(info))
