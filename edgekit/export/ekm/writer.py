"""EKM writer: `ir.Model` -> bytes of docs/format.md §2, deterministic and validated.

Same model, same bytes: strings, tensors, operands and attributes are laid out in the order
the model lists them, META is JSON with sorted keys, gaps are zeros, and nothing time- or
machine-dependent is added (a `created` stamp is the caller's to put in `meta`).
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

from edgekit import __version__
from edgekit._io import atomic_write_bytes
from edgekit.export import ir
from edgekit.export.ekm import layout as L
from edgekit.export.ekm.validate import check_model

_U32 = 1 << 32


class _Strings:
    """The STRINGS section: each distinct string once, in order of first use."""

    def __init__(self):
        self.buf = bytearray()
        self.at: dict[str, int] = {}

    def ref(self, s: str) -> int:
        if s not in self.at:
            self.at[s] = len(self.buf)
            self.buf += s.encode("utf-8") + b"\0"
        return self.at[s]


def _u32(v: int, what: str) -> int:
    if not 0 <= v < _U32:
        raise ValueError(f"{what} ({v}) does not fit the format's 32-bit field")
    return v


def _tensor_table(model: ir.Model, strings: _Strings):
    index = {name: i for i, name in enumerate(model.tensors)}
    recs = np.zeros(len(model.tensors), L.TENSOR_REC)
    blobs, pos = [], 0
    for i, t in enumerate(model.tensors.values()):
        r = recs[i]
        r["name"] = strings.ref(t.name)
        r["dtype"], r["kind"], r["rank"] = ir.DTYPES[t.dtype], ir.KINDS[t.kind], len(t.shape)
        r["dims"][:len(t.shape)] = t.shape
        if t.kind == "const":
            raw = bytes(t.data) if t.dtype == "packed" else np.ascontiguousarray(t.data).tobytes()
            pos = L.align(pos)
            r["data"] = _u32(pos, f"data offset of tensor {t.name!r}")
            r["data_bytes"] = _u32(len(raw), f"data size of tensor {t.name!r}")
            blobs.append((pos, raw))
            pos += len(raw)
    data = bytearray(pos)
    for off, raw in blobs:
        data[off:off + len(raw)] = raw
    return index, recs, bytes(data)


def _graph_tables(model: ir.Model, index: dict, strings: _Strings):
    operands: list[int] = []
    ints: list[int] = []
    floats: list[float] = []
    ops, graphs = [], []

    def refs(names) -> tuple[int, int]:
        first = len(operands)
        operands.extend(-1 if n is None else index[n] for n in names)
        return first, len(operands) - first

    for g in model.graphs.values():
        op_first = len(ops)
        for op in g.ops:
            rec = [ir.OPS[op.type].code, strings.ref(op.name), *refs(op.inputs), *refs(op.outputs),
                   len(ints), len(op.ints), len(floats), len(op.floats)]
            ints.extend(int(v) for v in op.ints)
            floats.extend(float(v) for v in op.floats)
            ops.append(tuple(rec) + (0,))
        inputs, outputs = refs(g.inputs), refs(g.outputs)
        st_first = len(operands)
        refs([n for pair in g.states for n in pair])
        graphs.append((strings.ref(g.name), op_first, len(g.ops), *inputs, *outputs,
                       st_first, len(g.states), b""))
    if any(not -(1 << 63) <= v < (1 << 63) for v in ints):
        raise ValueError("an int attribute does not fit in int64")
    return (np.array(operands, "<i4"), np.array(ints, "<i8"), np.array(floats, "<f4"),
            np.array(ops, L.OP_REC), np.array(graphs, L.GRAPH_REC))


def to_bytes(model: ir.Model) -> bytes:
    """Validate `model` (ValueError naming the fault) and return its EKM bytes."""
    check_model(model)
    meta = dict(model.meta)
    meta.setdefault("edgekit_version", __version__)
    strings = _Strings()
    index, tensors, data = _tensor_table(model, strings)
    operands, ints, floats, ops, graphs = _graph_tables(model, index, strings)
    meta_b = json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False,
                        separators=(",", ":")).encode("utf-8")
    sections = [(L.STRINGS, bytes(strings.buf)), (L.TENSORS, tensors.tobytes()),
                (L.OPERANDS, operands.tobytes()), (L.INTS, ints.tobytes()),
                (L.FLOATS, floats.tobytes()), (L.OPS, ops.tobytes()),
                (L.GRAPHS, graphs.tobytes()), (L.META, meta_b), (L.DATA, data)]
    # INTS/FLOATS are optional: leave them out when empty rather than write 0-byte sections.
    sections = [(k, b) for k, b in sections if b or k in L.REQUIRED]
    pos = L.HEADER_BYTES + L.ENTRY_BYTES * len(sections)
    table, body = bytearray(), bytearray()
    for kind, b in sections:
        pos = L.align(pos)
        table += L.ENTRY.pack(kind, 0, pos, len(b), len(b) // L.RECORD_BYTES[kind])
        body += bytes(pos - L.HEADER_BYTES - L.ENTRY_BYTES * len(sections) - len(body)) + b
        pos += len(b)
    rest = bytes(table + body)
    header = L.HEADER.pack(L.MAGIC, L.VERSION_MAJOR, L.VERSION_MINOR, L.HEADER_BYTES,
                           len(sections), L.HEADER_BYTES, L.HEADER_BYTES + len(rest),
                           zlib.crc32(rest), 0, bytes(24))
    return header + rest


def write(model: ir.Model, path: str | os.PathLike) -> int:
    """Validate `model` and write it to `path` atomically; returns the file size in bytes."""
    b = to_bytes(model)
    atomic_write_bytes(path, b)
    return len(b)

