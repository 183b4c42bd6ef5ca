"""Malformed EKM files, as (description, bytes) pairs, for every EKM reader.

`corrupt_cases(b)` takes a valid file's bytes and yields variants that docs/format.md §2 says
a reader must reject: truncations at every section boundary (and ±1), huge counts, offsets and
dims, overlapping sections, bad enums, bad string references, operand indices out of range,
op output shape mismatches, duplicate names, broken data flow and bad packed weights. Every
case except the plain truncations and the checksum case carries a recomputed CRC-32 and
file_bytes, so it reaches the check it is about instead of stopping at the checksum.

The Python tests run them through `edgekit.export.ekm`; the C++ runtime's tests can run the
same cases through `parse_ekm` (e.g. write them out with `write_cases(dir)`).
`meta_json_cases` are separate: the C++ reader only checks META is UTF-8 (§2.1), it does not
parse the JSON.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Iterator

from edgekit.export import ekm
from edgekit.export.ekm import layout as L

Case = tuple[str, bytes]


def locate(b: bytes) -> dict[int, tuple[int, int, int]]:
    """kind -> (offset, bytes, count) of a valid file's sections (trusts the file)."""
    count = struct.unpack_from("<I", b, 12)[0]
    out = {}
    for i in range(count):
        kind, _, off, size, cnt = L.ENTRY.unpack_from(b, L.HEADER_BYTES + L.ENTRY_BYTES * i)
        out[kind] = (off, size, cnt)
    return out


def fix(b: bytes | bytearray) -> bytes:
    """Set file_bytes and the CRC-32 to match the (modified) bytes."""
    b = bytearray(b)
    struct.pack_into("<Q", b, 24, len(b))
    struct.pack_into("<I", b, 32, zlib.crc32(bytes(b[L.HEADER_BYTES:])))
    return bytes(b)


def _patch(b: bytes, off: int, fmt: str, *values) -> bytes:
    out = bytearray(b)
    struct.pack_into(fmt, out, off, *values)
    return fix(out)


def _entry_pos(b: bytes, kind: int) -> int:
    count = struct.unpack_from("<I", b, 12)[0]
    for i in range(count):
        if L.ENTRY.unpack_from(b, L.HEADER_BYTES + L.ENTRY_BYTES * i)[0] == kind:
            return L.HEADER_BYTES + L.ENTRY_BYTES * i
    raise KeyError(kind)


def truncation_cases(b: bytes) -> Iterator[Case]:
    """Cut at every section boundary and ±1, as found (header unchanged) and with the header
    patched to the new size (so the section bounds checks are what fails)."""
    cuts = {0, 1, L.HEADER_BYTES - 1, L.HEADER_BYTES, L.HEADER_BYTES + 1, len(b) - 1}
    secs = locate(b)
    table_end = L.HEADER_BYTES + L.ENTRY_BYTES * len(secs)
    for edge in [table_end] + [o for o, _, _ in secs.values()] + [o + s for o, s, _ in secs.values()]:
        cuts.update({edge - 1, edge, edge + 1})
    for n in sorted(c for c in cuts if 0 <= c < len(b)):
        yield f"truncated to {n} bytes", b[:n]
        if n >= L.HEADER_BYTES:
            yield f"truncated to {n} bytes, header patched to match", fix(b[:n])


def _tensor(b: bytes, i: int) -> int:
    return locate(b)[L.TENSORS][0] + 64 * i


def _op(b: bytes, i: int) -> int:
    return locate(b)[L.OPS][0] + 48 * i


def _graph(b: bytes, i: int) -> int:
    return locate(b)[L.GRAPHS][0] + 48 * i


