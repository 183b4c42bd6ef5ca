"""The C++ graph runtime from Python: `Session` over an .ekm file (docs/runtime.md).

    from edgekit.runtime import Session
    s = Session("out/model.ekm", threads=1)
    y = s.run({"chunk": x})          # whole input; a streaming graph loops over its chunks
    y = s.step(x)                    # one streaming call, carrying the session's state

The work happens in `edgekit._C` (csrc/runtime/); this module is the documented facade:
argument checks, the streaming loop of `run`, and errors as `RuntimeModelError`.
Importing it never fails; a missing C++ extension is reported when a Session is created.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgekit import EdgekitError

__all__ = ["Session", "RuntimeModelError", "ek_run_path", "available"]


class RuntimeModelError(EdgekitError, ValueError):
    """A model file or an input the runtime rejects (one line: what is wrong and where)."""


def _c():
    try:
        from edgekit import _C
    except ImportError as exc:
        raise RuntimeModelError(f"the C++ runtime is not built ({exc}); run 'make build'") from None
    if not hasattr(_C, "RuntimeSession"):
        raise RuntimeModelError("edgekit._C was built without the runtime; run 'make build'")
    _C._set_runtime_error(RuntimeModelError)
    return _C


def available() -> bool:
    """True when the C++ extension (and so `Session`) can be used."""
    try:
        _c()
    except RuntimeModelError:
        return False
    return True


def ek_run_path() -> Path:
    """Path of the `ek-run` executable built with the extension (or `$EDGEKIT_EK_RUN`)."""
    env = os.environ.get("EDGEKIT_EK_RUN")
    if env:
        path = Path(env)
    else:
        path = Path(_c().__file__).resolve().parent / "bin" / "ek-run"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeModelError(f"ek-run not found at {path}; run 'make build'")
    return path


class Session:
    """One graph of an .ekm model, ready to run (see docs/runtime.md for the contract).

    `graph=None` picks META's streaming graph, else the only graph; `threads` >= 1 intra-op
    threads; `isa` forces a kernel variant ("ref", "avx2", "avx512", "neon", ...) like
    `EDGEKIT_ISA` does. Raises `RuntimeModelError` for a missing, corrupt or inconsistent file.
    """

    def __init__(self, path: str | os.PathLike, graph: str | None = None, threads: int = 1,
                 isa: str | None = None):
        if not isinstance(path, (str, os.PathLike)):
            raise RuntimeModelError(f"model path must be a str or path, got {type(path).__name__}")
        if graph is not None and not isinstance(graph, str):
            raise RuntimeModelError(f"graph must be a string, got {type(graph).__name__}")
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise RuntimeModelError(f"threads must be an int, got {type(threads).__name__}")
        if isa is not None and not isinstance(isa, str):
            raise RuntimeModelError(f"isa must be a string, got {type(isa).__name__}")
        C = _c()
        self.path = os.fspath(path)
        self._model = C.RuntimeModel(self.path)
        self._s = C.RuntimeSession(self._model, graph or "", threads, isa or "")
        try:
            meta = json.loads(self._model.meta_json or "{}")
        except ValueError as exc:
            raise RuntimeModelError(f"{self.path}: META is not valid JSON ({exc})") from None
        self.meta: dict = meta if isinstance(meta, dict) else {}
        self._stream = self._streaming_info()

    def _streaming_info(self) -> dict | None:
        st = self.meta.get("streaming")
        if not isinstance(st, dict) or st.get("graph") != self.graph:
            return None
        inp = next((d for d in self.inputs if d["name"] == st.get("input")), None)
        if inp is None:
            raise RuntimeModelError(f"{self.path}: META streaming input {st.get('input')!r} "
                                    f"is not an input of graph {self.graph!r}")
        axis, out_axis = st.get("time_axis"), st.get("output_time_axis")
        ok = (isinstance(axis, int) and 0 <= axis < len(inp["shape"])
              and isinstance(out_axis, int)
              and all(0 <= out_axis < len(d["shape"]) for d in self.outputs))
        if not ok:
            raise RuntimeModelError(f"{self.path}: META streaming axes do not fit the graph's shapes")
        return {"input": inp["name"], "axis": axis, "chunk": inp["shape"][axis],
                "out_axis": out_axis}

    # -- description ---------------------------------------------------------------------
    graph = property(lambda self: self._s.graph, doc="Name of the graph this session runs.")
    inputs = property(lambda self: self._s.inputs, doc="[{'name', 'dtype', 'shape'}] in call order.")
    outputs = property(lambda self: self._s.outputs, doc="[{'name', 'dtype', 'shape'}] in return order.")
    states = property(lambda self: self._s.states, doc="[{'name', 'dtype', 'shape'}] of the streaming state.")
    arena_bytes = property(lambda self: self._s.arena_bytes,
                           doc="Bytes of the planned arena (all intermediates and op scratch).")
    naive_bytes = property(lambda self: self._s.naive_bytes,
                           doc="What the intermediates and scratch would take without reuse.")
    state_bytes = property(lambda self: self._s.state_bytes, doc="Bytes of all state tensors.")
    isa = property(lambda self: self._s.isa, doc="ISA of the linear kernel variant in use.")
    kernel = property(lambda self: self._s.kernel, doc="Full name of that kernel variant.")
    threads = property(lambda self: self._s.threads, doc="Intra-op threads.")

    # -- running -------------------------------------------------------------------------
    def _as_dict(self, inputs: Any) -> dict:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        if len(self.inputs) != 1:
            names = ", ".join(d["name"] for d in self.inputs)
            raise RuntimeModelError(f"graph {self.graph!r} has {len(self.inputs)} inputs ({names}); "
                                    "pass a dict name -> array")
        return {self.inputs[0]["name"]: inputs}

    def step(self, inputs: Any) -> dict[str, np.ndarray]:
        """One call of the graph with the session's state, which then advances."""
        return self._s.run(self._as_dict(inputs))

    def run(self, inputs: Any) -> dict[str, np.ndarray]:
        """Outputs for `inputs` (a dict, or one array for a one-input graph).

        On the streaming graph this is a whole utterance: the state is reset, the streaming
        input is cut into chunks along its time axis (its length must be a multiple of the
        chunk) and the outputs are concatenated along META's output_time_axis. On any other
        graph it is a single call.
        """
        feed = self._as_dict(inputs)
        st = self._stream
        if st is None:
            return self._s.run(feed)
        x = feed.get(st["input"])
        if not isinstance(x, np.ndarray) or x.ndim != len(self._input(st["input"])["shape"]):
            return self._s.run(feed)  # the C++ side reports the precise problem
        T, chunk = x.shape[st["axis"]], st["chunk"]
        if T == 0 or T % chunk:
            raise RuntimeModelError(f"input {st['input']!r} has {T} steps on axis {st['axis']}, "
                                    f"not a positive multiple of the chunk ({chunk})")
        self._s.reset()
        pieces: list[dict] = []
        for i in range(T // chunk):
            feed[st["input"]] = np.take(x, np.arange(i * chunk, (i + 1) * chunk), axis=st["axis"])
            pieces.append(self._s.run(feed))
        return {k: np.concatenate([p[k] for p in pieces], axis=st["out_axis"]) for k in pieces[0]}

    def _input(self, name: str) -> dict:
        return next(d for d in self.inputs if d["name"] == name)

    def reset(self) -> None:
        """Zero every state tensor."""
        self._s.reset()

    def state(self) -> dict[str, np.ndarray]:
        """A copy of the state tensors, name -> array."""
        return self._s.state()

    def set_state(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite some or all state tensors (exact dtype and shape)."""
        if not isinstance(values, Mapping):
            raise RuntimeModelError("set_state takes a dict name -> array")
        self._s.set_state(dict(values))

    def profile(self) -> list[dict]:
        """Per op: {'op', 'name', 'calls', 'total_us', 'mean_us'} since the last reset_profile()."""
        return self._s.profile()

    def reset_profile(self) -> None:
        """Start the per-op timing afresh."""
        self._s.reset_profile()

    def __repr__(self) -> str:
        return (f"Session({self.path!r}, graph={self.graph!r}, threads={self.threads}, "
                f"isa={self.isa!r}, arena_bytes={self.arena_bytes})")
