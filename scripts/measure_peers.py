"""Block-level output SNR: edgekit vs onnxruntime and ai-edge-quantizer, same block, same data.

    .venv/bin/python scripts/measure_peers.py --json out/compression-blocks.json

One Conformer encoder block is taken in isolation and fed the activations that reach it in
the fp32 model (captured with a forward pre-hook on `example_features`); every method's block
output (residual path included) is compared with the fp32 torch block on held-out inputs:

* edgekit: `compress()` on the block (scope `linear` = the 8 Linears the peers quantize too,
  `all` = also the pointwise/depthwise Conv1d); the per-Linear output SNR medians come from
  `edgekit.compress.report`.
* onnxruntime: the fp32 block exported to ONNX, quantized by onnxruntime's own
  `MatMulNBitsQuantizer` / `quantize_dynamic`, run in an InferenceSession.
* ai-edge-quantizer: each Linear as a one-op FULLY_CONNECTED .tflite, quantized by the tool,
  its dequantized weights read back by running LiteRT on an identity input, the block then
  evaluated in torch with those weights. Settings the tool leaves unquantized are emulated
  (symmetric per-channel RTN) and labelled so.

`--whole-model` adds the full-sequence Conformer forward (ONNX MatMulNBits vs edgekit).
The models are untrained (seeded random init).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from edgekit import models  # noqa: E402
from edgekit._io import atomic_write_json  # noqa: E402
from edgekit.bench.kernels.ort_common import IR_VERSION  # noqa: E402
from edgekit.compress import compress, report  # noqa: E402
from edgekit.models.common import example_features  # noqa: E402
from measure_compression import SETTINGS  # noqa: E402

BLOCK_SETTINGS = ["int8", "int4 uniform (g64)", "int4 uniform (per channel)",
                  "int4 Lloyd-Max (g64)", "3-bit Lloyd-Max (g64)", "2-bit Lloyd-Max (g64)",
                  "mixed", "int4 uniform (g64) + gptq", "int4 Lloyd-Max (g64) + gptq",
                  "3-bit Lloyd-Max (g64) + gptq", "2-bit Lloyd-Max (g64) + gptq", "mixed + gptq"]


class BlockFn(nn.Module):
    """A ConformerBlock as a function of (x, attention bias) -> block output (for hooks/export)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x, bias):
        return self.block(x, bias)[0]


def snr(refs, tests) -> float:
    """SNR in dB of `tests` against `refs` (lists of arrays), energies summed over all items."""
    sig = sum(float((np.asarray(r, np.float64) ** 2).sum()) for r in refs)
    err = sum(float(((np.asarray(r, np.float64) - np.asarray(t, np.float64)) ** 2).sum())
              for r, t in zip(refs, tests))
    return float("inf") if err == 0 else 10.0 * np.log10(sig / err)


def block_inputs(model, idx: int, feats: list) -> list[tuple]:
    """The (x, bias) that encoder block `idx` receives in the fp32 model, one per batch."""
    got = []
    hook = model.encoder.layers[idx].register_forward_pre_hook(
        lambda mod, args: got.append((args[0].detach().clone(), args[1].detach().clone())))
    try:
        with torch.no_grad():
            for f in feats:
                model(f)
    finally:
        hook.remove()
    return got


def block_recipe(setting: str, scope: str, in_block: bool = True):
    """The recipe `setting` gives a block's layers inside the whole model, limited to `scope`.

    In a block, `mixed`'s @first/@last rule is dropped: inside the model those are the
    subsampling conv and the CTC head, never a block layer (`in_block=False` keeps it, for
    the whole model). Scope `linear` leaves the Conv1d layers float, as the peers do.
    """
    rec = SETTINGS[setting]
    if isinstance(rec, str):
        rec = yaml.safe_load((ROOT / "recipes" / f"{rec}.yaml").read_text())
    rec = copy.deepcopy(rec)
    if in_block:
        rec["rules"] = [r for r in rec["rules"] if r.get("match") != ["@first", "@last"]]
    if scope == "linear":
        rec["rules"].insert(0, {"type": "conv1d", "skip": True})
    return rec


