"""`edgekit export`: compress, calibrate, lower, write EKM/ONNX/TFLite, check parity."""

from __future__ import annotations

import click

from edgekit import EdgekitError


def _shape(text: str | None) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise EdgekitError(f"--input-shape must be comma-separated ints, got {text!r}") from None


@click.command("export")
@click.argument("model")
@click.option("--size", type=click.Choice(["tiny", "small"]), default="tiny", show_default=True,
              help="Zoo model size.")
@click.option("--recipe", default=None, help="Recipe YAML file or built-in name (int8, int4, "
              "mixed, gq-5bit, wanda-2of4).")
@click.option("--bits", type=int, default=None, help="Uniform weights of this width, every "
              "layer (instead of --recipe; default 8).")
@click.option("--sparsity", type=float, default=None, help="Magnitude-prune every layer to "
              "this fraction of zeros.")
@click.option("--nm", default=None, help="N:M structured sparsity (e.g. 2:4) on linear and "
              "LSTM layers.")
@click.option("--calib", type=int, default=8, show_default=True,
              help="Calibration batches (example inputs, distinct seeds) for activation grids.")
@click.option("--format", "formats", default="ekm", show_default=True,
              help="Comma-separated: ekm, onnx, tflite.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output directory (model files + export.json).")
@click.option("--input-shape", default=None, help="Input shape of a user module, e.g. 1,100,80.")
@click.option("--seed", type=int, default=0, show_default=True, help="Model weight seed.")
@click.option("--steps", type=int, default=3, show_default=True,
              help="Streaming calls per graph in the parity check.")
@click.option("--onnx-flavor", type=click.Choice(["qdq", "ort"]), default="qdq",
              show_default=True, help="ONNX weights: qdq = standard DequantizeLinear ops; ort = "
              "com.microsoft MatMulNBits for 2/4/8-bit uniform linear layers.")
@click.option("--tflite-io", type=click.Choice(["int8", "float"]), default="int8",
              show_default=True, help="TFLite graph inputs, outputs and streaming states: int8 "
              "(integer-only devices) or float with QUANTIZE/DEQUANTIZE at the boundary.")
@click.option("--tflite-norm-bits", type=click.Choice(["8", "16"]), default="8",
              show_default=True, help="TFLite full-integer: LayerNorm statistics at int8 or "
              "int16 (closer to the model, slower in LiteRT: XNNPACK has no int16 ops).")
@click.option("--tflite-float-ops", is_flag=True,
              help="TFLite: keep float ops between the integer layers (no full-integer "
              "conversion; closer to the compressed model, not for integer-only hardware).")
@click.option("--interpreter", is_flag=True,
              help="Check EKM parity on the numpy interpreter even when the C++ runtime is built.")
def export(model, size, recipe, bits, sparsity, nm, calib, formats, out, input_shape, seed, steps,
           onnx_flavor, tflite_io, tflite_norm_bits, tflite_float_ops, interpreter) -> None:
    """Export MODEL to DIR/model.ekm (and ONNX/TFLite), with a per-layer table and a parity
    report in DIR/export.json.

    MODEL is a zoo name (conformer, conmer, rnnt, nwc, nwc-cmrl), a checkpoint written by
    `edgekit train` (CKPT.pt; a QAT checkpoint keeps its codes, no recipe allowed), or
    path/to/file.py:factory (a user module; give --input-shape).
    """
    from edgekit.export.pipeline import ExportConfig, run_export

    if steps < 1:
        raise EdgekitError(f"--steps must be >= 1, got {steps}")
    cfg = ExportConfig(model=model, out=out, size=size, recipe=recipe, bits=bits,
                       sparsity=sparsity, nm=nm, calib=calib, formats=tuple(formats.split(",")),
                       input_shape=_shape(input_shape), seed=seed, steps=steps,
                       prefer_runtime=not interpreter,
                       options={"onnx": {"flavor": onnx_flavor},
                                "tflite": {"io": tflite_io, "full_integer": not tflite_float_ops,
                                           "norm_bits": int(tflite_norm_bits)}})
    report = _run_with_progress(cfg, run_export)
    _print(report, out)


