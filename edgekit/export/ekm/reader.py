"""Pure-Python EKM reader (docs/format.md §2): bytes or a file -> `ir.Model`.

Nothing read from the file is trusted: every size, offset, count, index, enum and string
reference is checked against what holds it before it is used, and then the model-level rules
(`validate.check_model`, shared with the writer) run on the result. Anything wrong raises
`EkmError` with one line saying what and where — never IndexError, struct.error,
UnicodeDecodeError or MemoryError, and no allocation is sized by an unchecked field.
"""

from __future__ import annotations

import json
import math
import mmap as _mmap
import os
import zlib

import numpy as np

from edgekit import EdgekitError
from edgekit.export import ir
from edgekit.export.ekm import layout as L
from edgekit.export.ekm.validate import check_model

_DTYPE_NAMES = {v: k for k, v in ir.DTYPES.items()}
_KIND_NAMES = {v: k for k, v in ir.KINDS.items()}


class EkmError(EdgekitError, ValueError):
    """A malformed, truncated or inconsistent EKM file (or a model the format cannot hold)."""


class _Sections:
    """Located sections: kind -> (offset, bytes, count), after the section-table checks."""

    def __init__(self, buf, minor: int, count: int):
        n = len(buf)
        table_end = L.HEADER_BYTES + L.ENTRY_BYTES * count
        if table_end > n:
            raise EkmError(f"section table ({count} entries) ends at byte {table_end}, past the "
                           f"end of the file ({n} bytes)")
        self.at: dict[int, tuple[int, int, int]] = {}
        spans = []
        for i in range(count):
            kind, res, off, size, cnt = L.ENTRY.unpack_from(buf, L.HEADER_BYTES + L.ENTRY_BYTES * i)
            where = f"section table entry {i} (kind {kind})"
            if res:
                raise EkmError(f"{where}: reserved field is {res}, must be 0")
            if kind not in L.SECTION_NAMES and minor == L.VERSION_MINOR:
                raise EkmError(f"{where}: unknown section kind {kind}")
            if kind in self.at:
                raise EkmError(f"{where}: duplicate section {L.SECTION_NAMES[kind]}")
            if off % L.ALIGN or off < table_end or off + size > n:
                raise EkmError(f"{where}: section [{off}, {off + size}) must be 64-aligned and lie "
                               f"between the section table end {table_end} and the file end {n}")
            rec = L.RECORD_BYTES.get(kind)
            if rec is not None and size != cnt * rec:  # an unknown kind's record size is unknown
                raise EkmError(f"{where}: {size} bytes != count {cnt} x {rec}-byte records")
            if kind in L.SECTION_NAMES:
                self.at[kind] = (off, size, cnt)
            spans.append((off, off + size, kind))
        spans.sort()
        for (a0, a1, ka), (b0, b1, kb) in zip(spans, spans[1:]):
            if b0 < a1:
                raise EkmError(f"sections kind {ka} [{a0}, {a1}) and kind {kb} [{b0}, {b1}) overlap")
        for kind in L.REQUIRED:
            if kind not in self.at:
                raise EkmError(f"required section {L.SECTION_NAMES[kind]} is missing")

    def array(self, buf, kind: int, dtype) -> np.ndarray:
        if kind not in self.at:
            return np.zeros(0, dtype)
        off, _, cnt = self.at[kind]
        return np.frombuffer(buf, dtype=dtype, count=cnt, offset=off)


class _Strings:
    def __init__(self, raw: bytes):
        self.raw = raw
        self.cache: dict[int, str] = {}

    def get(self, ref: int, where: str) -> str:
        ref = int(ref)
        if ref in self.cache:
            return self.cache[ref]
        if ref >= len(self.raw) or (ref and self.raw[ref - 1] != 0):
            raise EkmError(f"{where}: string reference {ref} is not the start of a string in "
                           f"STRINGS ({len(self.raw)} bytes)")
        end = self.raw.find(b"\0", ref)
        if end < 0:
            raise EkmError(f"{where}: string at {ref} is not NUL-terminated inside STRINGS")
        try:
            s = self.raw[ref:end].decode("utf-8")
        except UnicodeDecodeError:
            raise EkmError(f"{where}: string at {ref} is not valid UTF-8") from None
        self.cache[ref] = s
        return s


