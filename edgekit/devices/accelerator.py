"""Accelerator profiles (`device_profiles/*.yaml` with `kind: accelerator`) for the int8
simulator (docs/sim.md): schema, search and validation with one-line errors naming the file
and the field. Found on the same search path as CPU profiles (`devices.search_path()`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.devices.profiles import read_yaml, search_path, where
from edgekit.export.ir import OPS

_POS = {"type": "number", "exclusiveMinimum": 0}
_NONNEG = {"type": "number", "minimum": 0}
_INT = {"type": "integer", "minimum": 1}


def _obj(required: list[str], props: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": props}


SCHEMA: dict[str, Any] = _obj(
    ["kind", "name", "description", "clock_mhz", "mac_array", "sram", "dram", "decoder",
     "activation_unit", "overhead_cycles", "accelerated_ops", "host"],
    {
        "kind": {"const": "accelerator"},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "description": {"type": "string"},
        "clock_mhz": _POS,
        "mac_array": _obj(["rows", "cols", "depthwise"], {
            "rows": _INT, "cols": _INT,
            "depthwise": {"enum": ["channels_on_rows", "as_grouped"]}}),
        "sram": _obj(["bytes", "bytes_per_cycle"], {"bytes": _INT, "bytes_per_cycle": _POS}),
        "dram": _obj(["bytes_per_cycle", "latency_cycles"],
                     {"bytes_per_cycle": _POS, "latency_cycles": _NONNEG}),
        "decoder": _obj(["codes_per_cycle", "bitmap_weights_per_cycle", "int8_bypass"], {
            "codes_per_cycle": _POS, "bitmap_weights_per_cycle": _POS,
            "int8_bypass": {"type": "boolean"}}),
        "activation_unit": _obj(["elements_per_cycle"], {"elements_per_cycle": _POS}),
        "activation_bytes": _obj([], {"accelerator": _INT, "host": _INT}),
        "overhead_cycles": _NONNEG,
        "weight_residency": {"type": "boolean"},
        "accelerated_ops": {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"enum": sorted(OPS)}},
        "host": _obj(["clock_mhz", "flops_per_cycle", "overhead_cycles"], {
            "clock_mhz": _POS, "flops_per_cycle": _POS, "overhead_cycles": _NONNEG}),
        "vela": _obj([], {"accelerator_config": {"type": "string"},
                          "system_config": {"type": "string"},
                          "memory_mode": {"type": "string"}}),
    })


def validate(profile: Any, source: str = "accelerator profile") -> dict:
    """Check `profile` against SCHEMA; raise ValueError naming `source` and the first bad
    field. Fills the optional fields' defaults and returns the profile."""
    import jsonschema

    if not isinstance(profile, dict):
        raise ValueError(f"{source}: (top level): must be a mapping")
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(profile),
                    key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        e = errors[0]
        raise ValueError(f"{source}: {where(e.absolute_path)}: {e.message}")
    if not any(OPS[o].quantized for o in profile["accelerated_ops"]):
        raise ValueError(f"{source}: accelerated_ops: no quantized op (qlinear, qconv1d, ...)"
                         " — an int8 accelerator must run at least one")
    profile.setdefault("weight_residency", True)
    acts = profile.setdefault("activation_bytes", {})
    acts.setdefault("accelerator", 1)  # int8 activations on the array
    acts.setdefault("host", 4)         # the host computes fallback ops in float32
    return profile


def is_accelerator_file(path: Path) -> bool:
    """Whether a YAML file declares `kind: accelerator`. Unreadable files count as not: the
    CPU profile loader reports them with their reason."""
    try:
        data = read_yaml(path)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("kind") == "accelerator"


def _by_name(name: str) -> Path | None:
    """NAME.yaml in the first search-path folder holding one (the CPU rule too)."""
    for folder in search_path():
        p = folder / f"{name}.yaml"
        if p.is_file():
            return p
    return None


def find(name_or_path: str) -> Path | None:
    """The accelerator profile file for a name or path, or None when it is not one."""
    if not isinstance(name_or_path, str) or not name_or_path:
        return None
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = _by_name(name_or_path)
    return p if p is not None and p.is_file() and is_accelerator_file(p) else None


def names() -> list[str]:
    """Accelerator profile names on the search path (first folder wins), sorted."""
    found = {}
    for folder in search_path():
        if folder.is_dir():
            for p in folder.glob("*.yaml"):
                found.setdefault(p.stem, p)
    return sorted(n for n, p in found.items() if is_accelerator_file(p))


def load(name_or_path: str) -> dict:
    """Load and validate an accelerator profile by name (on the search path) or .yaml path."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError("accelerator profile must be a name or a .yaml path")
    p: Path | None = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = _by_name(name_or_path)
        if p is None:
            raise ValueError(f"unknown accelerator profile {name_or_path!r}; known: "
                             f"{', '.join(names()) or 'none'} (or pass a .yaml path)")
    data = read_yaml(p, "accelerator profile")
    if isinstance(data, dict) and data.get("kind") != "accelerator" and "cpu" in data:
        # A CPU profile is measured or estimated, not simulated: point to the right command.
        name = data.get("name", p.stem)
        raise ValueError(f"{name} is a CPU profile; use `edgekit bench --device {name}`")
    return validate(data, str(p))
