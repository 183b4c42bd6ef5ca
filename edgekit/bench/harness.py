"""`edgekit bench`: pick transport and backends for a device, measure, build results.

One result per (model file, backend, graph). Where the device cannot be reached and it is an
aarch64 profile, the edgekit backend runs the aarch64 ek-run under qemu for a functional
check and the result is a roofline **estimate** (kind "estimated", no samples); qemu timings
are never reported.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from edgekit import EdgekitError, devices
from edgekit.bench import facts, result, schema
from edgekit.bench.backends import FORMATS
from edgekit.bench.backends import edgekit as ek
from edgekit.bench.backends.common import Plan
from edgekit.bench.transports.base import Transport

BACKENDS = ("edgekit", "session", "onnxruntime", "litert", "torch")
_EXT = {".ekm": "ekm", ".onnx": "onnx", ".tflite": "tflite"}


@dataclass
class Options:
    """Everything that shapes a run (recorded in each result's `flags`)."""

    device: str = "x86-host"
    backends: tuple[str, ...] = ("edgekit", "onnxruntime", "litert", "torch")
    threads: int = 1
    affinity: list[int] | None = None
    warmup: int = 5
    warmup_time_s: float = 0.0
    min_runs: int = 20
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    stream: bool = True
    paced: bool = False
    seed: int = 0
    graph: str | None = None
    isa: str | None = None
    per_op: bool = True
    chunk_ms: float | None = None
    insecure_accept_host_key: bool = False
    known_hosts: str | None = None
    notes: list[str] = field(default_factory=list)

    def plan(self, chunk_s: float | None = None) -> Plan:
        return Plan(self.warmup, self.warmup_time_s, self.min_runs, self.min_time_s,
                    self.max_time_s, chunk_s if self.paced else None)


def find_models(paths: list[str]) -> list[Path]:
    """Model files from files and folders (a folder contributes its .ekm/.onnx/.tflite), as
    absolute paths: runners work in their own temp dirs, where a relative path means nothing."""
    found: list[Path] = []
    for p in (Path(x).absolute() for x in paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix in _EXT)
        elif p.is_file():
            if p.suffix not in _EXT:
                raise EdgekitError(f"{p}: not a model file (.ekm, .onnx or .tflite)")
            found.append(p)
        else:
            raise EdgekitError(f"{p}: no such file or folder")
    if not found:
        raise EdgekitError("no model files (.ekm, .onnx, .tflite) in " + ", ".join(paths))
    return found


def _meta_for(path: Path) -> dict:
    """META of the EKM file itself or of the same-stem .ekm beside an ONNX/TFLite file."""
    ekm_path = path if path.suffix == ".ekm" else path.with_suffix(".ekm")
    if not ekm_path.is_file() and "." in path.stem:  # <stem>.<graph>.onnx of a multi-graph model
        ekm_path = path.with_name(path.stem.rsplit(".", 1)[0] + ".ekm")
    if not ekm_path.is_file():
        return {}
    from edgekit.export import ekm as ekm_io

    try:
        return ekm_io.read(ekm_path, verify=False).meta
    except ekm_io.EkmError as exc:
        raise EdgekitError(str(exc)) from None  # the reader's message names the file


def _state_pairs(path: Path, graph: str | None) -> list[list[str]]:
    """(state, next value) names of the graph, from the same-stem .ekm ([] without one). A
    per-graph file `<stem>.<graph>.tflite` (multi-graph models) reads `<stem>.ekm`'s
    `<graph>`."""
    ekm_path = path.with_suffix(".ekm")
    if not ekm_path.is_file():
        stem, _, own = path.stem.rpartition(".")
        ekm_path = path.with_name(stem + ".ekm")
        if not stem or not ekm_path.is_file():
            return []
        graph = graph or own
    from edgekit.bench.estimate import graph_name
    from edgekit.export import ekm as ekm_io

    try:
        m = ekm_io.read(ekm_path, verify=False, mmap=True)
        return [list(p) for p in m.graphs[graph_name(m, graph)].states]
    except (ekm_io.EkmError, ValueError):
        return []


def chunk_ms_of(meta: dict) -> float | None:
    """Audio covered by one streaming step: feature frames of 10 ms, or codec samples."""
    st = meta.get("streaming") or {}
    chunk = st.get("chunk")
    if not chunk:
        return None
    src = (meta.get("source") or {}).get("model") or ""
    if src.startswith("nwc"):
        return float(chunk) / 16.0  # samples at 16 kHz
    return float(chunk) * 10.0


def make_transport(profile: dict, opts: Options) -> Transport | None:
    """The transport for a reachable device; None when it is not configured or reachable
    (the caller falls back to qemu + estimate)."""
    reach = profile["reach"]
    kind = reach["transport"]
    if kind == "local":
        from edgekit.bench.transports.local import LocalTransport

        return LocalTransport()
    if kind == "ssh" and reach.get("host"):
        from edgekit.bench.transports.ssh import SSHTransport

        if profile["cpu"]["arch"] == "aarch64":
            # A configured Pi that is switched off gets the estimate (said in every output);
            # a wrong key or host key is still an error: that needs fixing, not hiding.
            ok, why = devices.reachable(profile)
            if not ok:
                opts.notes.append(f"{profile['name']} unreachable ({why})")
                return None
        return SSHTransport(reach["host"], reach.get("user"), reach.get("port", 22),
                            reach.get("key"), reach.get("known_hosts") or opts.known_hosts,
                            opts.insecure_accept_host_key)
    if kind == "adb":
        ok, _ = devices.reachable(profile)
        if ok:
            from edgekit.bench.transports.adb import ADBTransport

            return ADBTransport(reach.get("serial"))
    return None


# What a device needs to run the onnxruntime/LiteRT backends with its own Python: the child
# entry point and the loop, none of edgekit's heavier modules.
_REMOTE_FILES = ("edgekit/__init__.py", "edgekit/bench/__init__.py",
                 "edgekit/bench/backends/__init__.py", "edgekit/bench/backends/common.py",
                 "edgekit/bench/backends/child.py", "edgekit/bench/backends/onnxruntime.py",
                 "edgekit/bench/backends/litert.py")
_PKG_ROOT = Path(__file__).resolve().parents[2]


def _child(backend: str, model: Path, opts: Options, plan: Plan, extra: dict,
           t: Transport, python: str | None) -> dict:
    """Run one in-process backend in a fresh Python: this machine's (local transport) or the
    device's (`reach.python`), to which the few files it needs are pushed first."""
    remote = python is not None
    model_arg = str(model)
    if remote:
        for rel in _REMOTE_FILES:
            t.push(_PKG_ROOT / rel, rel)
        model_arg = t.push(model, "model" + model.suffix)
    spec = {"backend": backend, "model": model_arg, "threads": opts.threads,
            "affinity": opts.affinity, "seed": opts.seed, "plan": asdict(plan), "extra": extra}
    timeout = plan.max_time_s + plan.warmup_time_s + 300
    res = t.run([python or sys.executable, "-m", "edgekit.bench.backends.child",
                 json.dumps(spec)], timeout)
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgekitError(f"{backend} on {model.name} failed (exit {res.rc}): "
                           f"{tail}") from None
    if "error" in data:
        raise EdgekitError(f"{backend} on {model.name}: {data['error']}")
    return data


def _is_zoo(name) -> bool:
    from edgekit import models

    return isinstance(name, str) and name in models.names()


def _jobs(models: list[Path], opts: Options) -> list[tuple[str, Path]]:
    jobs, torch_sources = [], set()
    for m in models:
        fmt = _EXT[m.suffix]
        for b in opts.backends:
            if FORMATS[b] != fmt:
                continue
            if b == "torch":  # one float source model, however many EKM variants of it
                source = _meta_for(m).get("source") or {}
                if not _is_zoo(source.get("model")):
                    opts.notes.append(f"torch skipped for {m.name}: its source "
                                      f"{source.get('model')!r} is not a zoo model")
                    continue
                src = json.dumps(source, sort_keys=True)
                if src in torch_sources:
                    continue
                torch_sources.add(src)
            jobs.append((b, m))
    if not jobs:
        raise EdgekitError(f"no model file matches the backends {', '.join(opts.backends)}")
    return jobs


def _estimable(jobs: list[tuple[str, Path]], device: str,
               opts: Options) -> list[tuple[str, Path]]:
    """The jobs an unreachable device can still answer: only the edgekit backend has an
    estimate. The others are dropped with a note (the default backend list includes torch,
    which matches every .ekm); an error only when nothing is left."""
    kept = [j for j in jobs if j[0] == "edgekit"]
    for b in dict.fromkeys(b for b, _ in jobs if b != "edgekit"):
        opts.notes.append(f"{b} skipped: {device} unreachable")
    if not kept:
        raise EdgekitError(f"{device} is not reachable; only the edgekit backend has an "
                           "estimate")
    return kept


def run(paths: list[str], opts: Options,
        progress: Callable[[str], None] = lambda msg: None) -> list[dict]:
    """Benchmark every model file under `paths` with `opts` on `opts.device`; return the
    validated results (not yet written)."""
    try:
        profile = devices.load(opts.device)
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None
    for b in opts.backends:
        if b not in BACKENDS:
            raise EdgekitError(f"unknown backend {b!r}; valid: {', '.join(BACKENDS)}")
    models = find_models(paths)
    jobs = _jobs(models, opts)
    transport = make_transport(profile, opts)
    if transport is None:
        jobs = _estimable(jobs, profile["name"], opts)
    results = []
    try:
        dev_facts = facts.device(transport)
        for i, (backend, model) in enumerate(jobs, 1):
            progress(f"[{i}/{len(jobs)}] {backend} · {model.name} · {profile['name']}")
            results.append(_one(backend, model, profile, transport, opts, dev_facts))
    finally:
        if transport is not None:
            transport.cleanup()
    return results


def _one(backend: str, model: Path, profile: dict, t: Transport | None, opts: Options,
         dev_facts: dict) -> dict:
    meta = _meta_for(model)
    chunk_ms = opts.chunk_ms or chunk_ms_of(meta)
    plan = opts.plan(chunk_ms / 1e3 if chunk_ms else None)
    if opts.paced and chunk_ms is None:
        raise EdgekitError(f"{model.name}: --paced needs the chunk duration (no streaming "
                           "META); pass --chunk-ms")
    notes = list(opts.notes)
    remote = t is not None and t.describe()["kind"] != "local"
    if backend == "edgekit":
        if t is None:
            return _estimated(model, profile, opts, meta, dev_facts)
        if opts.paced:
            raise EdgekitError("--paced is not supported by ek-run; use --backend session")
        exe_local = ek.ek_run_for(profile["cpu"]["arch"])
        exe = t.push(exe_local, "ek-run", executable=True)
        # Checked on every device, the aarch64 cross build included: a stale build pushed
        # to a Pi would otherwise print JSON this host misreads.
        runner_version = ek.check_version(t, exe, ek.host_version() if remote else None)
        remote_model = t.push(model, "model.ekm")
        raw = ek.run_ek_run(t, exe, remote_model, plan, opts.threads, opts.seed,
                            opts.stream, opts.per_op, opts.graph, opts.isa,
                            affinity=opts.affinity)
        raw["version"] = runner_version
    else:
        python = None
        if remote:
            python = profile["reach"].get("python")
            if backend not in ("onnxruntime", "litert") or not python:
                raise EdgekitError(
                    f"the {backend} backend cannot run on {profile['name']}: "
                    + ("set reach.python in its profile to a Python with it installed"
                       if backend in ("onnxruntime", "litert") else "it runs on this machine only"))
        if t is None:
            raise EdgekitError(f"{profile['name']} is not reachable; only the edgekit backend "
                               "has an estimate")
        extra = {"stream": opts.stream} if backend in ("onnxruntime", "litert") else {}
        if backend == "litert":
            extra["states"] = _state_pairs(model, opts.graph)
        if backend == "torch":
            extra["source"] = meta.get("source")
        if backend == "session":
            extra.update(graph=opts.graph, isa=opts.isa, stream=opts.stream)
        raw = _child(backend, model, opts, plan, extra, t, python)
    return result.measured(backend, model, profile, t, opts, meta, raw, chunk_ms, dev_facts,
                           notes)


def _estimated(model, profile, opts, meta, dev_facts) -> dict:
    """No reachable device: qemu functional run (aarch64) + roofline estimate."""
    from edgekit.bench import estimate as est
    from edgekit.export import ekm as ekm_io

    functional = {"ok": False, "how": "not run"}
    notes = list(opts.notes) + [f"{profile['name']} not reachable: roofline estimate, "
                                "not a measurement"]
    if profile["cpu"]["arch"] == "aarch64":
        from edgekit.bench.transports.qemu import QemuTransport

        cpu = profile["cpu"]["qemu_cpu"]
        try:
            exe_local = ek.ek_run_for("aarch64")
        except EdgekitError as exc:
            # The estimate needs only the file; say plainly that nothing was executed.
            functional = {"ok": False, "how": f"not run: {exc}"}
            notes.append(f"functional check skipped: {exc}")
        else:
            with QemuTransport(cpu) as q:
                exe = q.push(exe_local, "ek-run", executable=True)
                raw = ek._invoke(q, exe, q.push(model, "model.ekm"),
                                 ["--warmup", "0", "--iters", "1", "--threads", "1",
                                  "--seed", str(opts.seed), "--fill", "random"]
                                 + (["--graph", opts.graph] if opts.graph else []), 600)
            # Timings under qemu are discarded on purpose: they are not the device's.
            functional = {"ok": True, "how": f"ek-run under qemu-aarch64 -cpu {cpu}",
                          "isa": raw.get("isa"), "kernel": raw.get("kernel"),
                          "arena_bytes": raw.get("arena_bytes")}
    try:
        model_ir = ekm_io.read(model)
        block = est.estimate(model_ir, profile, opts.threads, opts.graph)
    except (ekm_io.EkmError, ValueError) as exc:
        raise EdgekitError(f"{model.name}: {exc}") from None
    block["functional"] = functional
    chunk_ms = opts.chunk_ms or chunk_ms_of(meta)
    if chunk_ms:
        block["rtf"] = block["total_us"] / (chunk_ms * 1e3)
    res = result.base("edgekit", model, profile, None, opts, meta,
                {"os": None, "governor": None, "freq_mhz": None, "temperature_c": None},
                "estimated", notes)
    res.update({
        "backend": {"name": "edgekit", "runner": "roofline estimate", "version": ek.version(),
                    "isa": functional.get("isa"), "kernel": functional.get("kernel"),
                    "graph": block["graph"], "options": {}},
        "phases": {"load_us": None, "first_us": None}, "samples_us": [], "stats": None,
        "streaming": None,
        "memory": {"peak_rss_kb": None, "arena_bytes": functional.get("arena_bytes"),
                   "state_bytes": None, "model_file_bytes": model.stat().st_size},
        "per_op": None, "estimate": block,
    })
    return schema.validate(res, f"estimate for {model.name}")
