"""Profile files: search path, schema validation with one-line errors, host detection."""

from __future__ import annotations

import os
import platform
import shutil
import socket
from pathlib import Path
from typing import Any

import yaml

_REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
TRANSPORTS = ("local", "ssh", "adb", "none")

_NUM = {"type": "number", "exclusiveMinimum": 0}
_INT = {"type": "integer", "minimum": 1}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "description", "cpu", "memory", "reach"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "description": {"type": "string"},
        "detect": {"type": "boolean"},
        "os_notes": {"type": "string"},
        "cpu": {
            "type": "object", "additionalProperties": False,
            "required": ["arch", "model", "cores", "freq_ghz", "isa", "l1d_kib", "l2_kib",
                         "int8_macs_per_cycle", "f32_flops_per_cycle"],
            "properties": {
                "arch": {"enum": ["aarch64", "x86_64"]},
                "model": {"type": "string"},
                "cores": _INT,
                "freq_ghz": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
                "isa": {"type": "array", "minItems": 1, "items": {
                    "enum": ["ref", "avx2", "avx512", "avx512vbmi2", "neon", "neondot"]}},
                "qemu_cpu": {"type": "string"},
                "l1d_kib": _INT, "l2_kib": _INT,
                "int8_macs_per_cycle": _NUM, "f32_flops_per_cycle": _NUM,
            },
        },
        "memory": {
            "type": "object", "additionalProperties": False,
            "required": ["dram_bandwidth_gbs", "l2_bandwidth_gbs"],
            "properties": {"dram": {"type": "string"}, "dram_bandwidth_gbs": _NUM,
                           "l2_bandwidth_gbs": _NUM},
        },
        "reach": {
            "type": "object", "additionalProperties": False, "required": ["transport"],
            "properties": {
                "transport": {"enum": list(TRANSPORTS)},
                "host": {"type": ["string", "null"]},
                "user": {"type": ["string", "null"]},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "key": {"type": ["string", "null"]},
                "known_hosts": {"type": ["string", "null"]},
                "serial": {"type": ["string", "null"]},
                "python": {"type": ["string", "null"]},
            },
        },
    },
}


def search_path() -> list[Path]:
    """Folders searched for NAME.yaml: $EDGEKIT_DEVICE_PATH entries, then device_profiles/."""
    extra = [Path(p) for p in os.environ.get("EDGEKIT_DEVICE_PATH", "").split(":") if p]
    return extra + [_REPO_PROFILES]


def names() -> list[str]:
    """CPU profile names on the search path (first folder wins), sorted. Accelerator
    profiles (`kind: accelerator`) are listed by `edgekit.devices.accelerator.names()`."""
    from edgekit.devices.accelerator import is_accelerator_file

    found = set()
    for folder in search_path():
        if folder.is_dir():
            found.update(p.stem for p in folder.glob("*.yaml") if not is_accelerator_file(p))
    return sorted(found)


def where(path) -> str:
    """A jsonschema error path as dotted text ("cpu.isa.0"), for one-line errors."""
    return ".".join(str(p) for p in path) or "(top level)"


def read_yaml(path: Path, what: str = "device profile") -> Any:
    """Parse one profile file; ValueError naming the file for every way it can be unreadable
    (both profile kinds go through here so their errors read alike)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{at}") from None
    except RecursionError:
        raise ValueError(f"{path}: YAML nested too deeply") from None


def validate(profile: Any, source: str = "profile") -> dict:
    """Check `profile` against SCHEMA (and the cross-field rules); raise ValueError naming
    `source` and the offending field. Returns the profile."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(profile), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ValueError(f"{source}: {where(e.absolute_path)}: {e.message}")
    lo, hi = profile["cpu"]["freq_ghz"]
    if lo > hi:
        raise ValueError(f"{source}: cpu.freq_ghz: min {lo} is above max {hi}")
    if profile["cpu"]["arch"] == "aarch64" and "qemu_cpu" not in profile["cpu"]:
        raise ValueError(f"{source}: cpu.qemu_cpu: required for an aarch64 device "
                         "(qemu's default CPU hides missing extensions)")
    return profile


