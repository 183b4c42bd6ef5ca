"""Accelerator profiles now live in `edgekit.devices.accelerator` (DESIGN.md: device profile
loading and validation belong to `edgekit/devices/`); this name stays for existing imports."""

from edgekit.devices.accelerator import (SCHEMA, find, is_accelerator_file, load, names,
                                         validate)

__all__ = ["SCHEMA", "find", "is_accelerator_file", "load", "names", "validate"]
