"""Transports: how the runner and the model reach a device (local, ssh, adb, qemu)."""

from edgekit.bench.transports.base import RemoteTimeout, RunResult, Transport, TransportError

__all__ = ["RemoteTimeout", "RunResult", "Transport", "TransportError"]