def edgekit_rows(fn, calib, held, ref_out, settings, scope):
    """One row per edgekit setting: block SNR, per-Linear median SNR, bits per Linear weight."""
    rows = []
    for setting in settings:
        t0 = time.perf_counter()
        small = compress(fn, block_recipe(setting, scope), calib=calib)
        with torch.no_grad():
            out = [small(*b) for b in held]
        rep = report(small, fn, held)
        lin = [r for r in rep["layers"] if r["type"] == "Linear"]
        m = rep["model"]
        rows.append({"method": f"edgekit {setting}", "scope": scope, "tool": "edgekit",
                     "block_snr_db": snr(ref_out, out),
                     "linear_out_snr_median_db": statistics.median(
                         r["output_snr_db"] for r in lin),
                     "linear_bits_per_weight": 32 * sum(r["nbytes"] for r in lin)
                     / sum(r["fp32_bytes"] for r in lin),
                     "packed_bytes": m["packed_bytes"], "seconds": time.perf_counter() - t0})
    return rows


def _export_onnx(module, args, path, names, dynamic):
    """Legacy exporter (opset 20, the newest it emits), then onnx's converter to opset 21."""
    import onnx
    from onnx import version_converter
    with warnings.catch_warnings():   # the legacy exporter's deprecation/tracer chatter
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=False, opset_version=20,
                          input_names=names, output_names=["y"], dynamic_axes=dynamic)
    mp = version_converter.convert_version(onnx.load(path), 21)
    mp.ir_version = min(mp.ir_version, IR_VERSION)  # onnxruntime 1.31 rejects onnx 1.23's IR
    onnx.save(mp, path)
    return mp


ORT_VARIANTS = [  # (label, MatMulNBitsQuantizer kwargs); the first is the tool's defaults
    ("ORT MatMulNBits 4-bit b128 asym (defaults)",
     dict(bits=4, block_size=128, is_symmetric=False)),
    ("ORT MatMulNBits 4-bit b128 sym", dict(bits=4, block_size=128, is_symmetric=True)),
    ("ORT MatMulNBits 4-bit b32 asym", dict(bits=4, block_size=32, is_symmetric=False)),
    ("ORT MatMulNBits 4-bit b32 sym", dict(bits=4, block_size=32, is_symmetric=True)),
    ("ORT MatMulNBits 4-bit b32 asym, accuracy_level 4",
     dict(bits=4, block_size=32, is_symmetric=False, accuracy_level=4)),
    ("ORT MatMulNBits 2-bit b32 asym", dict(bits=2, block_size=32, is_symmetric=False)),
    ("ORT MatMulNBits 8-bit b32 asym", dict(bits=8, block_size=32, is_symmetric=False)),
    ("ORT MatMulNBits 4-bit HQQ b128", dict(hqq_block=128)),
    ("ORT MatMulNBits 4-bit HQQ b32", dict(hqq_block=32)),
]


def _nbits_bits_per_weight(qm, nodes) -> float:
    """Stored bits per weight of MatMulNBits nodes: packed B + scales + zero points."""
    from onnx import numpy_helper
    inits = {t.name: numpy_helper.to_array(t).nbytes for t in qm.graph.initializer}
    attrs = [{a.name: a.i for a in n.attribute} for n in nodes]
    weights = sum(a["K"] * a["N"] for a in attrs)
    return 8 * sum(inits.get(i, 0) for n in nodes for i in n.input[1:4]) / weights