def _run_with_progress(cfg, run):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        tasks: dict = {}

        def progress(stage, done, total):
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))
        return run(cfg, progress)


def _fmt_db(v) -> str:
    return v if isinstance(v, str) else f"{v:.1f}"


def _widened(names: list) -> str:
    if len(names) <= 2:
        return ", ".join(names) or "-"
    return f"{len(names)} layers (see export.json)"


def _print(report: dict, out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if not con.is_terminal:   # piped/logged: do not fold module paths at 80 columns
        con = Console(width=160)
    t = Table(title=f"{report['model']} · {report['recipe']} · layers")
    for col in ("name", "type", "shape", "bits", "sparsity", "stored bytes", "weight SNR dB"):
        t.add_column(col, justify="left" if col in ("name", "type") else "right",
                     overflow="fold")
    for r in report["layers"]:
        nm = f" {r['nm']}" if r.get("nm") else ""
        t.add_row(r["name"], r["type"], "x".join(map(str, r["shape"])),
                  "fp32" if r["bits"] == 32 else str(r["bits"]), f"{r['sparsity']:.2f}{nm}",
                  f"{r['bytes']:,}", _fmt_db(r.get("weight_snr_db", "-")))
    con.print(t)
    p = Table(title="parity (SNR over the streaming calls, worst graph output)")
    for col in ("format", "backend", "file bytes", "theoretical", "size ratio", "vs compressed dB",
                "vs fp32 dB", "widened"):
        p.add_column(col, justify="left" if col in ("format", "backend", "widened") else "right")
    for fmt, e in report["formats"].items():
        theo = e.get("theoretical_bytes") or 0
        ratio = f"{e['file_bytes'] / theo:.3f}" if theo else "-"
        p.add_row(fmt, str(e["backend"]), f"{e['file_bytes']:,}", f"{theo:,}", ratio,
                  _fmt_db(e["worst_snr_vs_compressed_db"]), _fmt_db(e["worst_snr_vs_fp32_db"]),
                  _widened(e.get("widened_layers") or []))
    con.print(p)
    tfl = report["formats"].get("tflite", {}).get("emitter_report", {}).get("graphs", {})
    if tfl:
        full = all(g.get("full_integer") for g in tfl.values())
        left = sum(sum(g.get("float_ops", {}).values()) for g in tfl.values())
        lsb = max((v for g in tfl.values() for v in g.get("xnnpack_vs_ref_max_lsb", {}).values()),
                  default=None)
        con.print(f"tflite: {'full-integer' if full else 'integer layers, float between them'}"
                  f", {left} float op(s) left; XNNPACK vs reference resolver: "
                  f"{'-' if lsb is None else f'{lsb:g}'} LSB max on the outputs")
    d = Table(title="parity per graph output (SNR dB over the streaming calls)")
    for col in ("format", "graph", "output", "vs compressed", "vs fp32"):
        d.add_column(col, justify="left" if col in ("format", "graph", "output") else "right")
    for fmt, e in report["formats"].items():
        for graph, outs in e["parity"].items():
            for name, row in outs.items():
                d.add_row(fmt, graph, name, _fmt_db(row["snr_vs_compressed_db"]),
                          _fmt_db(row.get("snr_vs_fp32_db", "-")))
    con.print(d)
    ekm = report["formats"].get("ekm")
    if ekm:
        sc = ekm["size_check"]
        rel = "<=" if sc["ok"] else ">"
        con.print(f"EKM size check: {sc['file_bytes']:,} {rel} 1.05 x {sc['packed_bytes']:,} "
                  f"packed + 8 KiB + {sc['float_const_bytes_aligned']:,} float consts = "
                  f"{sc['limit_bytes']:,}: {'ok' if sc['ok'] else 'EXCEEDED'}")
    con.print(f"wrote {out}/export.json")