def _read(path: Path) -> dict:
    data = read_yaml(path)
    if isinstance(data, dict) and data.get("kind") == "accelerator":
        raise ValueError(f"{path}: an accelerator profile; simulate it with "
                         f"`edgekit sim run MODEL.ekm --device {data.get('name', path.stem)}`")
    validate(data, str(path))
    if path.suffix == ".yaml" and data["name"] != path.stem and path.parent in search_path():
        raise ValueError(f"{path}: name {data['name']!r} must equal the file name")
    return data


def load(name_or_path: str) -> dict:
    """Load a profile by name (searched on `search_path()`) or by a .yaml path; validated,
    and for `detect: true` profiles, with the host's detected CPU facts filled in."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError("device must be a profile name or a .yaml path")
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        profile = _read(Path(name_or_path))
    else:
        for folder in search_path():
            path = folder / f"{name_or_path}.yaml"
            if path.is_file():
                profile = _read(path)
                break
        else:
            from edgekit.devices import accelerator

            known = names() + [f"{n} (accelerator, simulated)" for n in accelerator.names()]
            raise ValueError(f"unknown device {name_or_path!r}; known: "
                             f"{', '.join(known) or 'none'} (or pass a .yaml path)")
    if profile.get("detect"):
        profile["cpu"].update(detect_host())
    return profile


def detect_host() -> dict:
    """CPU facts of this machine that a profile can hold: model, cores, frequency, ISA."""
    facts: dict[str, Any] = {"arch": platform.machine() or "x86_64"}
    if facts["arch"] not in ("x86_64", "aarch64"):
        facts["arch"] = "x86_64" if facts["arch"] in ("AMD64", "amd64") else "aarch64"
    facts["cores"] = os.cpu_count() or 1
    try:
        flags, model = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
        if model:
            facts["model"] = model
        isa = ["ref"]
        if "avx2" in flags:
            isa.append("avx2")
        # edgekit's avx512 variant needs F+BW+DQ+VL and VNNI (vpdpbusd); vbmi2 adds sparse.
        if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"} <= flags:
            isa.append("avx512")
            if "avx512_vbmi2" in flags:
                isa.append("avx512vbmi2")
        facts["isa"] = isa
        # The int8 rate the roofline uses follows what the kernels can issue: vpdpbusd
        # (64 MACs) with VNNI, vpmaddubsw (32) with AVX2, a scalar-ish ref otherwise.
        facts["int8_macs_per_cycle"] = 64 if "avx512" in isa else 32 if "avx2" in isa else 2
    except OSError:
        pass
    try:
        import psutil

        f = psutil.cpu_freq()
        if f is not None and f.max:
            facts["freq_ghz"] = [round((f.min or f.max) / 1000, 3), round(f.max / 1000, 3)]
        elif f is not None and f.current:
            facts["freq_ghz"] = [round(f.current / 1000, 3)] * 2
    except (ImportError, OSError, NotImplementedError):
        pass
    return facts


def reachable(profile: dict, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the device can be used right now, and why not. Cheap: a TCP connect for ssh
    (no login), `adb devices` for adb."""
    reach = profile["reach"]
    kind = reach["transport"]
    if kind == "local":
        return True, "this machine"
    if kind == "none":
        return False, "no transport configured"
    if kind == "ssh":
        host = reach.get("host")
        if not host:
            return False, "ssh host not configured"
        port = reach.get("port", 22)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True, f"ssh {host}:{port} answers"
        except OSError as exc:
            return False, f"ssh {host}:{port}: {exc.strerror or exc}"
    if shutil.which("adb") is None:
        return False, "adb not installed"
    import subprocess

    from edgekit.bench.transports.adb import parse_devices

    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True,
                             timeout=timeout).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"adb devices failed: {exc}"
    devs = parse_devices(out)
    serial = reach.get("serial")
    state = devs.get(serial) if serial else (next(iter(devs.values())) if len(devs) == 1
                                             else None)
    if state == "device":
        return True, f"adb {serial or 'device'} attached"
    return False, f"adb: {state or 'no device attached'}"