def ort_rows(mp, feeds, ref_out, threads, variants=ORT_VARIANTS, dynamic_int8=True):
    """Quantize the fp32 ONNX model `mp` with onnxruntime's tools and run each in ORT."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads

    logging.disable(logging.INFO)   # quantize_dynamic logs INFO lines on the root logger
    try:
        return _ort_rows(mp, feeds, ref_out, so, variants, dynamic_int8)
    finally:
        logging.disable(logging.NOTSET)


def _ort_rows(mp, feeds, ref_out, so, variants, dynamic_int8):
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import (HQQWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    def run(model_bytes):
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        return [sess.run(None, f)[0] for f in feeds]

    rows = [{"method": "ORT fp32 (no quantization)", "tool": "onnxruntime",
             "block_snr_db": snr(ref_out, run(mp.SerializeToString()))}]
    for label, kw in variants:
        try:
            kw = dict(kw)
            if "hqq_block" in kw:   # half-quadratic fit of scale/zero point, data-free
                kw["algo_config"] = HQQWeightOnlyQuantConfig(block_size=kw.pop("hqq_block"))
            q = MatMulNBitsQuantizer(copy.deepcopy(mp), **kw)
            q.process()
            qm = q.model.model
            nodes = [n for n in qm.graph.node if n.op_type == "MatMulNBits"]
            acc = {a.name: a.i for n in nodes for a in n.attribute}.get("accuracy_level", 0)
            rows.append({"method": label, "tool": "onnxruntime", "matmulnbits_nodes": len(nodes),
                         "accuracy_level": acc, "onnx_bytes": qm.ByteSize(),
                         "linear_bits_per_weight": _nbits_bits_per_weight(qm, nodes),
                         "block_snr_db": snr(ref_out, run(qm.SerializeToString()))})
        except Exception as exc:   # a variant this ORT build rejects is reported, not fatal
            rows.append({"method": label, "tool": "onnxruntime", "block_snr_db": None,
                         "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    if dynamic_int8:
        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d) / "f.onnx", Path(d) / "q.onnx"
            onnx.save(mp, src)
            for per_channel in (False, True):
                quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"],
                                 weight_type=QuantType.QInt8, per_channel=per_channel)
                rows.append({"method": "ORT quantize_dynamic int8 MatMul"
                             + (" per-channel" if per_channel else " per-tensor"),
                             "tool": "onnxruntime",
                             "block_snr_db": snr(ref_out, run(dst.read_bytes()))})
    return rows


def linear_out_snr_median(test_fn, ref_fn, held) -> float:
    """Median over Linears of each layer's output SNR, the float layer fed the same input."""
    acc, hooks = {}, []
    for name, mod in test_fn.named_modules():
        if isinstance(mod, nn.Linear):
            ref = ref_fn.get_submodule(name)

            def hook(m, args, out, ref=ref, name=name):
                acc.setdefault(name, ([], []))
                acc[name][0].append(ref(*args).numpy())
                acc[name][1].append(out.numpy())
            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for b in held:
                test_fn(*b)
    finally:
        for h in hooks:
            h.remove()
    return statistics.median(snr(r, t) for r, t in acc.values())


def _fc_tflite(w: np.ndarray) -> bytes:
    """A one-op FULLY_CONNECTED .tflite y = x wᵀ (no bias, x (K, K) float32), no TF needed."""
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.tools import flatbuffer_utils

    n, k = w.shape
    bufs = [s.BufferT() for _ in range(4)]
    bufs[2].data = np.frombuffer(np.ascontiguousarray(w, "<f4").tobytes(), np.uint8)

    def tensor(name, shape, buf):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), np.array(shape, np.int32), \
            s.TensorType.FLOAT32, buf
        return t

    g = s.SubGraphT()
    g.name = b"main"
    g.tensors = [tensor("x", [k, k], 1), tensor("w", [n, k], 2), tensor("y", [k, n], 3)]
    g.inputs, g.outputs = np.array([0], np.int32), np.array([2], np.int32)
    op = s.OperatorT()
    op.opcodeIndex = 0
    op.inputs, op.outputs = np.array([0, 1, -1], np.int32), np.array([2], np.int32)
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    g.operators = [op]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    m = s.ModelT()
    m.version, m.buffers, m.subgraphs, m.operatorCodes = 3, bufs, [g], [code]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def aeq_weight(w: np.ndarray, bits: int, granularity: str) -> np.ndarray | None:
    """W as ai-edge-quantizer's weight-only recipe stores it, dequantized by LiteRT itself.

    Running the quantized FC on the identity gives y = I·Ŵᵀ exactly (one product per output,
    no bias), so no byte decoding of ours sits between the tool and the number. Returns None
    when the tool left the weight float (it does so silently for unsupported settings).
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager

    rm = recipe_manager.RecipeManager()
    rm.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              num_bits=bits, granularity=qtyping.QuantGranularity[granularity])
    q = quantizer.Quantizer(_fc_tflite(w))
    q.load_quantization_recipe(rm.get_quantization_recipe())
    logging.disable(logging.INFO)   # it prints a size summary and logs INFO per call
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = bytes(q.quantize().quantized_model)
    finally:
        logging.disable(logging.NOTSET)
    it = Interpreter(model_content=quantized)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.eye(w.shape[1], dtype=np.float32))
    it.invoke()
    wq = it.get_tensor(it.get_output_details()[0]["index"]).T.copy()
    return None if np.array_equal(wq, w) else wq


def rtn_symmetric(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-channel round-to-nearest: scale max|w| / (2^(b-1) - 1), codes clipped to
    [-2^(b-1), 2^(b-1) - 1] — ai-edge-quantizer's documented weight-only scheme (and identical
    to its int4 channelwise output on these weights, checked in `aeq_rows`)."""
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(1, keepdims=True) / qmax
    scale[scale == 0] = 1.0
    return (np.clip(np.round(w / scale), -qmax - 1, qmax) * scale).astype(np.float32)


