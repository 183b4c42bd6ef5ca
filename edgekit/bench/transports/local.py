"""Run on this machine: a private temp dir and subprocesses killed as a group on timeout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from edgekit.bench.transports.base import (RemoteTimeout, RunResult, Transport,
                                            TransportError, check_name)


class LocalTransport(Transport):
    """The host itself. `prefix` wraps every command (qemu-user uses it)."""

    name = "local"

    def __init__(self, prefix: list[str] | None = None):
        self.prefix = list(prefix or [])
        self._dir: str | None = None

    @property
    def workdir(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="edgekit-bench-")
        return self._dir

    def push(self, local, name=None, executable=False) -> str:
        src = Path(local)
        if not src.is_file():
            raise TransportError(f"cannot push {src}: no such file")
        dst = Path(self.workdir) / check_name(name or src.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        if executable:
            dst.chmod(0o755)
        return str(dst)

    def run(self, argv, timeout) -> RunResult:
        # Started through a small shell that forks (not execs) the command: Linux carries a
        # process's peak RSS across fork+exec, so a runner started straight from this Python
        # (hundreds of MiB with torch loaded) would report our peak as its own getrusage().
        cmd = ["sh", "-c", '"$@"; exit $?', "sh"] + self.prefix + list(argv)
        try:
            # A new session, so a timeout kills the runner and anything it started.
            proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError as exc:
            raise TransportError(f"cannot run sh: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RemoteTimeout(f"{Path(cmd[4]).name} ran past its {timeout:g} s timeout "
                                "and was killed") from None
        rc = proc.returncode
        if rc == 127 and "not found" in err:
            raise TransportError(f"cannot run {cmd[4]}: not found")
        # The shell reports a child killed by signal N as 128+N (as ssh and adb shells do).
        sig = rc - 128 if 128 < rc < 160 else (-rc if rc < 0 else None)
        return RunResult(rc, out, err, sig)

    def pull(self, remote, local) -> None:
        try:
            shutil.copyfile(remote, local)
        except OSError as exc:
            raise TransportError(f"cannot pull {remote}: {exc.strerror}") from None

    def cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