def _header(buf) -> tuple[int, int, int]:
    n = len(buf)
    if n < L.HEADER_BYTES:
        raise EkmError(f"file is {n} bytes, shorter than the 64-byte header")
    magic, major, minor, hbytes, count, toff, fbytes, crc, flags, res = L.HEADER.unpack_from(buf, 0)
    if magic != L.MAGIC:
        raise EkmError(f"bad magic {magic!r} (expected {L.MAGIC!r}): not an EKM file")
    if major != L.VERSION_MAJOR:
        raise EkmError(f"unsupported EKM version {major}.{minor} (this reader reads {L.VERSION_MAJOR}.x)")
    if hbytes != L.HEADER_BYTES or toff != L.HEADER_BYTES:
        raise EkmError(f"header: header_bytes {hbytes} and section_table_offset {toff} must be 64")
    if flags or any(res):
        raise EkmError("header: flags and reserved bytes must be 0")
    if not 1 <= count <= L.MAX_SECTIONS:
        raise EkmError(f"header: section_count {count} out of range 1..{L.MAX_SECTIONS}")
    if fbytes != n:
        raise EkmError(f"header: file_bytes {fbytes} != actual size {n} (truncated or trailing bytes)")
    return minor, count, crc


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise EkmError(msg)


def _tensors(buf, sec: _Sections, strings: _Strings, use_views: bool) -> list[ir.Tensor]:
    recs = sec.array(buf, L.TENSORS, L.TENSOR_REC)
    d_off, d_size, _ = sec.at[L.DATA]
    out, names = [], set()
    for i, r in enumerate(recs):
        name = strings.get(r["name"], f"tensor {i}")
        where = f"tensor {i} ({name!r})"
        _check(name not in names, f"{where}: duplicate tensor name")
        names.add(name)
        dt, kind, rank = _DTYPE_NAMES.get(int(r["dtype"])), _KIND_NAMES.get(int(r["kind"])), int(r["rank"])
        _check(dt is not None, f"{where}: unknown dtype code {int(r['dtype'])}")
        _check(kind is not None, f"{where}: unknown kind code {int(r['kind'])}")
        _check(rank <= ir.MAX_RANK and r["reserved"] == 0, f"{where}: rank {rank} > 6 or reserved != 0")
        dims = [int(d) for d in r["dims"]]
        _check(all(d >= 1 for d in dims[:rank]) and not any(dims[rank:]),
               f"{where}: dims {dims} must be >= 1 below rank {rank} and 0 beyond")
        shape = tuple(dims[:rank])
        numel = math.prod(shape)
        _check(numel <= 1 << 31, f"{where}: {numel} elements exceed 2^31")
        off, size = int(r["data"]), int(r["data_bytes"])
        if kind != "const":
            _check(off == 0 and size == 0, f"{where}: a {kind} tensor must have data 0, data_bytes 0")
            out.append(ir.Tensor(name, dt, shape, kind))
            continue
        _check((d_off + off) % L.ALIGN == 0, f"{where}: data offset {d_off + off} is not 64-aligned")
        _check(off + size <= d_size, f"{where}: data [{off}, {off + size}) exceeds DATA ({d_size} bytes)")
        if dt != "packed":
            item = np.dtype(ir.NP_DTYPES[dt]).itemsize
            _check(size == numel * item, f"{where}: data_bytes {size} != {numel} x {item}")
        _check(size > 0, f"{where}: constant with no data")
        start = d_off + off
        if dt == "packed":
            data = memoryview(buf)[start:start + size] if use_views else bytes(buf[start:start + size])
        else:
            data = np.frombuffer(buf, dtype=np.dtype(ir.NP_DTYPES[dt]).newbyteorder("<"),
                                 count=numel, offset=start).reshape(shape)
        out.append(ir.Tensor(name, dt, shape, kind, data))
    return out


def _operands(ops_idx: np.ndarray, first: int, count: int, where: str, ntensors: int,
              allow_absent: bool) -> list[int]:
    _check(first + count <= len(ops_idx),
           f"{where}: operands [{first}, {first + count}) exceed OPERANDS ({len(ops_idx)})")
    idx = [int(v) for v in ops_idx[first:first + count]]
    lo = -1 if allow_absent else 0
    bad = [v for v in idx if not lo <= v < ntensors]
    _check(not bad, f"{where}: tensor index {bad[0] if bad else 0} out of range [{lo}, {ntensors})")
    return idx


