"""Android over the `adb` CLI. The static aarch64 runner goes to /data/local/tmp (the one
place a shell user may write and execute).

adb exits 0 after many failures (a failed push on old versions, any remote command's status
on adb < 1.0.39), so nothing here trusts adb's exit status alone: push output is checked for
adb's error lines and every remote command appends a status marker that is parsed back.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from edgekit.bench.transports.base import (RemoteTimeout, RunResult, Transport,
                                            TransportError, check_name)

REMOTE_ROOT = "/data/local/tmp"
_MARK = "__EDGEKIT_RC="
_MARK_RE = re.compile(r"\r?\n?" + re.escape(_MARK) + r"(\d+)\r?\n?$")

# (argv, timeout) -> (rc, stdout, stderr); replaced in tests by recorded adb outputs.
Runner = Callable[[list[str], float], tuple[int, str, str]]


def _subprocess_runner(argv: list[str], timeout: float) -> tuple[int, str, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RemoteTimeout(f"adb ran past its {timeout:g} s timeout") from None
    return p.returncode, p.stdout, p.stderr


def parse_devices(text: str) -> dict[str, str]:
    """`adb devices` output -> {serial: state} (device, offline, unauthorized, ...)."""
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            found[parts[0]] = parts[1]
    return found


def check_push_output(rc: int, out: str, err: str) -> None:
    """Raise TransportError when `adb push` failed, whatever its exit status says."""
    text = f"{out}\n{err}"
    bad = [ln.strip() for ln in text.splitlines()
           if re.search(r"\berror\b|failed to copy|No such file|Permission denied|"
                        r"device .* not found|no devices", ln, re.I)]
    if rc != 0 or bad:
        raise TransportError(f"adb push failed: {(bad or [text.strip()])[0]}")


def split_status(out: str) -> tuple[str, int]:
    """Strip the status marker from `adb shell` output; return (output, remote status)."""
    m = _MARK_RE.search(out)
    if m is None:
        raise TransportError("adb shell returned no exit status (the connection dropped or "
                             "the device is gone)")
    return out[:m.start()], int(m.group(1))


class ADBTransport(Transport):
    """One Android device, chosen by `serial` (None: adb's single attached device)."""

    name = "adb"

    def __init__(self, serial: str | None = None, runner: Runner | None = None,
                 adb: str = "adb"):
        if runner is None:
            if shutil.which(adb) is None:
                raise TransportError("adb not found (install Android platform-tools)")
            runner = _subprocess_runner
        self._runner = runner
        self._base = [adb] + (["-s", serial] if serial else [])
        self.serial = serial
        self._dir: str | None = None
        rc, out, err = runner([adb, "devices"], 30)
        devices = parse_devices(out)
        state = devices.get(serial) if serial else (next(iter(devices.values()))
                                                    if len(devices) == 1 else None)
        if serial is None and len(devices) != 1:
            raise TransportError(f"adb sees {len(devices)} devices; set the profile's adb "
                                 "serial")
        if state != "device":
            raise TransportError(f"adb device {serial or '(default)'} is "
                                 f"{state or 'not attached'}")

    def _shell(self, command: str, timeout: float) -> RunResult:
        rc, out, err = self._runner(self._base + ["shell", f"{command}; echo {_MARK}$?"],
                                    timeout)
        if rc != 0 and _MARK not in out:
            raise TransportError(f"adb shell failed: {(err or out).strip()}")
        body, status = split_status(out)
        # Android's shell reports death by signal N as status 128+N.
        sig = status - 128 if status > 128 else None
        return RunResult(status, body.replace("\r\n", "\n"), err, sig)

    @property
    def workdir(self) -> str:
        if self._dir is None:
            res = self._shell(f"mktemp -d {REMOTE_ROOT}/edgekit-bench.XXXXXXXX", 30)
            path = res.stdout.strip()
            if res.rc != 0 or not path.startswith(REMOTE_ROOT + "/edgekit-bench."):
                raise TransportError(f"cannot create a temp dir on the device: {path}")
            self._dir = path
        return self._dir

    def push(self, local, name=None, executable=False) -> str:
        src = Path(local)
        if not src.is_file():
            raise TransportError(f"cannot push {src}: no such file")
        rel = check_name(name or src.name)
        dst = f"{self.workdir}/{rel}"
        if "/" in rel:
            self._shell(f"mkdir -p {shlex.quote(dst.rsplit('/', 1)[0])}", 30)
        check_push_output(*self._runner(self._base + ["push", str(src), dst], 600))
        if executable:
            self._shell(f"chmod 755 {shlex.quote(dst)}", 30)
        return dst

    def run(self, argv, timeout) -> RunResult:
        d = shlex.quote(self.workdir)
        line = (f"cd {d} && {{ {shlex.join([str(a) for a in argv])} & echo $! > .pid; "
                f"wait $!; }}")
        try:
            return self._shell(line, timeout)
        except RemoteTimeout:
            self._shell(f"kill -9 $(cat {d}/.pid)", 30)
            raise

    def pull(self, remote, local) -> None:
        rc, out, err = self._runner(self._base + ["pull", remote, str(local)], 600)
        check_push_output(rc, out, err)

    def cleanup(self) -> None:
        if self._dir is not None:
            try:
                self._shell(f"rm -rf {shlex.quote(self._dir)}", 30)
            finally:
                self._dir = None

    def describe(self) -> dict:
        return {"kind": self.name, "serial": self.serial}