AEQ_VARIANTS = [  # (bits, granularity)
    (4, "CHANNELWISE"), (4, "BLOCKWISE_32"), (2, "CHANNELWISE"), (8, "CHANNELWISE")]


def aeq_rows(fn, held, ref_out, variants=AEQ_VARIANTS):
    """ai-edge-quantizer weight-only on every Linear of the block; emulated where it declines."""
    lin = [(n, m) for n, m in fn.named_modules() if isinstance(m, nn.Linear)]
    rows = []
    for bits, gran in variants:
        test = copy.deepcopy(fn)
        tool_used, emul_diff = True, 0.0
        for name, mod in lin:
            w = mod.weight.detach().numpy()
            wq = aeq_weight(w, bits, gran)
            if wq is None:
                tool_used = False
                break
            if gran == "CHANNELWISE":
                emul_diff = max(emul_diff, float(np.abs(wq - rtn_symmetric(w, bits)).max()))
            test.get_submodule(name).weight.data = torch.from_numpy(wq)
        label = f"ai-edge-quantizer weight-only int{bits} {gran.lower()}"
        if not tool_used:
            if gran != "CHANNELWISE":
                rows.append({"method": label, "tool": "ai-edge-quantizer", "block_snr_db": None,
                             "error": "the tool left the weights float (setting unsupported)"})
                continue
            test = copy.deepcopy(fn)
            for name, mod in lin:
                w = mod.weight.detach().numpy()
                test.get_submodule(name).weight.data = torch.from_numpy(rtn_symmetric(w, bits))
            label = (f"EMULATED ai-edge-quantizer scheme int{bits} (symmetric per-channel RTN;"
                     f" the tool left int{bits} float)")
        with torch.no_grad():
            out = [test(*b).numpy() for b in held]
        # int4/int8 codes + one float32 scale per output channel, as the .tflite stores them
        nw = sum(m.weight.numel() for _, m in lin)
        bpw = (bits * nw + 32 * sum(m.weight.shape[0] for _, m in lin)) / nw
        rows.append({"method": label, "tool": "ai-edge-quantizer", "emulated": not tool_used,
                     "linear_bits_per_weight": bpw,
                     "max_abs_diff_vs_emulation": emul_diff if tool_used else None,
                     "block_snr_db": snr(ref_out, out),
                     "linear_out_snr_median_db": linear_out_snr_median(test, fn, held)})
    return rows


