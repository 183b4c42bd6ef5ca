"""Facts recorded with every result: host versions, the device's OS, CPU governor, frequency
and temperature where readable (through the transport, so a Pi reports its own)."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

from edgekit import __version__
from edgekit.bench.transports.base import Transport, TransportError

_PROBE = ("uname -srm; "
          "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo -; "
          "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq 2>/dev/null || echo -; "
          "cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null || echo -")


def host() -> dict:
    """Versions of the machine that runs `edgekit bench`."""
    return {"edgekit_version": __version__, "python": platform.python_version(),
            "platform": platform.platform()}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _num(text: str, scale: float) -> float | None:
    try:
        return float(text) * scale
    except ValueError:
        return None


def device(t: Transport | None) -> dict:
    """OS, governor, current frequency (MHz) and temperature (°C) of the device behind `t`
    (None values where unreadable; nothing for qemu, whose 'device' is the host)."""
    empty = {"os": None, "governor": None, "freq_mhz": None, "temperature_c": None}
    if t is None or not t.measures:
        return empty
    try:
        res = t.run(["sh", "-c", _PROBE], 30)
    except TransportError:
        return empty
    lines = res.stdout.splitlines() + ["-"] * 4
    return {"os": lines[0].strip() or None,
            "governor": None if lines[1].strip() == "-" else lines[1].strip(),
            "freq_mhz": _num(lines[2].strip(), 1e-3),
            "temperature_c": _num(lines[3].strip(), 1e-3)}


def python_executable() -> str:
    return sys.executable
