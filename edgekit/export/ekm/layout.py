"""Byte-level constants of docs/format.md §2 shared by the EKM writer and reader."""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"EKM1"
VERSION_MAJOR, VERSION_MINOR = 1, 0
HEADER_BYTES = 64
ENTRY_BYTES = 32
MAX_SECTIONS = 64
ALIGN = 64

# magic, major, minor, header_bytes, section_count, table_offset, file_bytes, crc, flags, reserved
HEADER = struct.Struct("<4sHHIIQQII24s")
ENTRY = struct.Struct("<IIQQQ")  # kind, reserved, offset, bytes, count
assert HEADER.size == HEADER_BYTES and ENTRY.size == ENTRY_BYTES

STRINGS, TENSORS, OPERANDS, INTS, FLOATS, OPS, GRAPHS, META, DATA = range(1, 10)
SECTION_NAMES = {STRINGS: "STRINGS", TENSORS: "TENSORS", OPERANDS: "OPERANDS", INTS: "INTS",
                 FLOATS: "FLOATS", OPS: "OPS", GRAPHS: "GRAPHS", META: "META", DATA: "DATA"}
RECORD_BYTES = {STRINGS: 1, TENSORS: 64, OPERANDS: 4, INTS: 8, FLOATS: 4, OPS: 48, GRAPHS: 48,
                META: 1, DATA: 1}
REQUIRED = (STRINGS, TENSORS, OPERANDS, OPS, GRAPHS, META, DATA)

TENSOR_REC = np.dtype([("name", "<u4"), ("dtype", "u1"), ("kind", "u1"), ("rank", "u1"),
                       ("reserved", "u1"), ("dims", "<i8", (6,)), ("data", "<u4"),
                       ("data_bytes", "<u4")])
OP_REC = np.dtype([("op", "<u4"), ("name", "<u4"), ("in_first", "<u4"), ("in_count", "<u4"),
                   ("out_first", "<u4"), ("out_count", "<u4"), ("int_first", "<u4"),
                   ("int_count", "<u4"), ("flt_first", "<u4"), ("flt_count", "<u4"),
                   ("reserved", "<u8")])
GRAPH_REC = np.dtype([("name", "<u4"), ("op_first", "<u4"), ("op_count", "<u4"),
                      ("in_first", "<u4"), ("in_count", "<u4"), ("out_first", "<u4"),
                      ("out_count", "<u4"), ("state_first", "<u4"), ("state_count", "<u4"),
                      ("reserved", "V12")])
assert TENSOR_REC.itemsize == 64 and OP_REC.itemsize == 48 and GRAPH_REC.itemsize == 48


def align(v: int) -> int:
    """Round v up to a multiple of 64."""
    return (v + ALIGN - 1) // ALIGN * ALIGN