class CTCForward(nn.Module):
    """The full-sequence Conformer forward (features -> CTC logits) as an export root."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats):
        return self.model(feats)


def whole_model_rows(model, calib, held, settings, threads, peers):
    """Whole-model CTC-logit SNR: edgekit (Linears only, like the peers) and ORT MatMulNBits."""
    ref_out = [model(*b).detach().numpy() for b in held]
    fn = CTCForward(model).eval()
    rows = []
    for setting in settings:
        small = compress(fn, block_recipe(setting, "linear", in_block=False), calib=calib)
        with torch.no_grad():
            out = [small(*b).numpy() for b in held]
        rows.append({"method": f"edgekit {setting}", "scope": "linear", "tool": "edgekit",
                     "model_snr_db": snr(ref_out, out)})
    if peers:
        with tempfile.TemporaryDirectory() as d:
            mp = _export_onnx(fn, held[0], str(Path(d) / "m.onnx"), ["feats"], None)
        feeds = [{"feats": b[0].numpy()} for b in held]
        for r in ort_rows(mp, feeds, ref_out, threads):
            r["model_snr_db"] = r.pop("block_snr_db")
            rows.append(r)
    return rows


def _fmt(v) -> str:
    return "  —  " if v is None else f"{v:6.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--blocks", default="0,3", help="comma-separated encoder block indices")
    ap.add_argument("--settings", default=None, help="comma-separated subset of edgekit settings")
    ap.add_argument("--scopes", default="linear,all", help="edgekit layer scopes: linear, all")
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--calib-seconds", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each held-out batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-peers", action="store_true", help="edgekit rows only")
    ap.add_argument("--whole-model", default="",
                    help="comma-separated edgekit settings for the whole-model comparison "
                         "(empty: skip it)")
    ap.add_argument("--json", default="out/compression-blocks.json")
    args = ap.parse_args(argv)
    settings = (BLOCK_SETTINGS if not args.settings
                else [s.strip() for s in args.settings.split(",")])
    whole = [s.strip() for s in args.whole_model.split(",") if s.strip()]
    for s in settings + whole:
        if s not in SETTINGS:
            ap.error(f"unknown setting {s!r}; known: {', '.join(BLOCK_SETTINGS)}")
    scopes = [s.strip() for s in args.scopes.split(",")]
    if not set(scopes) <= {"linear", "all"}:
        ap.error(f"--scopes takes linear and/or all, got {args.scopes!r}")
    if args.calib_batches < 1 or not args.calib_seconds > 0 or not args.seconds > 0:
        ap.error("--calib-batches must be >= 1 and --calib-seconds/--seconds > 0")
    if not args.no_peers:
        # onnx_ir: onnxruntime's MatMulNBits quantizer imports it without depending on it
        missing = [m for m in ("onnxruntime", "onnx_ir", "ai_edge_quantizer")
                   if importlib.util.find_spec(m) is None]
        if missing:
            ap.error(f"peer tools missing ({', '.join(missing)}): "
                     "pip install -r requirements-dev.txt, or pass --no-peers")
    torch.set_num_threads(args.threads)
    try:
        model = models.build("conformer", args.size, seed=0).eval()
    except ValueError as exc:
        ap.error(f"--size: {exc}")
    try:
        blocks = [int(b) for b in args.blocks.split(",")]
    except ValueError:
        ap.error(f"--blocks must be comma-separated integers, got {args.blocks!r}")
    if not all(0 <= b < len(model.encoder.layers) for b in blocks):
        ap.error(f"--blocks: the {args.size} Conformer has blocks "
                 f"0..{len(model.encoder.layers) - 1}")
    calib_f = [example_features(2, args.calib_seconds, seed=s) for s in range(args.calib_batches)]
    held_f = [example_features(2, args.seconds, seed=s) for s in (100, 101)]
    results = []
    for idx in blocks:
        fn = BlockFn(model.encoder.layers[idx]).eval()
        calib, held = block_inputs(model, idx, calib_f), block_inputs(model, idx, held_f)
        with torch.no_grad():
            ref_out = [fn(*b).numpy() for b in held]
        rows = [r for scope in scopes
                for r in edgekit_rows(fn, calib, held, ref_out, settings, scope)]
        if not args.no_peers:
            with tempfile.TemporaryDirectory() as d:
                mp = _export_onnx(fn, held[0], str(Path(d) / "b.onnx"), ["x", "bias"],
                                  {"x": {0: "b", 1: "t"}, "bias": {0: "t", 1: "tk"},
                                   "y": {0: "b", 1: "t"}})
            feeds = [{"x": x.numpy(), "bias": b.numpy()} for x, b in held]
            rows += ort_rows(mp, feeds, ref_out, args.threads)
            rows += aeq_rows(fn, held, ref_out)
        for r in rows:
            r["block"] = f"encoder.layers.{idx}"
            print(f"block {idx} {r['method'][:70]:70s} {r.get('scope', ''):6s} "
                  f"SNR {_fmt(r['block_snr_db'])} dB  linear median "
                  f"{_fmt(r.get('linear_out_snr_median_db'))} dB  "
                  f"b/w {_fmt(r.get('linear_bits_per_weight'))} {r.get('error', '')}", flush=True)
        results += rows
    whole_rows = []
    if whole:
        calib_m = [(f,) for f in calib_f]
        held_m = [(f,) for f in held_f]
        whole_rows = whole_model_rows(model, calib_m, held_m, whole, args.threads,
                                      not args.no_peers)
        for r in whole_rows:
            print(f"model   {r['method'][:70]:70s} {r.get('scope', ''):6s} "
                  f"SNR {_fmt(r['model_snr_db'])} dB {r.get('error', '')}", flush=True)
    atomic_write_json(args.json, {
        "model": f"conformer-{args.size}", "untrained": True,
        "calibration": f"block inputs from example_features seeds 0..{args.calib_batches - 1}, "
                       f"batch 2, {args.calib_seconds} s",
        "evaluation": "block inputs from example_features seeds 100, 101, batch 2, "
                      f"{args.seconds} s",
        "blocks": results, "whole_model": whole_rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
