"""Run an exported .tflite in LiteRT: one thread, a chosen op resolver, streaming state carried.

Resolvers: "default" (LiteRT's default delegate, XNNPACK, where it takes the nodes), "ref"
(BUILTIN_REF: LiteRT's reference kernels) and "builtin" (optimized builtin kernels without
delegates).
"""

from __future__ import annotations

import numpy as np

RESOLVERS = ("default", "ref", "builtin")


def interpreter(model: bytes, resolver: str = "default", preserve: bool = False, threads: int = 1):
    """A LiteRT Interpreter over `model` with tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kinds = {"default": OpResolverType.AUTO, "ref": OpResolverType.BUILTIN_REF,
             "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if resolver not in kinds:
        raise ValueError(f"resolver must be one of {RESOLVERS}, got {resolver!r}")
    try:
        it = Interpreter(model_content=bytes(model), num_threads=threads,
                         experimental_op_resolver_type=kinds[resolver],
                         experimental_preserve_all_tensors=preserve)
        it.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        raise ValueError(f"LiteRT rejected the model ({resolver} resolver): {msg}") from None
    return it


def _grid(detail) -> tuple[float, int] | None:
    scale, zp = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zp)) if scale else None


class Stream:
    """Step a graph's .tflite: `inputs`/`states` are the IR names of the file's inputs in
    order (graph inputs, then state tensors), `outputs` the IR names of its outputs, and
    `state_next` maps each state to the output holding its next value.

    Quantized (int8) inputs and outputs — a full-integer file — are converted at the
    boundary: float feeds are quantized on the input's grid, outputs are returned
    dequantized (`raw` keeps the int8 codes too), and states are carried as int8 codes."""

    def __init__(self, model: bytes, inputs, states, outputs, state_next: dict,
                 resolver: str = "default", threads: int = 1):
        self.it = interpreter(model, resolver, threads=threads)
        self.inputs, self.states, self.outputs = list(inputs), list(states), list(outputs)
        self.state_next = dict(state_next)
        self.raw: dict = {}
        self._in = [d for d in self.it.get_input_details()]
        self._out = [d for d in self.it.get_output_details()]
        if len(self._in) != len(self.inputs) + len(self.states) or len(self._out) != len(self.outputs):
            raise ValueError("the .tflite inputs/outputs do not match the graph's")
        self.reset()

    def reset(self) -> None:
        """Zero every streaming state (what `Session.reset()` does for EKM)."""
        det = self._in[len(self.inputs):]
        # a quantized state starts at the code of real 0, its zero point
        self.state = {n: np.full(d["shape"], (_grid(d) or (0, 0))[1], d["dtype"])
                      for n, d in zip(self.states, det)}

    def step(self, feed: dict) -> dict:
        """Run one call: `feed` maps graph input names to arrays (states given in `feed`
        override the carried ones); returns every output by IR name and carries the states."""
        names = self.inputs + self.states
        self.fed = {}
        for name, d in zip(names, self._in):
            if name in feed:
                v = feed[name]
            elif name in self.state:
                v = self.state[name]
            else:
                raise ValueError(f"missing input {name!r}")
            v = np.asarray(v)
            if tuple(v.shape) != tuple(d["shape"]):
                raise ValueError(f"input {name!r} has shape {v.shape}, expected {tuple(d['shape'])}")
            g = _grid(d)
            if g is not None and np.issubdtype(v.dtype, np.floating):
                info = np.iinfo(d["dtype"])
                v = np.clip(np.rint(v.astype(np.float64) / g[0]) + g[1], info.min, info.max)
            self.fed[name] = np.ascontiguousarray(v.astype(d["dtype"], copy=False))
            self.it.set_tensor(d["index"], self.fed[name])
        self.it.invoke()
        self.raw = {n: self.it.get_tensor(d["index"]).copy() for n, d in zip(self.outputs, self._out)}
        out = {}
        for n, d in zip(self.outputs, self._out):
            g = _grid(d)
            out[n] = (self.raw[n] if g is None else
                      ((self.raw[n].astype(np.float64) - g[1]) * g[0]).astype(np.float32))
        for s in self.states:
            self.state[s] = self.raw[self.state_next[s]]
        return out


def survives(model: bytes, inputs, states, outputs, state_next: dict, feeds) -> str | None:
    """Run `model` on `feeds` with every resolver in a forked child; None when that worked,
    else one line saying how the child died. LiteRT aborts the whole process on some kernel
    conditions (e.g. its int16 ADD's power-of-two path), which no `except` can catch: a
    file is run here before it is run in this process."""
    import os
    import signal

    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: no Python cleanup, only an exit status and a message
        import faulthandler

        os.close(rd)
        # quiet: the parent reports how the child ended (no "Fatal Python error" dump, no
        # LiteRT log lines twice)
        faulthandler.disable()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        code, msg = 0, b""
        try:
            for r in ("ref", "default"):
                s = Stream(model, inputs, states, outputs, state_next, r)
                for f in feeds:
                    s.step(f)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
            code, msg = 3, " ".join(str(exc).split()).encode()[:500]
        os.write(wr, msg)
        os._exit(code)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"LiteRT was killed by {signal.Signals(os.WTERMSIG(status)).name} running it"
    if os.WEXITSTATUS(status) != 0:
        return f"LiteRT failed running it: {msg or 'no message'}"
    return None
