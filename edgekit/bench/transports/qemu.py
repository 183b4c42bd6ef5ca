"""The aarch64 runner under qemu-user with the profile's CPU model: functional runs only.

qemu translates every instruction, so its timings say nothing about a Cortex-A72; results
taken through this transport are marked `measures = False` and the harness never reports
their timings as measurements (docs/bench.md).
"""

from __future__ import annotations

import shutil

from edgekit.bench.transports.base import TransportError
from edgekit.bench.transports.local import LocalTransport


class QemuTransport(LocalTransport):
    """`qemu-aarch64 -cpu <cpu> <argv...>` in a local temp dir."""

    name = "qemu"
    measures = False

    def __init__(self, cpu: str, qemu: str = "qemu-aarch64"):
        exe = shutil.which(qemu)
        if exe is None:
            raise TransportError(f"{qemu} not found (Debian: apt-get install qemu-user)")
        # Always an explicit -cpu: qemu's default `max` has every extension and would hide
        # a dotprod instruction that SIGILLs on a real Cortex-A72.
        super().__init__(prefix=[exe, "-cpu", cpu])
        self.cpu = cpu

    def describe(self) -> dict:
        return {"kind": self.name, "qemu_cpu": self.cpu}