def structure_cases(b: bytes) -> Iterator[Case]:
    """Header and section-table damage."""
    sec = locate(b)
    yield "checksum mismatch", _flip_unfixed(b, len(b) - 1)
    yield "bad magic", _patch(b, 0, "<4s", b"EKM2")
    yield "major version 2", _patch(b, 4, "<H", 2)
    yield "header_bytes 32", _patch(b, 8, "<I", 32)
    yield "section_count 0", _patch(b, 12, "<I", 0)
    yield "section_count 65", _patch(b, 12, "<I", 65)
    yield "section_count 2^32-1", _patch(b, 12, "<I", 0xFFFFFFFF)
    yield "section_table_offset 128", _patch(b, 16, "<Q", 128)
    yield "header flags 1", _patch(b, 36, "<I", 1)
    yield "header reserved byte set", _patch(b, 40, "<B", 1)
    grown = bytearray(b + b"\0")
    struct.pack_into("<I", grown, 32, zlib.crc32(bytes(grown[L.HEADER_BYTES:])))
    yield "one trailing byte (file_bytes unchanged)", bytes(grown)
    yield "file_bytes 2^64-1", _patch_unfixed(b, 24, "<Q", 2**64 - 1)
    for kind, name in ((L.OPS, "OPS"), (L.DATA, "DATA"), (L.STRINGS, "STRINGS")):
        e = _entry_pos(b, kind)
        off, size, cnt = sec[kind]
        yield f"{name}: offset 2^63", _patch(b, e + 8, "<Q", 2**63)
        yield f"{name}: offset not 64-aligned", _patch(b, e + 8, "<Q", off + 8)
        yield f"{name}: bytes 2^64-1", _patch(b, e + 16, "<Q", 2**64 - 1)
        yield f"{name}: count 2^64-1", _patch(b, e + 24, "<Q", 2**64 - 1)
        yield f"{name}: bytes+64 past the end", _patch(b, e + 16, "<QQ", size + len(b),
                                                      (size + len(b)) // L.RECORD_BYTES[kind])
        yield f"{name}: entry reserved field set", _patch(b, e + 4, "<I", 7)
        yield f"{name}: offset inside the section table", _patch(b, e + 8, "<Q", 0)
    e_ops, e_ten = _entry_pos(b, L.OPS), _entry_pos(b, L.TENSORS)
    yield "OPS overlaps TENSORS", _patch(b, e_ops + 8, "<Q", sec[L.TENSORS][0])
    yield "TENSORS grown into the next section", _patch(
        b, e_ten + 16, "<QQ", sec[L.TENSORS][1] + 64, sec[L.TENSORS][2] + 1)
    yield "section kind 0", _patch(b, e_ops, "<I", 0)
    yield "section kind 10 (unknown at minor 0)", _patch(b, e_ops, "<I", 10)
    yield "duplicate section kind", _patch(b, e_ops, "<I", L.TENSORS)
    yield "required section GRAPHS missing", _drop_entry(b, L.GRAPHS)


def _drop_entry(b: bytes, kind: int) -> bytes:
    """Remove one section's table entry (the section's bytes stay, as an unlisted gap)."""
    out = bytearray(b)
    e = _entry_pos(b, kind)
    count = struct.unpack_from("<I", b, 12)[0]
    end = L.HEADER_BYTES + L.ENTRY_BYTES * count
    out[e:end] = out[e + L.ENTRY_BYTES:end] + bytes(L.ENTRY_BYTES)
    struct.pack_into("<I", out, 12, count - 1)
    return fix(out)


def _flip_unfixed(b: bytes, pos: int) -> bytes:
    out = bytearray(b)
    out[pos] ^= 0x5A
    return bytes(out)


def _patch_unfixed(b: bytes, off: int, fmt: str, *values) -> bytes:
    out = bytearray(b)
    struct.pack_into(fmt, out, off, *values)
    return bytes(out)


def record_cases(b: bytes, names: list[str], op_types: list[str]) -> Iterator[Case]:
    """Damage inside the tables; `names` lists the file's tensors in table order and
    `op_types` its ops in table order (both from the valid file)."""
    sec = locate(b)
    s_off, s_size, _ = sec[L.STRINGS]
    t0, t1 = _tensor(b, 0), _tensor(b, 1)
    yield "tensor dtype 0", _patch(b, t0 + 4, "<B", 0)
    yield "tensor dtype 7", _patch(b, t0 + 4, "<B", 7)
    yield "tensor kind 0", _patch(b, t0 + 5, "<B", 0)
    yield "tensor kind 6", _patch(b, t0 + 5, "<B", 6)
    yield "tensor rank 7", _patch(b, t0 + 6, "<B", 7)
    yield "tensor reserved byte set", _patch(b, t0 + 7, "<B", 1)
    yield "tensor dim 0", _patch(b, t0 + 8, "<q", 0)
    yield "tensor dim -1", _patch(b, t0 + 8, "<q", -1)
    yield "tensor dim 2^62", _patch(b, t0 + 8, "<q", 2**62)
    yield "tensor dims overflow 2^31 elements", _patch(b, t0 + 8, "<qqq", 2**20, 2**20, 2**20)
    yield "tensor dim set beyond rank", _patch(b, t0 + 8 + 8 * 5, "<q", 3)
    yield "tensor name ref past STRINGS", _patch(b, t0, "<I", s_size)
    yield "tensor name ref 2^32-1", _patch(b, t0, "<I", 0xFFFFFFFF)
    yield "tensor name ref into the middle of a string", _patch(b, t0, "<I", 1)
    yield "duplicate tensor name", _patch(b, t1, "<I", struct.unpack_from("<I", b, t0)[0])
    raw = bytearray(b)
    raw[s_off + s_size - 1] = ord("x")  # the last string loses its NUL
    yield "STRINGS: last string not NUL-terminated", fix(raw)
    raw = bytearray(b)
    raw[s_off] = 0xFF
    yield "STRINGS: invalid UTF-8", fix(raw)
    const = next(i for i, n in enumerate(names) if n.endswith(".b"))
    tc = _tensor(b, const)
    d_size = sec[L.DATA][1]
    yield "const data offset past DATA", _patch(b, tc + 56, "<I", L.align(d_size))
    yield "const data offset 2^32-1", _patch(b, tc + 56, "<I", 0xFFFFFFFF)
    yield "const data offset not 64-aligned", _patch(b, tc + 56, "<I",
                                                     struct.unpack_from("<I", b, tc + 56)[0] + 4)
    yield "const data_bytes 2^32-1", _patch(b, tc + 60, "<I", 0xFFFFFFFF)
    yield "const data_bytes one short", _patch(b, tc + 60, "<I", struct.unpack_from("<I", b, tc + 60)[0] - 4)
    yield "input tensor with data", _patch(b, t0 + 60, "<I", 64)
    packed = next(i for i, n in enumerate(names) if n.endswith(".W") and n != "out.W")
    tp = _tensor(b, packed)
    p_off = sec[L.DATA][0] + struct.unpack_from("<I", b, tp + 56)[0]
    yield "packed weights: bits 9", _patch(b, p_off + 6, "<B", 9)
    n_dim = struct.unpack_from("<q", b, tp + 8)[0]
    yield "packed weights: N disagrees with the tensor dims", _patch(b, tp + 8, "<q", n_dim + 1)
    yield "packed weights: unknown flag bit", _patch(b, p_off + 7, "<B", 0x10)
    yield "packed weights: codes_bytes 2^64-1", _patch(b, p_off + 24, "<Q", 2**64 - 1)
    yield "packed tensor of kind input", _patch(b, tp + 5, "<B", 2)
    o0 = _op(b, 0)
    n_operands = sec[L.OPERANDS][2]
    yield "op code 9 (unused)", _patch(b, o0, "<I", 9)
    yield "op code 2^32-1", _patch(b, o0, "<I", 0xFFFFFFFF)
    yield "op reserved field set", _patch(b, o0 + 40, "<Q", 1)
    yield "op name ref past STRINGS", _patch(b, o0 + 4, "<I", s_size + 5)
    yield "op in_first past OPERANDS", _patch(b, o0 + 8, "<I", n_operands)
    yield "op in_count 2^32-1", _patch(b, o0 + 12, "<I", 0xFFFFFFFF)
    yield "op in_first+in_count wraps 32 bits", _patch(b, o0 + 8, "<I", 0xFFFFFFFF)
    yield "op with 2 inputs where 3 are required", _patch(b, o0 + 12, "<I", 2)
    yield "op out_count 2", _patch(b, o0 + 20, "<I", 2)
    yield "op int_first past INTS", _patch(b, o0 + 24, "<I", 2**31)
    yield "op int_count 3", _patch(b, o0 + 28, "<I", 3)
    yield "op flt_first past FLOATS", _patch(b, o0 + 32, "<I", 2**31)
    first_in = struct.unpack_from("<I", b, o0 + 8)[0]
    opnd = sec[L.OPERANDS][0] + 4 * first_in
    yield "operand tensor index = tensor count", _patch(b, opnd, "<i", len(names))
    yield "operand tensor index -2", _patch(b, opnd, "<i", -2)
    yield "required operand absent (-1)", _patch(b, opnd, "<i", -1)
    out_at = sec[L.OPERANDS][0] + 4 * struct.unpack_from("<I", b, o0 + 16)[0]
    yield "op output absent (-1)", _patch(b, out_at, "<i", -1)
    yield "op writes a constant", _patch(b, out_at, "<i", const)
    yield "op writes a graph input", _patch(b, out_at, "<i", 0)
    q = op_types.index("qlinear")
    ints_at = sec[L.INTS][0] + 8 * struct.unpack_from("<I", b, _op(b, q) + 24)[0]
    yield "qlinear act_mode 2 (bad enum)", _patch(b, ints_at, "<q", 2)
    yield "qlinear x_zp 128", _patch(b, ints_at + 8, "<q", 128)
    flt_at = sec[L.FLOATS][0] + 4 * struct.unpack_from("<I", b, _op(b, q) + 32)[0]
    yield "qlinear x_scale 0 with a static grid", _patch(b, flt_at, "<f", 0.0)
    act = names.index("fc1.y")
    yield "op output shape mismatch (stored dim 1 off by one)", _patch(
        b, _tensor(b, act) + 16, "<q", struct.unpack_from("<q", b, _tensor(b, act) + 16)[0] + 1)
    yield "op output dtype mismatch", _patch(b, _tensor(b, act) + 4, "<B", 2)
    yield "activation read before it is produced (ops swapped)", _swap(b, _op(b, 0), _op(b, 1), 48)
    g0 = _graph(b, 0)
    yield "graph op_count 0", _patch(b, g0 + 8, "<I", 0)
    yield "graph op_count past OPS", _patch(b, g0 + 8, "<I", len(op_types) + 1)
    yield "graph op range leaves an op out", _patch(b, g0 + 8, "<I", len(op_types) - 1)
    yield "graph state_count 2^31", _patch(b, g0 + 32, "<I", 2**31)
    yield "graph in_first 2^32-1", _patch(b, g0 + 12, "<I", 0xFFFFFFFF)
    yield "graph reserved byte set", _patch(b, g0 + 40, "<B", 1)
    yield "graph name ref past STRINGS", _patch(b, g0, "<I", s_size)
    st_at = sec[L.OPERANDS][0] + 4 * struct.unpack_from("<I", b, g0 + 28)[0]
    s0, n0, s1 = struct.unpack_from("<iii", b, st_at)
    yield "state pair's next value of another shape", _patch(b, st_at + 4, "<i", names.index("lstm.h_next"))
    yield "state listed twice", _patch(b, st_at + 8, "<i", s0)
    yield "state of kind activation", _patch(b, _tensor(b, s0) + 5, "<B", 4)
    in_at = sec[L.OPERANDS][0] + 4 * struct.unpack_from("<I", b, g0 + 12)[0]
    yield "graph input that is a constant", _patch(b, in_at, "<i", const)
    out_g = sec[L.OPERANDS][0] + 4 * struct.unpack_from("<I", b, g0 + 20)[0]
    yield "graph output that is an activation", _patch(b, out_g, "<i", act)
    yield "META: invalid UTF-8", _meta(b, b"\xff\xfe")


def _swap(b: bytes, a: int, c: int, n: int) -> bytes:
    out = bytearray(b)
    out[a:a + n], out[c:c + n] = b[c:c + n], b[a:a + n]
    return fix(out)


def _meta(b: bytes, text: bytes) -> bytes:
    """Replace META's content (same size: pad with spaces, which JSON ignores)."""
    off, size, _ = locate(b)[L.META]
    out = bytearray(b)
    out[off:off + size] = text[:size].ljust(size, b" ")
    return fix(out)


def meta_json_cases(b: bytes) -> Iterator[Case]:
    """META that is UTF-8 but not a JSON object (rejected by the Python reader only)."""
    yield "META: not JSON", _meta(b, b"{not json")
    yield "META: a JSON array", _meta(b, b"[1, 2]")
    yield "META: unterminated nested arrays", _meta(b, b"[" * (locate(b)[L.META][1]))


def valid_file() -> bytes:
    """The file the record cases are written against: `ekm_models.streaming_model()`."""
    from ekm_models import streaming_model

    return ekm.to_bytes(streaming_model())


def corrupt_cases(b: bytes | None = None) -> Iterator[Case]:
    """Every case every reader must reject (see the module docstring). `b`: a valid file
    with the tensor and op names of `ekm_models.streaming_model()` (the default)."""
    b = valid_file() if b is None else b
    model = ekm.from_bytes(b)
    names = list(model.tensors)
    op_types = [op.type for g in model.graphs.values() for op in g.ops]
    yield from truncation_cases(b)
    yield from structure_cases(b)
    yield from record_cases(b, names, op_types)


def write_cases(out_dir, b: bytes | None = None) -> list[Path]:
    """Write each case to out_dir/NNN.ekm plus out_dir/cases.txt ("NNN description" lines)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, lines = [], []
    for i, (desc, data) in enumerate(corrupt_cases(b)):
        p = out_dir / f"{i:03d}.ekm"
        p.write_bytes(data)
        paths.append(p)
        lines.append(f"{i:03d} {desc}")
    (out_dir / "cases.txt").write_text("\n".join(lines) + "\n")
    return paths
