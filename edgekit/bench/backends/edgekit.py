"""edgekit backend: `ek-run` on the device (through a transport), or `Session` in-process.

ek-run does its own timing (it has no Python in the loop), so the harness only plans its
iteration count; Session is timed by the shared loop like the peers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from edgekit import EdgekitError
from edgekit.bench.backends.common import Plan, measure
from edgekit.bench.transports.base import Transport, TransportError

_ROOT = Path(__file__).resolve().parents[3]


def version() -> str:
    from edgekit import __version__

    return __version__


def ek_run_for(arch: str) -> Path:
    """The ek-run binary for a device architecture: the host build for x86_64 (from
    edgekit.runtime.ek_run_path()), the static cross build (targets/qemu/build.sh) for aarch64.
    $EDGEKIT_EK_RUN / $EDGEKIT_EK_RUN_AARCH64 override either."""
    if arch == "aarch64":
        p = Path(os.environ.get("EDGEKIT_EK_RUN_AARCH64", _ROOT / "build/aarch64/ek-run"))
        if not p.is_file():
            raise EdgekitError(f"no aarch64 ek-run at {p}; build it with targets/qemu/build.sh")
        return p
    env = os.environ.get("EDGEKIT_EK_RUN")
    if env:
        p = Path(env)
    else:
        try:
            from edgekit.runtime import ek_run_path
        except ImportError:
            raise EdgekitError("edgekit.runtime is not available (run `make build`)") from None
        p = Path(ek_run_path())
    if not p.is_file():
        raise EdgekitError(f"ek-run not found at {p} (run `make build`)")
    return p


def parse_ek_run(stdout: str, rc: int, stderr: str = "") -> dict:
    """ek-run's one JSON object; its `error` (exit 2) or a crash becomes an EdgekitError."""
    text = stdout.strip()
    try:
        data = json.loads(text.splitlines()[-1] if text else "")
    except (json.JSONDecodeError, IndexError):
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgekitError(f"ek-run exited {rc} without a JSON result: {tail}") from None
    if not isinstance(data, dict):
        raise EdgekitError("ek-run printed JSON that is not an object")
    if rc != 0 or "error" in data:
        raise EdgekitError(f"ek-run failed (exit {rc}): {data.get('error', 'no reason given')}")
    for key in ("load_us", "first_us", "iters_us"):
        if key not in data:
            raise EdgekitError(f"ek-run result lacks {key!r}")
    return data


def _invoke(t: Transport, exe: str, model: str, args: list[str], timeout: float,
            affinity: list[int] | None = None) -> dict:
    # ek-run does not pin itself; util-linux / toybox `taskset` does it on Linux and Android.
    pin = ["taskset", "-c", ",".join(map(str, affinity))] if affinity else []
    res = t.run(pin + [exe, model] + args, timeout)
    if res.signal is not None:
        what = f"signal {res.signal}" if res.signal > 0 else "a signal"
        raise TransportError(f"ek-run was killed by {what} on the device")
    return parse_ek_run(res.stdout, res.rc, res.stderr)


def host_version() -> str:
    """The host's ek-run version (its `--version`), or edgekit's when no host build exists:
    what a device's runner must report to speak the same JSON."""
    import subprocess

    try:
        exe = ek_run_for("x86_64")
        p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
        return _version_of(p.stdout)
    except (EdgekitError, OSError, subprocess.TimeoutExpired):
        return version()


def check_version(t: Transport, exe: str, expected: str | None) -> str:
    """The device's `ek-run --version`; must equal `expected` (the host's) when given."""
    res = t.run([exe, "--version"], 60)
    if res.signal is not None or res.rc != 0:
        raise TransportError(f"ek-run --version failed on the device (exit {res.rc}): "
                             f"{(res.stderr.strip().splitlines() or [''])[-1]}")
    remote = _version_of(res.stdout)
    if expected is not None and expected != remote:
        raise TransportError(f"ek-run on the device is {remote}, the host's is {expected}; "
                             "push a matching build")
    return remote


def _version_of(out: str) -> str:
    text = out.strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "ek_run_version" in data:
            return str(data["ek_run_version"])
    except json.JSONDecodeError:
        pass
    return text.split()[-1] if text else "unknown"


def run_ek_run(t: Transport, exe: str, model: str, plan: Plan, threads: int, seed: int,
               stream: bool, per_op: bool, graph: str | None, isa: str | None,
               slack_s: float = 120.0, affinity: list[int] | None = None) -> dict:
    """Pilot run (min_runs iterations) to learn the step time, then the measured run with the
    iteration count that satisfies min_time within max_time. Only the second run is kept."""
    base = ["--threads", str(threads), "--seed", str(seed), "--fill", "random"]
    if stream:
        base.append("--stream")
    if graph:
        base += ["--graph", graph]
    if isa:
        base += ["--isa", isa]
    slack = slack_s  # load time and process start-up on a slow device
    pilot = _invoke(t, exe, model, base + ["--warmup", str(plan.warmup),
                                           "--iters", str(plan.min_runs)],
                    plan.max_time_s + slack, affinity)
    per = max(sorted(pilot["iters_us"])[len(pilot["iters_us"]) // 2], 1e-3) / 1e6
    warm = max(plan.warmup, math.ceil(plan.warmup_time_s / per))
    iters = max(plan.min_runs, math.ceil(plan.min_time_s / per))
    iters = max(1, min(iters, math.floor(plan.max_time_s / per) or 1))
    args = base + ["--warmup", str(warm), "--iters", str(iters)]
    if per_op:
        args.append("--per-op")
    timeout = plan.max_time_s + per * warm + slack
    data = _invoke(t, exe, model, args, timeout, affinity)
    data["runner"] = "ek-run"
    data["options"] = {"warmup_iters": warm, "iters": iters, "pilot_iters": plan.min_runs}
    return data


def run_session(model: str, plan: Plan, threads: int, seed: int, graph: str | None = None,
                isa: str | None = None, stream: bool = True, **_) -> dict:
    """Measure `Session.step` (streaming graph) or `Session.run` in this process."""
    import numpy as np

    from edgekit.runtime import Session

    holder = {}

    def load():
        s = Session(model, graph=graph, threads=threads, isa=isa)
        rng = np.random.default_rng(seed)
        feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32)
                 for i in s.inputs}
        holder["s"] = s
        if stream and s.states:
            x = next(iter(feeds.values())) if len(feeds) == 1 else feeds
            return lambda: s.step(x)
        return lambda: s.run(feeds)

    out = measure(load, plan)
    s = holder["s"]
    out["runner"] = "edgekit.runtime.Session"
    out["arena_bytes"] = int(s.arena_bytes)
    out["per_op"] = [{"op": r["op"], "name": r["name"], "calls": int(r["calls"]),
                      "total_us": float(r["total_us"])} for r in s.profile()]
    out["options"] = {"threads": threads, "isa": isa}
    return out
