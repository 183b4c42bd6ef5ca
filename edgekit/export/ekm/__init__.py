"""EKM model files (docs/format.md §2): writer and pure-Python reader of `ir.Model`.

    from edgekit.export import ekm
    ekm.write(model, "out/model.ekm")      # validates first; atomic; deterministic bytes
    model = ekm.read("out/model.ekm")      # EkmError (one line) on any malformed input

Needs numpy only (no torch, no C++ extension), so `edgekit inspect` works everywhere.
"""

from edgekit.export.ekm.reader import EkmError, from_bytes, parse, read
from edgekit.export.ekm.writer import to_bytes, write

__all__ = ["EkmError", "read", "write", "to_bytes", "from_bytes", "parse"]
