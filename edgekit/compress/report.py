"""Per-layer compression report: bits, levels, sparsity, stored bytes, weight and output SNR.

SNR(ref, test) = 10·log10(Σ ref² / Σ (ref − test)²) in dB; `None` means no error at all.
A layer's output SNR compares the quantized layer with its float original fed the *same*
input (the input the layer sees inside the compressed model, before any input fake-quant),
so it isolates that layer's own error; the model SNR compares the two whole models.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from torch import nn

from edgekit.compress.layers import QuantLayer, weight_2d


def snr_db(ref, test) -> float | None:
    """10·log10(signal / noise) in dB; None when the two are identical."""
    ref = np.asarray(ref, np.float64)
    return _db(float((ref ** 2).sum()), float(((ref - np.asarray(test, np.float64)) ** 2).sum()))


def _db(sig: float, err: float) -> float | None:
    if err == 0.0:
        return None
    return -math.inf if sig == 0.0 else 10.0 * math.log10(sig / err)


def _tensors(out) -> list[torch.Tensor]:
    """Floating-point tensors in a (nested) model output, in a fixed order."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _tensors(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


class _Energy:
    def __init__(self):
        self.sig = 0.0
        self.err = 0.0

    def add(self, ref: list[torch.Tensor], test: list[torch.Tensor]) -> None:
        for r, t in zip(ref, test):
            r, t = r.detach().double(), t.detach().double()
            self.sig += float((r * r).sum())
            self.err += float(((r - t) ** 2).sum())

    def db(self) -> float | None:
        return _db(self.sig, self.err)


def report(compressed: nn.Module, reference: nn.Module, calib: Iterable | None = None) -> dict:
    """A JSON-able dict: one entry per quantized layer plus whole-model totals and SNR.

    `reference` is the float model `compressed` was made from (same module names);
    `calib` batches (as for `compress`) enable the output SNRs.
    """
    from edgekit.compress.pipeline import _batches, _run

    qlayers = [(n, m) for n, m in compressed.named_modules() if isinstance(m, QuantLayer)]
    rows, energies, refs = [], {}, {}
    for name, q in qlayers:
        try:
            ref = reference.get_submodule(name)
        except AttributeError:
            raise ValueError(f"reference model has no layer {name!r}") from None
        refs[name] = ref
        nbytes = sum(qm.nbytes() for qm in q.matrices.values())
        count = sum(qm.codes.numel() for qm in q.matrices.values())
        w_ref = np.concatenate([weight_2d(ref, getattr(ref, p)).ravel() for p in q.matrices])
        w_q = np.concatenate([qm.dequantize().ravel() for qm in q.matrices.values()])
        first = next(iter(q.matrices.values()))
        rows.append({
            "name": name, "type": type(ref).__name__,
            "shape": [list(qm.codes.shape) for qm in q.matrices.values()],
            "bits": first.bits, "quantizer": first.quantizer,
            "levels": max(qm.levels for qm in q.matrices.values()),
            "rounding": sorted({qm.rounding for qm in q.matrices.values()}),
            "group_size": first.group_size, "nm": list(first.nm) if first.nm else None,
            "sparsity": float(sum(qm.sparsity() * qm.codes.numel()
                                  for qm in q.matrices.values()) / count),
            "act_quant": q.act_method if q.act_quant else None,
            "nbytes": nbytes, "fp32_bytes": 4 * count,
            "weight_snr_db": snr_db(w_ref, w_q), "output_snr_db": None,
        })
        energies[name] = _Energy()
    quant_params = {id(p) for _, q in qlayers for p in q.base.parameters()}
    float_bytes = sum(4 * p.numel() for p in compressed.parameters() if id(p) not in quant_params)
    fp32_total = sum(4 * p.numel() for p in reference.parameters())
    model_snr = None
    if calib is not None:
        batches = _batches(calib)
        hooks = [q.register_forward_hook(_layer_hook(refs[n], energies[n])) for n, q in qlayers]
        total = _Energy()
        try:
            with torch.no_grad():
                for b in batches:
                    total.add(_tensors(_run(reference.eval(), b)), _tensors(_run(compressed, b)))
        finally:
            for h in hooks:
                h.remove()
        for row in rows:
            row["output_snr_db"] = energies[row["name"]].db()
        model_snr = total.db()
    qbytes = sum(r["nbytes"] for r in rows)
    return {
        "layers": rows,
        "model": {"quantized_layers": len(rows), "packed_bytes": qbytes,
                  "float_bytes": float_bytes, "total_bytes": qbytes + float_bytes,
                  "fp32_bytes": fp32_total,
                  "compression": fp32_total / max(qbytes + float_bytes, 1),
                  "output_snr_db": model_snr},
    }


def _layer_hook(ref: nn.Module, energy: _Energy):
    def hook(mod, args, out):
        energy.add(_tensors(ref(*args)), _tensors(out))
    return hook


def _fmt_db(v) -> str:
    return "exact" if v is None else f"{v:.1f}"


def print_report(rep: dict, console=None, title: str = "compression report") -> None:
    """Print a report dict as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=title)
    for col in ("layer", "type", "bits", "quantizer", "levels", "sparsity", "bytes", "fp32",
                "W SNR dB", "out SNR dB"):
        t.add_column(col, justify="left" if col in ("layer", "type", "quantizer") else "right")
    for r in rep["layers"]:
        t.add_row(r["name"], r["type"], str(r["bits"]), r["quantizer"], str(r["levels"]),
                  f"{100 * r['sparsity']:.1f}%", str(r["nbytes"]), str(r["fp32_bytes"]),
                  _fmt_db(r["weight_snr_db"]), _fmt_db(r["output_snr_db"]))
    console.print(t)
    m = rep["model"]
    console.print(f"model: {m['total_bytes']} bytes ({m['packed_bytes']} packed + "
                  f"{m['float_bytes']} float) vs {m['fp32_bytes']} fp32 = "
                  f"{m['compression']:.2f}x; output SNR {_fmt_db(m['output_snr_db'])} dB")
