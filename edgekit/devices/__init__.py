"""Device profiles: load, validate and detect (device_profiles/*.yaml).

    from edgekit import devices
    p = devices.load("rpi4")            # dict, validated; ValueError with file + field on error
    devices.names()                     # profiles found on the search path
    devices.reachable(p)                # (bool, reason) — is the device there right now?
"""

from __future__ import annotations

from edgekit.devices.profiles import detect_host, load, names, reachable, search_path, validate

__all__ = ["detect_host", "load", "names", "reachable", "search_path", "validate"]
