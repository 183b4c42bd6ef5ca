"""compress -> calibrate -> lower -> emit each format -> parity -> export.json.

    from edgekit.export.pipeline import ExportConfig, run_export
    report = run_export(ExportConfig(model="conformer", recipe="int4", formats=("ekm",),
                                     out="out/"))

Every file goes to a temporary directory beside `out` first, which replaces `out` as a whole
only when all formats and the parity check succeeded (no stale file of an earlier export
survives); a failure leaves `out` as it was. Bad input raises `EdgekitError` with one line.
"""

from __future__ import annotations

import copy
import datetime
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch import nn

from edgekit import EdgekitError, __version__
from edgekit._io import atomic_write_json
from edgekit.compress.calibrate import ActObserver
from edgekit.compress.layers import QuantLayer, weight_2d
from edgekit.export import ir, parity
from edgekit.export.lower import lower, module_graphs, zoo_graphs
from edgekit.export.lower.models import example_feeds

FORMATS = ("ekm", "onnx", "tflite")
META_LAYER_KEYS = ("name", "type", "bits", "sparsity", "nm", "bytes")
FILES = {"ekm": "model.ekm", "onnx": "model.onnx", "tflite": "model.tflite"}
# import names each format's emitter and parity runner need (EKM: numpy only)
REQUIRES = {"ekm": (), "onnx": ("onnx", "onnxruntime"), "tflite": ("ai_edge_litert",)}
PIP = {"onnx": "onnx", "onnxruntime": "onnxruntime", "ai_edge_litert": "ai-edge-litert"}


@dataclass
class ExportConfig:
    """What `edgekit export` was asked for (see docs/export.md)."""

    model: str
    out: str
    size: str = "tiny"
    recipe: str | None = None
    bits: int | None = None
    sparsity: float | None = None
    nm: str | None = None
    calib: int = 8
    formats: tuple = ("ekm",)
    input_shape: tuple | None = None
    seed: int = 0
    steps: int = 3
    prefer_runtime: bool = True
    options: dict = field(default_factory=dict)


# -- source model ------------------------------------------------------------------------
def load_source(cfg: ExportConfig):
    """(zoo name or None, fp32 model, graph specs, calibration batches, META source)."""
    from edgekit import models
    if ":" in cfg.model or cfg.model.endswith(".py"):
        model = _load_factory(cfg.model)
        if cfg.input_shape is None:
            raise EdgekitError(f"{cfg.model}: a user module needs --input-shape (e.g. 1,100,80)")
        shape = tuple(cfg.input_shape)
        if len(shape) < 1 or shape[0] != 1 or any(d < 1 for d in shape):
            raise EdgekitError(f"--input-shape must be positive ints with batch 1, got {shape}")
        try:
            specs = module_graphs(model, shape)
        except Exception as exc:
            raise EdgekitError(f"{cfg.model}: forward on input {shape} failed: "
                               f"{_one_line(exc)}") from None
        g = torch.Generator().manual_seed(1000)
        calib = [(torch.randn(shape, generator=g),) for _ in range(cfg.calib)]
        src = {"model": None, "size": None, "seed": cfg.seed, "factory": cfg.model}
        return None, model, specs, calib, src
    if cfg.model.endswith(".pt"):
        return _load_checkpoint(cfg)
    if cfg.model not in models.names():
        raise EdgekitError(f"unknown model {cfg.model!r}; zoo models: {', '.join(models.names())}"
                           f", path/to/checkpoint.pt or path/to/file.py:factory")
    if cfg.input_shape is not None:
        raise EdgekitError("--input-shape is only for a user module (path/to/file.py:factory)")
    try:
        model = models.build(cfg.model, cfg.size, seed=cfg.seed)
    except ValueError as exc:
        raise EdgekitError(str(exc)) from None
    ex = models.info(cfg.model, cfg.size)["example_input"]
    # distinct seeds, none equal to the parity feeds' seed (cfg.seed)
    calib = [ex(batch=1, seconds=1.0, seed=cfg.seed + 1000 + i) for i in range(cfg.calib)]
    src = {"model": cfg.model, "size": cfg.size, "seed": cfg.seed, "factory": None}
    return cfg.model, model, zoo_graphs(cfg.model, model), calib, src


