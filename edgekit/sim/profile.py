"""Accelerator profiles (`device_profiles/*.yaml` with `kind: accelerator`): schema, loading
and validation with one-line errors naming the file and the field (docs/sim.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgekit.export.ir import OPS

_REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"

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


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


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
        raise ValueError(f"{source}: {_where(e.absolute_path)}: {e.message}")
    if not any(OPS[o].quantized for o in profile["accelerated_ops"]):
        raise ValueError(f"{source}: accelerated_ops: no quantized op (qlinear, qconv1d, ...)"
                         " — an int8 accelerator must run at least one")
    profile.setdefault("weight_residency", True)
    acts = profile.setdefault("activation_bytes", {})
    acts.setdefault("accelerator", 1)  # int8 activations on the array
    acts.setdefault("host", 4)         # the host computes fallback ops in float32
    return profile


def is_accelerator_file(path: Path) -> bool:
    """Whether a YAML file declares `kind: accelerator` (cheap: reads the top level only).
    `edgekit devices` uses it to leave accelerator profiles to the simulator."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return False  # not ours to judge: the devices loader reports it
    return isinstance(data, dict) and data.get("kind") == "accelerator"


def find(name_or_path: str) -> Path | None:
    """The accelerator profile file for a name or path, or None when it is not one."""
    if not isinstance(name_or_path, str) or not name_or_path:
        return None
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = _REPO_PROFILES / f"{name_or_path}.yaml"
    return p if p.is_file() and is_accelerator_file(p) else None


def names() -> list[str]:
    """Names of the accelerator profiles shipped in device_profiles/."""
    return sorted(p.stem for p in _REPO_PROFILES.glob("*.yaml") if is_accelerator_file(p))


def load(name_or_path: str) -> dict:
    """Load and validate an accelerator profile by name (device_profiles/NAME.yaml) or path."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError("accelerator profile must be a name or a .yaml path")
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = _REPO_PROFILES / f"{name_or_path}.yaml"
        if not p.is_file():
            raise ValueError(f"unknown accelerator profile {name_or_path!r}; known: "
                             f"{', '.join(names()) or 'none'} (or pass a .yaml path)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read accelerator profile {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{p}: not valid YAML{at}") from None
    except RecursionError:
        raise ValueError(f"{p}: YAML nested too deeply") from None
    return validate(data, str(p))
