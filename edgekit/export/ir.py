"""The lowered model: the in-memory form of an EKM file (docs/format.md §2).

The lowering (`edgekit.export.lower`) turns a compressed PyTorch model into a `Model`; every
emitter starts from it — `edgekit.export.ekm` writes it byte for byte, `edgekit.export.onnx`
and `edgekit.export.tflite` translate its ops — so the three formats agree by construction.
The pure-Python EKM reader returns the same structure, which is what `edgekit inspect` and the
simulator read.

No torch and no C++ module are imported here: this must stay importable everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

DTYPES = {"f32": 1, "i32": 2, "i8": 3, "u8": 4, "i64": 5, "packed": 6}
NP_DTYPES = {"f32": np.float32, "i32": np.int32, "i8": np.int8, "u8": np.uint8, "i64": np.int64}
KINDS = {"const": 1, "input": 2, "output": 3, "activation": 4, "state": 5}
MAX_RANK = 6


class OpSpec(NamedTuple):
    """One row of docs/format.md §2.6: arity and attribute counts (-1 = any, `min_in` applies)."""

    code: int
    min_in: int
    max_in: int          # -1: unbounded (concat)
    n_out: int
    n_ints: int          # -1: variable (reshape dims, transpose perm)
    n_floats: int
    optional: tuple = ()  # input positions that may be absent (None / operand -1)
    quantized: bool = False


def _u(code):  # unary elementwise
    return OpSpec(code, 1, 1, 1, 0, 0)


def _b(code):  # binary elementwise
    return OpSpec(code, 2, 2, 1, 0, 0)


OPS: dict[str, OpSpec] = {
    "qlinear": OpSpec(1, 3, 3, 1, 2, 1, (2,), True),
    "linear": OpSpec(2, 3, 3, 1, 0, 0, (2,)),
    "qconv1d": OpSpec(3, 3, 3, 1, 8, 1, (2,), True),
    "conv1d": OpSpec(4, 3, 3, 1, 5, 0, (2,)),
    "qconv_transpose1d": OpSpec(5, 3, 3, 1, 8, 1, (2,), True),
    "conv_transpose1d": OpSpec(6, 3, 3, 1, 5, 0, (2,)),
    "qlstm": OpSpec(7, 7, 7, 3, 3, 2, (5, 6), True),
    "lstm": OpSpec(8, 7, 7, 3, 0, 0, (5, 6)),
    "layer_norm": OpSpec(10, 3, 3, 1, 0, 1, (1, 2)),
    "softmax": OpSpec(11, 1, 1, 1, 1, 0),
    "matmul": OpSpec(12, 2, 2, 1, 0, 0),
    "add": _b(20), "sub": _b(21), "mul": _b(22), "div": _b(23),
    "where": OpSpec(24, 3, 3, 1, 0, 0),
    "equal": _b(25),
    "relu": _u(30),
    "leaky_relu": OpSpec(31, 1, 1, 1, 0, 1),
    "silu": _u(32), "sigmoid": _u(33), "tanh": _u(34),
    "glu": OpSpec(35, 1, 1, 1, 1, 0),
    "clamp": OpSpec(36, 1, 1, 1, 0, 2),
    "exp": _u(37), "log": _u(38), "sqrt": _u(39), "neg": _u(40), "abs": _u(41),
    "reshape": OpSpec(50, 1, 1, 1, -1, 0),
    "transpose": OpSpec(51, 1, 1, 1, -1, 0),
    "concat": OpSpec(52, 1, -1, 1, 1, 0),
    "slice": OpSpec(53, 1, 1, 1, 4, 0),
    "pad": OpSpec(54, 1, 1, 1, 3, 1),
    "gather": OpSpec(55, 2, 2, 1, 1, 0),
    "copy": _u(56),
    "cast": OpSpec(57, 1, 1, 1, 1, 0),
    "nearest": OpSpec(58, 2, 2, 1, 0, 0),
    "reduce_mean": OpSpec(59, 1, 1, 1, 2, 0),
}
OP_NAMES = {spec.code: name for name, spec in OPS.items()}


@dataclass
class Tensor:
    """A named tensor. `data`: np.ndarray for consts, `bytes` (the §1 serialized buffer) for
    `packed` consts (a read-only memoryview of the file from `ekm.read(..., mmap=True)`),
    None otherwise. Packed tensors have shape (N, K)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    kind: str
    data: Any = None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        """Bytes this tensor's data takes in the file (0 for non-constants)."""
        if self.data is None:
            return 0
        return len(self.data) if self.dtype == "packed" else int(self.data.nbytes)


@dataclass
class Op:
    """One op: `type` is a key of OPS; `name` the PyTorch module path it came from.
    `inputs` may hold None for an absent optional operand."""

    type: str
    name: str
    inputs: list[str | None]
    outputs: list[str]
    ints: list[int] = field(default_factory=list)
    floats: list[float] = field(default_factory=list)


@dataclass
class Graph:
    """Ops in execution order; `states` pairs (state tensor, tensor holding its next value)."""

    name: str
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    states: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Model:
    """Tensors shared by all graphs, the graphs by name, and the META JSON object."""

    tensors: dict[str, Tensor]
    graphs: dict[str, Graph]
    meta: dict = field(default_factory=dict)


def payload_bytes(model: Model) -> tuple[int, int]:
    """(stored bytes of the packed weights by §1.8, bytes of the other constants): the
    theoretical size every exporter's file is compared with, computed in one place."""
    from edgekit.kernels import packing
    packed = sum(packing.deserialize(bytes(t.data)).nbytes for t in model.tensors.values()
                 if t.dtype == "packed")
    consts = sum(t.nbytes for t in model.tensors.values()
                 if t.kind == "const" and t.dtype != "packed")
    return packed, consts
