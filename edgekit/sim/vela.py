"""Optional cross-check with Arm's Vela compiler (`pip install 'edgekit[vela]'`): compile the
int8 TFLite export of a model for the profile's Ethos-U configuration, read Vela's summary
and per-layer CSVs, and set them against the simulator's numbers for the EKM file of the same
model — total cycles and the cycle ranking of the MAC layers (docs/sim.md §Vela)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_MAC_OPS = {"qlinear", "qconv1d", "qconv_transpose1d", "qlstm", "linear", "conv1d"}


def available() -> bool:
    """Whether the `vela` command (ethos-u-vela) is installed next to this Python."""
    return _vela_exe() is not None


def _vela_exe() -> str | None:
    beside = Path(sys.executable).with_name("vela")
    return str(beside) if beside.is_file() else shutil.which("vela")


def run_vela(tflite: str | Path, prof: dict, out_dir: str | Path, timeout: float = 600) -> dict:
    """Compile `tflite` with Vela for `prof["vela"]`; return {"summary": {...}, "layers":
    [{"name", "target", "cycles", "macs"}]} parsed from Vela's CSV output."""
    exe = _vela_exe()
    if exe is None:
        raise ValueError("Vela is not installed (pip install ethos-u-vela)")
    v = prof.get("vela")
    if not v:
        raise ValueError(f"profile {prof['name']} has no vela section")
    cmd = [exe, str(tflite), "--output-dir", str(out_dir),
           "--accelerator-config", v.get("accelerator_config", "ethos-u55-128"),
           "--system-config", v.get("system_config", "Ethos_U55_High_End_Embedded"),
           "--memory-mode", v.get("memory_mode", "Shared_Sram"),
           "--verbose-performance"]  # also writes the per-layer CSV
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        last = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ValueError(f"vela failed on {Path(tflite).name}: {last[0]}")
    stem = Path(tflite).stem
    summary_csv = next(Path(out_dir).glob(f"{stem}_summary_*.csv"))
    with summary_csv.open(newline="") as f:
        summary = next(csv.DictReader(f))
    layers = []
    with (Path(out_dir) / f"{stem}_per-layer.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            layers.append({"name": row["Name"], "target": row["Target"],
                           "cycles": float(row["Op Cycles"]), "macs": int(row["MAC Count"])})
    return {"summary": {k: summary[k] for k in ("cycles_total", "cycles_npu",
                                                 "off_chip_flash_total_bytes", "nn_macs",
                                                 "core_clock")},
            "layers": layers}


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0  # ties share their average rank
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation of two equal-length lists (None when undefined)."""
    if len(a) != len(b) or len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return None if va == 0 or vb == 0 else cov / (va * vb)


def cross_check(ekm_path: str | Path, tflite_path: str | Path, prof: dict,
                graph: str | None = None, work_dir: str | Path | None = None) -> dict:
    """Simulate `ekm_path` on `prof` and compile `tflite_path` (its int8 TFLite export) with
    Vela for the same configuration. MAC layers are matched by module path (Vela names its
    ops `<module path>/<suffix>`; a conv's layout transposes are left out: only rows with
    MACs count). Returns totals, the matched layers and the rank correlation."""
    from edgekit.export import ekm
    from edgekit.sim import simulate

    try:
        model = ekm.read(ekm_path)
    except ekm.EkmError as exc:
        raise ValueError(str(exc)) from None  # the reader's message already names the file
    sim = simulate.simulate(model, prof, graph, residency=None)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        vela = run_vela(tflite_path, prof, tmp)
    # A graph output keeps its IR name in the TFLite file (runners find it by name) and Vela
    # names a layer after its output tensor: such a name maps back to the layer's module path.
    layer_of = {o: op.name for g in model.graphs.values() for op in g.ops
                for o in op.outputs if o in g.outputs}
    vela_by: dict[str, float] = {}
    for row in vela["layers"]:
        if row["target"] == "NPU" and row["macs"] > 0:
            key = layer_of.get(row["name"], row["name"].split("/", 1)[0])
            vela_by[key] = vela_by.get(key, 0.0) + row["cycles"]
    sim_by: dict[str, int] = {}
    for r in sim["layers"]:
        if r["op"] in _MAC_OPS:
            sim_by[r["name"]] = sim_by.get(r["name"], 0) + r["cycles"]
    names = [n for n in sim_by if n in vela_by]
    matched = [{"name": n, "sim_cycles": sim_by[n], "vela_cycles": vela_by[n],
                "ratio": sim_by[n] / vela_by[n] if vela_by[n] else None} for n in names]
    sim_m = sum(sim_by[n] for n in names)
    vela_m = sum(vela_by[n] for n in names)
    return {
        "profile": prof["name"], "ekm": str(ekm_path), "tflite": str(tflite_path),
        "sim_total_cycles": sim["steady"]["cycles"],
        "vela_total_cycles": float(vela["summary"]["cycles_total"]),
        "vela_npu_cycles": float(vela["summary"]["cycles_npu"]),
        "vela_flash_bytes": float(vela["summary"]["off_chip_flash_total_bytes"]),
        "sim_dram_bytes": sim["steady"]["dram_bytes"],
        "matched_layers": len(names), "sim_mac_layers": len(sim_by),
        "vela_mac_layers": len(vela_by),
        "sim_matched_cycles": sim_m, "vela_matched_cycles": vela_m,
        "matched_ratio": sim_m / vela_m if vela_m else None,
        "spearman": spearman([sim_by[n] for n in names], [vela_by[n] for n in names]),
        "layers": matched,
    }
