"""Test helpers for remote-device tests: a real sshd on 127.0.0.1 and a fake `ek-run`.

`Sshd` starts Debian's sshd with throwaway host and client keys, its own config (no PAM, no
passwords, sftp built in) and its own known_hosts, on a free port; nothing of the user's
~/.ssh is read or written. The fake ek-run prints ek-run's JSON (docs/runtime.md) from real
timed work, so the harness can be tested before and independently of the C++ runner.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)


class Sshd:
    """A running sshd; `stop()` kills it. Attributes: port, user, key, known_hosts, dir."""

    def __init__(self, root: Path):
        self.dir = root
        self.port = _free_port()
        self.user = getpass.getuser()
        host_key, self.key = root / "host_key", root / "client_key"
        self.other_key = root / "other_key"
        for k in (host_key, self.key, self.other_key):
            _keygen(k)
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        os.chmod(root / "authorized_keys", 0o600)
        pub = (root / "host_key.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        (root / "empty_known_hosts").write_text("")
        config = root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", f"PidFile {root / 'sshd.pid'}",
            "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "UsePAM no", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 50",
        ]) + "\n")
        # sshd refuses to start without its privilege-separation directory.
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not start listening within 10 s")

    def transport(self, **kw):
        from edgekit.bench.transports.ssh import SSHTransport

        args = dict(host="127.0.0.1", user=self.user, port=self.port, key=str(self.key),
                    known_hosts=str(self.known_hosts))
        args.update(kw)
        return SSHTransport(**args)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def sshd_skip_reason() -> str | None:
    """Why the sshd tests cannot run here, or None."""
    if SSHD is None:
        return "sshd not installed (Debian: apt-get install openssh-server; CI installs it)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not installed"
    if not Path("/run/sshd").exists() and os.geteuid() != 0:
        return "sshd needs /run/sshd (create it as root)"
    return None


def remote_temp_dirs() -> set[str]:
    """The SSH transport's working dirs that exist now (sshd is local, so: a glob)."""
    return {str(p) for p in Path("/tmp").glob("edgekit-bench.*")}


FAKE_EK_RUN = r'''#!{python}
# Fake ek-run for tests: ek-run's CLI and JSON (docs/runtime.md), timing real numpy work.
import json, os, sys, time, zlib, resource
MODE = {mode!r}
args = sys.argv[1:]
if args == ["--version"]:
    print(json.dumps({{"ek_run_version": {version!r}}})); sys.exit(0)
if MODE == "sleep":
    time.sleep(3600)
if MODE == "kill":
    os.kill(os.getpid(), 9)
import numpy as np  # after the quick paths: starting numpy costs a second on a busy machine
model = args[0]
opt = {{a: b for a, b in zip(args[1::1], args[2::1]) if a.startswith("--")}}
if not os.path.isfile(model):
    print(json.dumps({{"error": "cannot open " + model}})); sys.exit(2)
data = open(model, "rb").read()
t0 = time.perf_counter_ns()
a = np.random.default_rng(int(opt.get("--seed", 0))).standard_normal((96, 96)).astype(np.float32)
load_us = (time.perf_counter_ns() - t0) / 1e3
def step():
    t = time.perf_counter_ns(); (a @ a).sum(); return (time.perf_counter_ns() - t) / 1e3
first = step()
for _ in range(int(opt.get("--warmup", 0))):
    step()
iters = [step() for _ in range(int(opt.get("--iters", 10)))]
out = {{"ek_run_version": {version!r}, "model": model, "model_bytes": len(data),
       "model_crc32": hex(zlib.crc32(data)), "graph": opt.get("--graph", "step"), "isa": "fake",
       "kernel": "fake_numpy", "threads": int(opt.get("--threads", 1)), "arena_bytes": 4096,
       "state_bytes": 128, "load_us": load_us, "first_us": first, "iters_us": iters,
       "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "outputs": {{}}}}
if "--per-op" in args:
    out["per_op"] = [{{"op": "matmul", "name": "fake.mm", "calls": len(iters),
                       "total_us": sum(iters)}}]
print(json.dumps(out))
'''


def write_fake_ek_run(path: Path, mode: str = "ok", version: str = "0.1.0") -> Path:
    """An executable fake ek-run at `path`: mode ok | sleep (hangs) | kill (SIGKILLs itself)."""
    path.write_text(FAKE_EK_RUN.format(python=sys.executable, mode=mode, version=version))
    path.chmod(0o755)
    return path