def _load_checkpoint(cfg: ExportConfig):
    """load_source for a `.pt` written by `edgekit train`: the zoo model it names, with its
    weights; a QAT checkpoint's packed layers are rebuilt as they were trained (codes,
    codebook, scales), so run_export skips compress and only calibrates activations."""
    from edgekit import models
    from edgekit.compress.qat import load_quantized
    from edgekit.train.loop import load_checkpoint
    if cfg.input_shape is not None:
        raise EdgekitError("--input-shape is only for a user module (path/to/file.py:factory)")
    try:
        ckpt = load_checkpoint(cfg.model)
    except ValueError as exc:
        raise EdgekitError(_one_line(exc)) from None
    meta, state = ckpt.get("meta") or {}, ckpt["state_dict"]
    name, size = meta.get("model"), meta.get("size", "tiny")
    if name not in models.names():
        raise EdgekitError(f"{cfg.model}: checkpoint does not say which zoo model it holds "
                           "(expected one written by 'edgekit train')")
    if cfg.size not in (size, ExportConfig.size):   # the default cannot tell "not given"
        raise EdgekitError(f"{cfg.model} holds a {name} {size} checkpoint; --size {cfg.size} "
                           "does not apply (leave it out)")
    # the checkpoint's own config (e.g. chunk_frames) wins over the zoo default
    default = vars(models.build(name, size, pretrained=False).cfg)
    saved = meta.get("config") or {}
    over = {k: v for k, v in saved.items() if k in default and k != "attention"
            and default[k] != v and not name.startswith("nwc")}
    try:
        model = models.build(name, size, seed=cfg.seed, pretrained=False, **over)
        if any(".matrices." in k for k in state):
            model = load_quantized(model, state)
        else:
            model.load_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        # load_state_dict's first line only names the class; the next one says what is wrong
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = lines[1] if len(lines) > 1 and lines[0].endswith(":") else _one_line(exc)
        raise EdgekitError(f"{cfg.model}: weights do not fit {name} {size}: "
                           f"{why[:200]}") from None
    model.eval()
    ex = models.info(name, size)["example_input"]
    calib = [ex(batch=1, seconds=1.0, seed=cfg.seed + 1000 + i) for i in range(cfg.calib)]
    src = {"model": name, "size": size, "seed": cfg.seed, "factory": None,
           "checkpoint": str(cfg.model), "step": ckpt.get("step"), "qat": meta.get("qat"),
           "qat_recipe": meta.get("recipe")}
    return name, model, zoo_graphs(name, model), calib, src


