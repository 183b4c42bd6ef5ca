"""The one interface every transport implements: push, run with a timeout, pull, clean up.

A transport owns a private working directory on its target (a temp dir created on first use)
and removes it in `cleanup()`, which `with transport:` calls on every exit path.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from edgekit import EdgekitError


class TransportError(EdgekitError):
    """The target could not be reached, a transfer failed, or a remote command misbehaved."""


class RemoteTimeout(TransportError):
    """A remote command ran past its timeout (and was killed)."""


@dataclass
class RunResult:
    """What a command returned. `signal` is set when the process was killed by a signal."""

    rc: int
    stdout: str
    stderr: str
    signal: int | None = None


def check_name(name: str) -> str:
    """A pushed file's name relative to the working dir: '/'-separated, no '..', no
    absolute path — a push can never write outside the transport's own directory."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise TransportError(f"bad remote file name {name!r}")
    return name


class Transport(abc.ABC):
    """Runs commands and moves files on one target. Use as a context manager."""

    name = "base"
    #: True when timings taken through this transport are measurements of the target's CPU.
    measures = True

    @abc.abstractmethod
    def push(self, local: str | Path, name: str | None = None, executable: bool = False) -> str:
        """Copy `local` into the working directory as `name` (default: its own name; may have
        '/'-separated folders, created as needed); return its path on the target."""

    @abc.abstractmethod
    def run(self, argv: list[str], timeout: float) -> RunResult:
        """Run `argv` (no shell: every argument is passed literally) in the working directory.

        Raises RemoteTimeout after `timeout` seconds, having killed the process."""

    @abc.abstractmethod
    def pull(self, remote: str, local: str | Path) -> None:
        """Copy a file from the target to `local`."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Remove the working directory and everything in it; safe to call twice."""

    def describe(self) -> dict:
        """Where this transport runs, for the result's `device.transport` block."""
        return {"kind": self.name}

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
