"""SSH to a Linux device (a Raspberry Pi, or localhost in tests) with paramiko.

Host keys are verified against known_hosts unless the user opts out; every argument is
quoted with shlex, so a model path like `a; rm -rf ~` stays one argument; files go to a
`mktemp -d` directory that `cleanup()` removes on every exit path (the harness uses
`with transport:`), including after a timeout, where the remote process is killed first.
"""

from __future__ import annotations

import shlex
import socket
import sys
import time
from pathlib import Path

from edgekit.bench.transports.base import (RemoteTimeout, RunResult, Transport,
                                            TransportError, check_name)

_DIR_PREFIX = "/tmp/edgekit-bench."
CONNECT_TIMEOUT_S = 10.0


def _paramiko():
    try:
        import paramiko
    except ImportError:
        raise TransportError("the ssh transport needs paramiko (pip install paramiko)") from None
    return paramiko


class _AcceptPolicy:
    """--insecure-accept-host-key: trust any host key for this connection, save nothing."""

    def missing_host_key(self, client, hostname, key):
        return None


class SSHTransport(Transport):
    """A device reached over SSH. `known_hosts=None` uses the user's ~/.ssh/known_hosts."""

    name = "ssh"

    def __init__(self, host: str, user: str | None = None, port: int = 22,
                 key: str | None = None, known_hosts: str | None = None,
                 insecure_accept_host_key: bool = False,
                 connect_timeout: float = CONNECT_TIMEOUT_S):
        paramiko = _paramiko()
        self.host, self.user, self.port, self.key = host, user, int(port), key
        self._dir: str | None = None
        where = f"{user + '@' if user else ''}{host}:{port}"
        self.where = where
        client = paramiko.SSHClient()
        if known_hosts is not None:
            if not Path(known_hosts).is_file():
                raise TransportError(f"known_hosts file {known_hosts} does not exist")
            client.load_host_keys(known_hosts)
        else:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(
            _AcceptPolicy() if insecure_accept_host_key else paramiko.RejectPolicy())
        if key is not None and not Path(key).expanduser().is_file():
            raise TransportError(f"ssh key {key} does not exist")
        try:
            client.connect(host, port=self.port, username=user,
                           key_filename=str(Path(key).expanduser()) if key else None,
                           timeout=connect_timeout, banner_timeout=connect_timeout,
                           auth_timeout=connect_timeout, allow_agent=key is None,
                           look_for_keys=key is None)
        except paramiko.BadHostKeyException:
            client.close()
            raise TransportError(f"host key of {where} does not match known_hosts "
                                 "(possible man-in-the-middle); refusing to connect") from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransportError(f"ssh authentication to {where} failed"
                                 f"{' with key ' + key if key else ''}") from None
        except paramiko.SSHException as exc:
            client.close()
            msg = str(exc)
            if "not found in known_hosts" in msg:
                raise TransportError(
                    f"host key of {where} is not in known_hosts; add it (ssh-keyscan) or pass "
                    "--insecure-accept-host-key") from None
            raise TransportError(f"ssh to {where} failed: {msg}") from None
        except (OSError, socket.timeout) as exc:
            client.close()
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise TransportError(f"cannot reach {where}: {reason}") from None
        self._client = client
        self._sftp = None

    # -- helpers -------------------------------------------------------------------------
    def _exec(self, command: str, timeout: float) -> RunResult:
        """Run a shell command line (already quoted) and wait for it, killing on timeout."""
        paramiko = _paramiko()
        try:
            return self._exec_raw(command, timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"ssh connection to {self.where} failed: "
                                 f"{exc or type(exc).__name__}") from None

    def _exec_raw(self, command: str, timeout: float) -> RunResult:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise TransportError(f"ssh connection to {self.where} is closed")
        chan = transport.open_session()
        chan.exec_command(command)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise RemoteTimeout(f"remote command on {self.where} ran past its "
                                        f"{timeout:g} s timeout and was killed")
                time.sleep(0.005)
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        # sshd reports death by a signal as an exit-signal message, which paramiko turns
        # into status -1.
        return RunResult(rc, out.decode(errors="replace"), err.decode(errors="replace"),
                         -1 if rc == -1 else None)

    @property
    def workdir(self) -> str:
        if self._dir is None:
            res = self._exec(f"mktemp -d {_DIR_PREFIX}XXXXXXXX", timeout=30)
            path = res.stdout.strip()
            if res.rc != 0 or not path.startswith(_DIR_PREFIX):
                raise TransportError(f"cannot create a temp dir on {self.where}: "
                                     f"{res.stderr.strip() or res.stdout.strip()}")
            self._dir = path
        return self._dir

    def _sftp_client(self):
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
        return self._sftp

    # -- the interface -------------------------------------------------------------------
    def push(self, local, name=None, executable=False) -> str:
        src = Path(local)
        if not src.is_file():
            raise TransportError(f"cannot push {src}: no such file")
        rel = check_name(name or src.name)
        dst = f"{self.workdir}/{rel}"
        try:
            sftp = self._sftp_client()
            parts = rel.split("/")[:-1]
            for i in range(len(parts)):
                sub = f"{self.workdir}/{'/'.join(parts[:i + 1])}"
                try:
                    sftp.stat(sub)
                except OSError:
                    sftp.mkdir(sub)
            sftp.put(str(src), dst)
            if executable:
                self._sftp_client().chmod(dst, 0o755)
        except OSError as exc:
            raise TransportError(f"push of {src.name} to {self.where} failed: {exc}") from None
        return dst

    def run(self, argv, timeout) -> RunResult:
        d = shlex.quote(self.workdir)
        # exec replaces the shell, so the pid written is the runner's: a timeout kills it.
        line = f"cd {d} && echo $$ > .pid && exec {shlex.join([str(a) for a in argv])}"
        try:
            return self._exec(line, timeout)
        except RemoteTimeout:
            self._exec(f"kill -KILL $(cat {d}/.pid) 2>/dev/null", timeout=30)
            raise

    def pull(self, remote, local) -> None:
        try:
            self._sftp_client().get(remote, str(local))
        except OSError as exc:
            raise TransportError(f"pull of {remote} from {self.where} failed: {exc}") from None

    def cleanup(self) -> None:
        if self._client is None:
            return
        try:
            if self._dir is not None and self._dir.startswith(_DIR_PREFIX):
                # Cleanup runs on error paths too: report a failure, never mask the error.
                try:
                    self._exec(f"rm -rf -- {shlex.quote(self._dir)}", timeout=30)
                except TransportError as exc:
                    print(f"edgekit: warning: could not remove {self._dir} on {self.where}: "
                          f"{exc}", file=sys.stderr)
                self._dir = None
        finally:
            if self._sftp is not None:
                self._sftp.close()
            self._client.close()
            self._client = None

    def describe(self) -> dict:
        return {"kind": self.name, "host": self.host, "port": self.port, "user": self.user}