def is_quantized(model: nn.Module) -> bool:
    """True when `model` already holds packed (Quant*) layers, e.g. after QAT."""
    return any(isinstance(m, QuantLayer) for m in model.modules())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_factory(spec: str) -> nn.Module:
    path, _, attr = spec.rpartition(":")
    if not path or not attr:
        raise EdgekitError(f"user model must be path/to/file.py:factory, got {spec!r}")
    if not os.path.isfile(path):
        raise EdgekitError(f"no such file: {path}")
    try:
        mspec = importlib.util.spec_from_file_location(f"_edgekit_user_{abs(hash(path))}", path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    except Exception as exc:
        raise EdgekitError(f"cannot import {path}: {_one_line(exc)}") from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise EdgekitError(f"{path} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:
        raise EdgekitError(f"{spec}() failed: {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise EdgekitError(f"{spec}() returned {type(model).__name__}, not a torch nn.Module")
    return model.eval()


# -- recipe ------------------------------------------------------------------------------
def make_recipe(cfg: ExportConfig, model: nn.Module | None = None) -> tuple[dict, str]:
    """The recipe as a dict (for compress) and its YAML text (for META). `--nm` applies to
    the layers of `model` whose input width K is a multiple of M (the packed N:M layout
    needs it); the others keep the recipe's dense rules."""
    from edgekit.compress.recipe import BUILTIN_DIR
    if cfg.recipe is not None and cfg.bits is not None:
        raise EdgekitError("give --recipe or --bits, not both")
    if cfg.sparsity is not None and cfg.nm is not None:
        raise EdgekitError("give --sparsity or --nm, not both")
    if cfg.recipe is not None:
        path = Path(cfg.recipe)
        if not path.is_file():
            builtin = BUILTIN_DIR / f"{cfg.recipe}.yaml"
            if not builtin.is_file():
                raise EdgekitError(f"no such recipe file or built-in recipe: {cfg.recipe}")
            path = builtin
        try:
            text = path.read_text()
            data = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise EdgekitError(f"cannot read recipe {cfg.recipe}: {_one_line(exc)}") from None
        if not isinstance(data, dict):
            raise EdgekitError(f"recipe {cfg.recipe}: not a YAML mapping")
    else:
        bits = 8 if cfg.bits is None else cfg.bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise EdgekitError(f"--bits must be an int in 1..8, got {bits!r}")
        data = {"name": f"int{bits}", "rules": [{"match": "*", "bits": bits,
                                                 "quantizer": "uniform" if bits > 1 else "binary",
                                                 "granularity": "channel"}]}
    sparsity = _sparsity(cfg)
    if sparsity is not None:
        data = dict(data)
        rules = [dict(r) for r in data.get("rules") or [] if isinstance(r, dict)]
        if sparsity["kind"] == "nm":
            rules = _nm_rules(data, rules, model, sparsity) + rules
        else:
            for r in rules:
                r["sparsity"] = sparsity
        data["rules"] = rules
        data["name"] = f"{data.get('name', 'recipe')}+{_sparsity_tag(cfg)}"
    return data, yaml.safe_dump(data, sort_keys=False)


def _nm_rules(data: dict, rules: list[dict], model: nn.Module | None, sparsity: dict) -> list:
    """One rule per layer whose input width K is a multiple of M: the settings the recipe
    gives that layer, plus the N:M sparsity."""
    from dataclasses import asdict

    from edgekit.compress.layers import lstm_weight_names
    from edgekit.compress.recipe import parse_recipe
    if model is None:
        return []
    try:
        plan = parse_recipe({**data, "rules": rules}).resolve(model)
    except ValueError as exc:
        raise EdgekitError(_one_line(exc)) from None
    out = []
    for name, mod, spec in plan:
        ws = lstm_weight_names(mod) if isinstance(mod, nn.LSTM) else ["weight"]
        if any(weight_2d(mod, getattr(mod, w)).shape[1] % sparsity["m"] for w in ws):
            continue
        settings = {k: v for k, v in asdict(spec).items() if v is not None and k != "skip"}
        out.append({"match": [name], **settings, "sparsity": sparsity})
    return out


def _sparsity(cfg: ExportConfig) -> dict | None:
    if cfg.sparsity is not None:
        if not isinstance(cfg.sparsity, (int, float)) or not 0.0 <= cfg.sparsity < 1.0:
            raise EdgekitError(f"--sparsity must be in [0, 1), got {cfg.sparsity!r}")
        return {"kind": "magnitude", "amount": float(cfg.sparsity)}
    if cfg.nm is not None:
        try:
            n, m = (int(v) for v in str(cfg.nm).split(":"))
        except ValueError:
            raise EdgekitError(f"--nm must look like N:M (e.g. 2:4), got {cfg.nm!r}") from None
        if not 1 <= n < m:
            raise EdgekitError(f"--nm needs 1 <= N < M, got {cfg.nm!r}")
        return {"kind": "nm", "n": n, "m": m, "score": "magnitude"}
    return None


def _sparsity_tag(cfg: ExportConfig) -> str:
    return f"sparsity{cfg.sparsity}" if cfg.sparsity is not None else f"nm{cfg.nm}"


# -- calibration ------------------------------------------------------------------------
def calibrate_activations(model: nn.Module, batches, method: str = "minmax",
                          progress: Callable | None = None) -> list[str]:
    """Give every quantized layer without a grid a static int8 input grid observed over
    `batches` (tuples of positional args). Returns the names calibrated here.

    A recipe's own `activations` rule already set its layers' grids: those are kept. All
    layers are observed in the same forwards, on float inputs of the compressed weights.
    """
    todo = {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer) and not m.act_quant}
    obs = {n: ActObserver(method) for n in todo}
    hooks = [m.register_forward_pre_hook(lambda mod, args, o=obs[n]: o.update(args[0]))
             for n, m in todo.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model(*batch)
                if progress:
                    progress()
    finally:
        for h in hooks:
            h.remove()
    done = []
    for n, m in todo.items():
        if obs[n].lo <= obs[n].hi:   # never called: keeps the dynamic grid (reported)
            m.set_activation_range(*obs[n].range(), method)
            done.append(n)
    return done


def _weight_snrs(compressed: nn.Module, fp32: nn.Module) -> dict[str, float]:
    """Weight SNR (dB) of every packed matrix vs the fp32 weights, by tensor name."""
    out = {}
    for name, q in compressed.named_modules():
        if not isinstance(q, QuantLayer):
            continue
        ref = fp32.get_submodule(name)
        if isinstance(ref, QuantLayer):   # a QAT source has no float weights to compare with
            continue
        for p, qm in q.matrices.items():
            out[f"{name}.{p}"] = parity.snr_db(weight_2d(ref, getattr(ref, p)), qm.dequantize())
    return out


# -- emit --------------------------------------------------------------------------------
def check_formats(formats) -> tuple:
    """Validate the --format list and that each emitter module exists."""
    fmts = tuple(dict.fromkeys(f.strip() for f in formats if f.strip()))
    if not fmts:
        raise EdgekitError("--format needs at least one of ekm, onnx, tflite")
    for f in fmts:
        if f not in FORMATS:
            raise EdgekitError(f"unknown format {f!r}; valid: {', '.join(FORMATS)}")
        if importlib.util.find_spec(f"edgekit.export.{f}") is None:
            raise EdgekitError(f"format {f} is not available (edgekit.export.{f} is missing)")
        # checked before compress + lower so that a missing package costs seconds, not minutes
        missing = [m for m in REQUIRES[f] if importlib.util.find_spec(m) is None]
        if missing:
            pkgs = " ".join(PIP[m] for m in missing)
            raise EdgekitError(f"format {f} needs the Python package(s) {', '.join(missing)}: "
                               f"pip install {pkgs}")
    return fmts


def emit(fmt: str, model: ir.Model, path: Path, calib_feeds: dict, options: dict) -> dict:
    """Write one format; returns its report (file bytes etc.)."""
    mod = importlib.import_module(f"edgekit.export.{fmt}")
    try:
        if fmt == "ekm":
            n = mod.write(model, path)
            return {"format": "ekm", "files": {"all": {"path": str(path), "bytes": int(n)}},
                    "file_bytes": int(n)}
        if fmt == "onnx":
            return mod.export(model, path, **options.get("onnx", {}))
        return mod.export(model, path, calib=calib_feeds, **options.get("tflite", {}))
    except EdgekitError:
        raise
    except ValueError as exc:
        raise EdgekitError(f"{fmt} export failed: {_one_line(exc)}") from None


def _runner(fmt: str, report: dict, path: Path, model: ir.Model, graph: str, prefer: bool):
    if fmt == "ekm":
        return parity.ekm_runner(str(path), graph, prefer)
    if fmt == "onnx":
        return parity.OrtRunner(report["files"][graph]["path"], model, graph)
    info = report["graphs"][graph] if "graphs" in report and graph in report["graphs"] else None
    if info is None:
        raise EdgekitError(f"tflite report has no graph {graph}")
    return parity.TfliteRunner(info, model.graphs[graph])


def ekm_size_check(model: ir.Model, file_bytes: int) -> dict:
    """Issue 4 item 6: EKM bytes <= 1.05 * Σ stored packed bytes (§1.8, `PackedWeights.nbytes`)
    + 8 KiB + float constants (each counted with its 64-byte alignment, since every tensor
    starts on a 64-byte boundary)."""
    from edgekit.kernels import packing
    packed = sum(packing.deserialize(bytes(t.data)).nbytes for t in model.tensors.values()
                 if t.dtype == "packed")
    floats = [t for t in model.tensors.values() if t.kind == "const" and t.dtype != "packed"]
    aligned = sum(-(-t.nbytes // 64) * 64 for t in floats)
    limit = int(1.05 * packed + 8192 + aligned)
    return {"file_bytes": file_bytes, "packed_bytes": packed,
            "float_const_bytes": sum(t.nbytes for t in floats),
            "float_const_bytes_aligned": aligned, "limit_bytes": limit,
            "ok": file_bytes <= limit}


# -- the whole run -----------------------------------------------------------------------
def _noop(stage: str, done: int, total: int) -> None:
    pass


def run_export(cfg: ExportConfig, progress: Callable = _noop) -> dict:
    """Run the pipeline; returns the export.json report. `progress(stage, done, total)`."""
    from edgekit.compress import compress
    fmts = check_formats(cfg.formats)
    if not isinstance(cfg.calib, int) or isinstance(cfg.calib, bool) or cfg.calib < 1:
        raise EdgekitError(f"--calib must be a positive int, got {cfg.calib!r}")
    out = Path(cfg.out)
    check_out_dir(out)
    name, fp32, specs, calib, source = load_source(cfg)
    if is_quantized(fp32):
        # QAT already chose every code: compressing again would round a second time
        if any(v is not None for v in (cfg.recipe, cfg.bits, cfg.sparsity, cfg.nm)):
            raise EdgekitError(f"{cfg.model} is already quantized (QAT); --recipe, --bits, "
                               "--sparsity and --nm do not apply")
        recipe = {"name": f"qat-{source.get('qat') or 'packed'}:{source.get('qat_recipe')}"}
        recipe_text = yaml.safe_dump(recipe, sort_keys=False)
        model = copy.deepcopy(fp32)   # activation calibration must not touch the reference
    else:
        recipe, recipe_text = make_recipe(cfg, fp32)
        progress("compress", 0, 1)
        try:
            model = compress(fp32, recipe, calib=calib)
        except ValueError as exc:  # RecipeError is both a ValueError and an EdgekitError
            raise EdgekitError(_one_line(exc)) from None
        progress("compress", 1, 1)
    calibrated = calibrate_activations(
        model, calib, progress=_counter(progress, "calibrate", len(calib)))
    progress("lower", 0, len(specs))
    meta = {"edgekit_version": __version__, "source": source,
            "recipe": {"name": recipe.get("name", "recipe"), "text": recipe_text},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    model_ir = lower(model, specs, meta)
    progress("lower", len(specs), len(specs))
    snrs = _weight_snrs(model, fp32)
    rows = model_ir.meta["layers"]
    for row in rows:
        if row["name"] in snrs:
            row["weight_snr_db"] = parity._r(snrs[row["name"]])
    # META keeps the short form (it is in every file; tiny models feel its size), export.json
    # the full rows
    model_ir.meta["layers"] = [{k: r[k] for k in META_LAYER_KEYS if r.get(k) is not None}
                               for r in rows]
    feeds = example_feeds(name, fp32, specs, cfg.steps, cfg.seed)
    calib_feeds = example_feeds(name, fp32, specs, max(cfg.steps, 4), cfg.seed + 1000)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise EdgekitError(f"cannot create output beside {out}: {exc.strerror or exc}") from None
    try:
        report = _emit_and_check(cfg, fmts, model_ir, model, fp32, specs, feeds, calib_feeds,
                                 tmp, progress)
        report.update(model=cfg.model, size=source.get("size"),
                      recipe=model_ir.meta["recipe"]["name"], calibrated_layers=len(calibrated),
                      calib_batches=cfg.calib, layers=rows,
                      graphs={g.name: _op_counts(g) for g in model_ir.graphs.values()},
                      fp32_param_bytes=4 * sum(p.numel() for p in fp32.parameters()))
        report = _retarget(report, str(tmp), str(out))
        atomic_write_json(tmp / "export.json", report)
        try:
            _replace_dir(tmp, out)
        except OSError as exc:
            raise EdgekitError(f"cannot replace {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _counter(progress: Callable, stage: str, total: int) -> Callable:
    state = {"n": 0}

    def tick():
        state["n"] += 1
        progress(stage, state["n"], total)
    progress(stage, 0, total)
    return tick


def _op_counts(g: ir.Graph) -> dict:
    counts: dict[str, int] = {}
    for op in g.ops:
        counts[op.type] = counts.get(op.type, 0) + 1
    return dict(sorted(counts.items()))


def _emit_and_check(cfg, fmts, model_ir, model, fp32, specs, feeds, calib_feeds, tmp, progress):
    ref_q, ref_f = {}, {}
    for spec in specs:
        ref_q[spec.name] = parity.run_steps(parity.TorchRunner(model, spec), feeds[spec.name])
        ref_f[spec.name] = parity.run_steps(parity.TorchRunner(fp32, spec), feeds[spec.name])
    report: dict = {"formats": {}}
    base = ekm_size_check(model_ir, 0)
    # the model's own size at its bits: what every format is compared with
    theoretical = base["packed_bytes"] + base["float_const_bytes"]
    for i, fmt in enumerate(fmts):
        progress(f"{fmt}", i, len(fmts))
        path = tmp / FILES[fmt]
        rep = emit(fmt, model_ir, path, calib_feeds, cfg.options)
        par, backend = {}, None
        for spec in specs:
            try:
                runner = _runner(fmt, rep, path, model_ir, spec.name, cfg.prefer_runtime)
                backend = getattr(runner, "backend", fmt)
                got = parity.run_steps(runner, feeds[spec.name])
            except ValueError as exc:
                # a file its runtime refuses to load or run (onnxruntime: a fusion it has no
                # kernel for; LiteRT: a graph it rejects) is one line, not a trace
                if isinstance(exc, EdgekitError):
                    raise
                raise EdgekitError(f"{fmt} parity check of graph {spec.name} failed: "
                                   f"{_one_line(exc)}") from None
            par[spec.name] = parity.compare(got, ref_q[spec.name], ref_f[spec.name])
        entry = {"file_bytes": int(rep.get("file_bytes", rep.get("bytes", 0))), "backend": backend,
                 "parity": par, "steps": cfg.steps,
                 "worst_snr_vs_compressed_db": parity._r(parity.worst(par)),
                 "worst_snr_vs_fp32_db": parity._r(parity.worst(par, "snr_vs_fp32_db")),
                 "widened_layers": rep.get("widened_layers", []), "emitter_report": rep}
        entry["theoretical_bytes"] = theoretical
        if fmt == "onnx":   # parity.OrtRunner: no MatMulNBits re-quantization of activations
            entry["ort_accuracy_level"] = parity.ORT_ACCURACY_LEVEL
        if fmt == "ekm":
            entry["size_check"] = ekm_size_check(model_ir, entry["file_bytes"])
        report["formats"][fmt] = entry
        progress(f"{fmt}", i + 1, len(fmts))
    report["reference"] = {g: {o: {"snr_compressed_vs_fp32_db": parity._r(parity.snr_db(
        np.concatenate([x.ravel() for x in ref_f[g][o]]),
        np.concatenate([x.ravel() for x in ref_q[g][o]])))} for o in ref_q[g]} for g in ref_q}
    return report


def _retarget(obj, old: str, new: str):
    """Paths in emitter reports point into the temp dir: point them at the final dir."""
    if isinstance(obj, dict):
        return {k: _retarget(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_retarget(v, old, new) for v in obj]
    if isinstance(obj, str) and obj.startswith(old):
        return new + obj[len(old):]
    return obj


def check_out_dir(out: Path) -> None:
    """`out` is replaced as a whole by the export, so it must be new, empty, or an earlier
    export (has export.json): a typo must not wipe an unrelated directory."""
    if out.is_symlink():   # the swap would replace the link, not what it points to
        raise EdgekitError(f"output {out} is a symbolic link; give the directory itself")
    if out.exists() and not out.is_dir():
        raise EdgekitError(f"output {out} exists and is not a directory")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise EdgekitError(f"output {out} is the current directory or one of its parents; "
                           f"give a directory of its own")
    if out.is_dir() and any(out.iterdir()) and not (out / "export.json").is_file():
        raise EdgekitError(f"output {out} is a non-empty directory without export.json (not an "
                           f"earlier export); give a new or empty directory")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished `tmp` in place of `out`, so no file of an earlier export survives.

    Two renames on one filesystem: the old directory aside, the new one in; if the second
    fails the old one is put back. Between them `out` is briefly absent, never half-written."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, out.stat().st_mode & 0o7777 if out.is_dir() else 0o777 & ~umask)
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rename(out, old)   # replaces the empty placeholder directory
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