def _graphs(buf, sec: _Sections, strings: _Strings, tensors: list[ir.Tensor]) -> dict[str, ir.Graph]:
    operands = sec.array(buf, L.OPERANDS, "<i4")
    ints, floats = sec.array(buf, L.INTS, "<i8"), sec.array(buf, L.FLOATS, "<f4")
    op_recs, g_recs = sec.array(buf, L.OPS, L.OP_REC), sec.array(buf, L.GRAPHS, L.GRAPH_REC)
    nt = len(tensors)

    def name_of(i):
        return None if i < 0 else tensors[i].name

    ops = []
    for i, r in enumerate(op_recs):
        name = strings.get(r["name"], f"op {i}")
        where = f"op {i} ({name!r})"
        typ = ir.OP_NAMES.get(int(r["op"]))
        _check(typ is not None, f"{where}: unknown op code {int(r['op'])}")
        _check(r["reserved"] == 0, f"{where}: reserved field must be 0")
        ins = _operands(operands, int(r["in_first"]), int(r["in_count"]), where, nt, True)
        outs = _operands(operands, int(r["out_first"]), int(r["out_count"]), where, nt, False)
        i0, ni, f0, nf = (int(r[k]) for k in ("int_first", "int_count", "flt_first", "flt_count"))
        _check(i0 + ni <= len(ints), f"{where}: ints [{i0}, {i0 + ni}) exceed INTS ({len(ints)})")
        _check(f0 + nf <= len(floats), f"{where}: floats [{f0}, {f0 + nf}) exceed FLOATS ({len(floats)})")
        ops.append(ir.Op(typ, name, [name_of(v) for v in ins], [name_of(v) for v in outs],
                         [int(v) for v in ints[i0:i0 + ni]], [float(v) for v in floats[f0:f0 + nf]]))
    graphs, next_op = {}, 0
    for i, r in enumerate(g_recs):
        name = strings.get(r["name"], f"graph {i}")
        where = f"graph {i} ({name!r})"
        _check(name not in graphs, f"{where}: duplicate graph name")
        _check(not any(bytes(r["reserved"])), f"{where}: reserved bytes must be 0")
        first, count = int(r["op_first"]), int(r["op_count"])
        # Graphs own consecutive, disjoint op ranges that together cover the op table (§2.4).
        _check(first == next_op and count >= 1 and first + count <= len(ops),
               f"{where}: ops [{first}, {first + count}) must start at {next_op}, be non-empty and "
               f"lie inside OPS ({len(ops)})")
        next_op = first + count
        ins = _operands(operands, int(r["in_first"]), int(r["in_count"]), where, nt, False)
        outs = _operands(operands, int(r["out_first"]), int(r["out_count"]), where, nt, False)
        st = _operands(operands, int(r["state_first"]), 2 * int(r["state_count"]), where, nt, False)
        graphs[name] = ir.Graph(name, ops[first:next_op], [name_of(v) for v in ins],
                                [name_of(v) for v in outs],
                                [(name_of(a), name_of(b)) for a, b in zip(st[::2], st[1::2])])
    _check(next_op == len(ops), f"ops {next_op}..{len(ops) - 1} belong to no graph")
    return graphs


def _meta(buf, sec: _Sections) -> dict:
    off, size, _ = sec.at[L.META]
    try:
        meta = json.loads(bytes(buf[off:off + size]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EkmError(f"META is not UTF-8 JSON: {str(exc).splitlines()[0][:120]}") from None
    _check(isinstance(meta, dict), f"META must be a JSON object, got {type(meta).__name__}")
    return meta


def parse(buf, verify: bool = True, views: bool = False) -> ir.Model:
    """Parse and validate EKM bytes (any buffer: bytes, mmap). `views`: const data are
    read-only views of `buf` (numpy arrays / memoryviews) instead of copies for packed data."""
    minor, count, crc = _header(buf)
    if verify:
        got = zlib.crc32(memoryview(buf)[L.HEADER_BYTES:])
        _check(got == crc, f"checksum mismatch: header says {crc:#010x}, bytes give {got:#010x}")
    sec = _Sections(buf, minor, count)
    s_off, s_size, _ = sec.at[L.STRINGS]
    strings = _Strings(bytes(buf[s_off:s_off + s_size]))
    tensors = _tensors(buf, sec, strings, views)
    graphs = _graphs(buf, sec, strings, tensors)
    model = ir.Model({t.name: t for t in tensors}, graphs, _meta(buf, sec))
    try:
        check_model(model)
    except ValueError as exc:
        raise EkmError(str(exc)) from None
    return model


def from_bytes(b, verify: bool = True) -> ir.Model:
    """Parse EKM bytes into an `ir.Model`; EkmError (one line) if they are malformed."""
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise EkmError(f"from_bytes needs bytes, got {type(b).__name__}")
    return parse(bytes(b), verify)


def read(path: str | os.PathLike, verify: bool = True, mmap: bool = False) -> ir.Model:
    """Read an .ekm file. `verify`: check the CRC-32. `mmap`: map the file and return
    constants as read-only views onto it (numpy arrays; memoryviews for packed weights)
    instead of reading it into memory. EkmError (one line, naming the file) on any problem."""
    try:
        with open(path, "rb") as f:
            if mmap and os.fstat(f.fileno()).st_size >= L.HEADER_BYTES:
                buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
            else:
                buf = f.read()
    except OSError as exc:
        raise EkmError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    try:
        return parse(buf, verify, views=mmap)
    except EkmError as exc:
        raise EkmError(f"{os.fspath(path)}: {exc}") from None
