#!/usr/bin/env python
"""Issue 7 item 6: PTQ vs QAT vs pruning on a trained zoo ASR checkpoint, synthetic test split.

    nice python scripts/results_qat.py --ckpt conformer-tiny.pt --data DIR -o results.json \
        [--steps 150] [--limit 200] [--rows fp32,int8,...]
    python scripts/results_qat.py --table results.json [more.json]   # markdown for docs/results.md

Every row is one model scored with greedy full-utterance decoding (`edgekit.eval.asr`) on the
first `--limit` test utterances: WER, CER and the stored weight bytes (packed matrices as
docs/format.md §1.8 counts them + 4 bytes per remaining float parameter). PTQ rows compress
the checkpoint (`edgekit.compress.compress`, 8 train utterances for calibration); training
rows fine-tune it for `--steps` AdamW steps (1 thread, batch 8, LR 3e-4 with a short warm-up,
no weight decay) with the method's hooks; "fp32 fine-tuned" gets the same steps without any,
so the QAT rows can be told apart from the effect of extra training. Rows are appended to the
JSON as they finish (atomic writes), and rows already present are skipped: rerun to resume.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit._io import atomic_write_bytes, atomic_write_json  # noqa: E402

EDGE = ["@first", "@last"]


def rule_edges(**kw):
    return {"match": EDGE, "bits": 8, "quantizer": "uniform", **kw}


def rec(name, *rules):
    return {"name": name, "rules": list(rules)}


def sub8(bits, quantizer, name):
    return rec(name, rule_edges(), {"match": "*", "bits": bits, "quantizer": quantizer})


# Mixed precision with 1-2-bit layers: the first block's FFNs at 1 bit (binary), every other
# FFN at 2 bits, the rest at 4, the edges at 8 (first/last) — FFNs hold most of the weights.
def mixed(q4, q2, q1):
    return rec("mixed-1-2bit", rule_edges(),
               {"match": "encoder.layers.0.ffn*", "bits": 1, "quantizer": q1},
               {"match": "*ffn*", "bits": 2, "quantizer": q2},
               {"match": "*", "bits": 4, "quantizer": q4})


# RNN-T: the prediction network (LSTM + its joiner projection) at 1 bit, the rest at 4
def rnnt_mixed(q4, q1):
    return rec("rnnt-pred-1bit", rule_edges(),
               {"match": ["predictor.*", "joiner.pred_proj"], "bits": 1, "quantizer": q1},
               {"match": "*", "bits": 4, "quantizer": q4})


def pruned(sp, name):
    """Linear layers (not the head) at int8 with `sp` sparsity; every other layer int8 dense."""
    return rec(name, {"match": "@last", "bits": 8},
               {"type": "linear", "bits": 8, **({"sparsity": sp} if sp else {})},
               {"match": "*", "bits": 8})


# the layers a training-time pruner prunes: the same Linear layers as `pruned`
PRUNE_TARGETS = rec("linear-int8", {"match": "@last", "skip": True}, {"type": "linear", "bits": 8})


HALF_MAG = {"kind": "magnitude", "amount": 0.5}
ROWS = {
    # name: (kind, recipe, options)
    "fp32": ("fp32", None, {}),
    "fp32 fine-tuned": ("train", None, {}),
    "int8 PTQ": ("ptq", "int8", {}),
    "5-bit PTQ uniform": ("ptq", sub8(5, "uniform", "u5"), {}),
    "5-bit PTQ Lloyd-Max": ("ptq", sub8(5, "lloyd_max", "lm5"), {}),
    "4-bit PTQ uniform": ("ptq", sub8(4, "uniform", "u4"), {}),
    "4-bit PTQ Lloyd-Max": ("ptq", sub8(4, "lloyd_max", "lm4"), {}),
    "5-bit PTQ mu-law (GQ init)": ("ptq", sub8(5, "mulaw", "mu5"), {}),
    # PTQ of the fp32 fine-tuned model: the fair baseline for QAT, which also trains
    "fine-tuned fp32 (the run behind the PTQ rows)": ("ftptq", None, {}),
    "fine-tuned fp32 + 5-bit PTQ Lloyd-Max": ("ftptq", sub8(5, "lloyd_max", "lm5"), {}),
    "fine-tuned fp32 + 4-bit PTQ Lloyd-Max": ("ftptq", sub8(4, "lloyd_max", "lm4"), {}),
    "fine-tuned fp32 + mixed 1/2/4-bit PTQ": (
        "ftptq", mixed("lloyd_max", "lloyd_max", "binary"), {}),
    "5-bit S8BQAT": ("qat", sub8(5, "lloyd_max", "lm5"), {"method": "s8bqat"}),
    "4-bit S8BQAT": ("qat", sub8(4, "lloyd_max", "lm4"), {"method": "s8bqat"}),
    "5-bit GQ": ("qat", sub8(5, "mulaw", "mu5"), {"method": "gq"}),
    "4-bit GQ": ("qat", sub8(4, "mulaw", "mu4"), {"method": "gq"}),
    "mixed 1/2/4-bit PTQ Lloyd-Max": ("ptq", mixed("lloyd_max", "lloyd_max", "binary"), {}),
    "mixed 1/2/4-bit GQ": ("qat", mixed("mulaw", "mulaw", "binary"), {"method": "gq"}),
    "RNN-T fine-tuned fp32 + 4-bit with 1-bit predictor PTQ": (
        "ftptq", rnnt_mixed("lloyd_max", "binary"), {}),
    "RNN-T 4-bit with 1-bit predictor GQ": ("qat", rnnt_mixed("mulaw", "binary"), {"method": "gq"}),
    "int8 + 50% magnitude (one-shot)": ("ptq", pruned(HALF_MAG, "mag50"), {}),
    "int8 + 50% Wanda (one-shot)": ("ptq", pruned({"kind": "wanda", "amount": 0.5}, "w50"), {}),
    "int8 + 2:4 Wanda (one-shot)": (
        "ptq", pruned({"kind": "nm", "n": 2, "m": 4, "score": "wanda"}, "nm24"), {}),
    "int8 + 50% gradual magnitude": ("prune", PRUNE_TARGETS, {"kind": "magnitude"}),
    "int8 + 50% CSP": ("prune", PRUNE_TARGETS, {"kind": "csp"}),
    # ablations: CSP without the L1 shrinkage of the survivors (support only); S8BQAT with a
    # 10x stronger regulariser and no periodic snap (only the final one)
    "int8 + 50% CSP (no shrink)": ("prune", PRUNE_TARGETS, {"kind": "csp", "shrink": False}),
    "4-bit S8BQAT (lam 1e-3; final snap only)": (
        "qat", sub8(4, "lloyd_max", "lm4"),
        {"method": "s8bqat", "knobs": {"lam": 1e-3, "warmup": 50, "period": 0}}),
    "4-bit S8BQAT (final snap only)": (
        "qat", sub8(4, "lloyd_max", "lm4"),
        {"method": "s8bqat", "knobs": {"lam": 1e-4, "warmup": 50, "period": 0}}),
    "4-bit S8BQAT (lam 0; snaps only)": (
        "qat", sub8(4, "lloyd_max", "lm4"),
        {"method": "s8bqat", "knobs": {"lam": 0.0, "warmup": 50, "period": 50}}),
    # the train loop clips the *total* gradient norm at 5; MRACos' gradient (λ·π/Δ per weight,
    # on every weight) inflates that norm and so shrinks the task gradient: the same pair
    # without clipping
    "fp32 fine-tuned (no grad clip)": ("train", None, {"grad_clip": 0.0}),
    "4-bit S8BQAT (no grad clip)": ("qat", sub8(4, "lloyd_max", "lm4"),
                                    {"method": "s8bqat", "grad_clip": 0.0}),
}
# S8BQAT knobs for a short fine-tune: METHODS' P = 500 exceeds the whole run, so the hard
# compressor runs every 50 steps; λ = 1e-4 (the default) on Σ r(w), ramped over 50 steps.
S8BQAT_KNOBS = {"lam": 1e-4, "warmup": 50, "period": 50}
GQ_KNOBS = {"scale": "channel"}


def stored_bytes(model) -> int:
    """Packed matrices (format §1.8) + 4 bytes for every parameter/buffer left in float."""
    from edgekit.compress.layers import QuantLayer

    total, packed = 0, set()
    for name, m in model.named_modules():
        if isinstance(m, QuantLayer):
            total += sum(qm.nbytes() for qm in m.matrices.values())
            packed |= {f"{name}.base.{p}" for p in m.matrices}
    for name, p in model.named_parameters():
        if name not in packed:
            total += 4 * p.numel()
    return total


def calibration(data, model) -> list:
    """8 train utterances as model inputs (RNN-T's forward also takes the tokens)."""
    from edgekit.data.dataset import SpeechDataset

    ds = SpeechDataset(data, "train", limit=8)
    if hasattr(model, "joiner"):
        return [(ds[i]["feats"][None], ds[i]["tokens"][None]) for i in range(len(ds))]
    return [ds[i]["feats"][None] for i in range(len(ds))]


model_ft_state = [None]   # the last plain fp32 fine-tune, for the "ftptq" rows


def build_row(kind, recipe, opts, args, base_state, load):
    from edgekit.compress import compress
    from edgekit.data.dataset import SpeechDataset
    from edgekit.train import asr
    from edgekit.train.loop import TrainConfig, train
    from edgekit.train.run import bucket_batches

    model = load()
    model.load_state_dict(base_state)
    info = {}
    if kind == "ptq":
        calib = calibration(args.data, model)
        return compress(model, recipe, calib=calib).eval(), info
    if kind == "fp32":
        return model.eval(), info
    if kind == "ftptq":
        cache = Path(f"{args.out}.fp32-ft{args.steps}.pt")
        if not cache.exists():
            build_row("train", None, {}, args, base_state, load)
            buf = io.BytesIO()
            torch.save(model_ft_state[0], buf)
            atomic_write_bytes(cache, buf.getvalue())
        model.load_state_dict(torch.load(cache, weights_only=True))
        if recipe is None:
            return model.eval(), {"fine_tuned_steps": args.steps}
        calib = calibration(args.data, model)
        return compress(model, recipe, calib=calib).eval(), {"fine_tuned_steps": args.steps}
    reg, cbs = None, []
    if kind == "qat":
        from edgekit.compress.qat import prepare

        knobs = opts.get("knobs") or (S8BQAT_KNOBS if opts["method"] == "s8bqat" else GQ_KNOBS)
        model, reg, cbs = prepare(opts["method"], model, recipe, steps=args.steps, **knobs)
        info["knobs"] = knobs
    elif kind == "prune":
        from edgekit.compress.prune.csp import CSP
        from edgekit.compress.prune.gradual import GradualMagnitude

        cls = CSP if opts["kind"] == "csp" else GradualMagnitude
        end = max(2, 3 * args.steps // 4)
        extra = {"shrink": opts["shrink"]} if "shrink" in opts else {}
        cbs = [cls(model, 0.5, begin=0, end=end, every=max(1, end // 6), recipe=recipe, **extra)]
        info["schedule"] = {"end": end, "every": max(1, end // 6)}
    train_set = SpeechDataset(args.data, "train")
    cfg = TrainConfig(steps=args.steps, lr=args.lr, warmup=min(20, args.steps),
                      weight_decay=0.0, log_every=25, threads=1,
                      grad_clip=opts.get("grad_clip", 5.0))
    history = []
    torch.manual_seed(args.seed)   # dropout: every training row starts from the same RNG state
    result = train(model, bucket_batches(train_set, 8, args.seed), asr.make_loss(model, seed=0),
                   cfg, regularizer=reg, callbacks=cbs, log=history.append)
    info.update(train_seconds=round(result.seconds, 1), history=history[-3:])
    if kind == "train":
        model_ft_state[0] = {k: v.clone() for k, v in model.state_dict().items()}
    if kind == "prune":
        info["measured_sparsity"] = round(cbs[0].sparsity(), 4)
        # the layers the pruner did not pack (convolutions, the head): int8, as in `pruned`
        model = compress(model, rec("rest-int8", {"match": "*", "bits": 8}))
    return model.eval(), info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt")
    ap.add_argument("--data")
    ap.add_argument("-o", "--out", default="results_qat.json")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    ap.add_argument("--table", metavar="JSON", nargs="+",
                    help="print the markdown table of results files (rows merged)")
    args = ap.parse_args(argv)
    if args.table:
        docs = [json.loads(Path(p).read_text()) for p in args.table]
        merged = {k: v for d in docs for k, v in d["rows"].items()}
        print(table({**docs[0], "rows": {k: merged[k] for k in ROWS if k in merged}}))
        return 0
    if not args.ckpt or not args.data:
        ap.error("--ckpt and --data are required")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; valid: {', '.join(ROWS)}")
    torch.set_num_threads(1)
    from edgekit.data.dataset import SpeechDataset
    from edgekit.eval import load_target
    from edgekit.eval.asr import evaluate_asr
    from edgekit.train.loop import load_checkpoint

    ck = load_checkpoint(args.ckpt)
    name, base, _ = load_target(args.ckpt)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {
        "checkpoint": {"path": args.ckpt, "model": name, "size": ck["meta"].get("size"),
                       "step": ck.get("step"), "dev": ck["meta"].get("metrics")},
        "data": args.data, "split": "test", "limit": args.limit, "steps": args.steps,
        "lr": args.lr, "rows": {}}
    test = SpeechDataset(args.data, "test")
    for row in rows:
        if row in doc["rows"]:
            continue
        kind, recipe, opts = ROWS[row]
        t0 = time.monotonic()
        model, info = build_row(kind, recipe, opts, args, base_state,
                                lambda: load_target(args.ckpt)[1])
        with torch.no_grad():
            r = evaluate_asr(model, test, limit=args.limit)
        doc["rows"][row] = {"kind": kind, "recipe": recipe, "wer": round(r["wer"], 4),
                            "cer": round(r["cer"], 4), "utterances": r["utterances"],
                            "bytes": stored_bytes(model), "seconds": round(time.monotonic() - t0),
                            **info}
        atomic_write_json(out, doc)
        print(json.dumps({"row": row, **{k: doc["rows"][row][k] for k in
                                         ("wer", "cer", "bytes", "seconds")}}), flush=True)
    return 0


def table(doc) -> str:
    """Markdown table of a results document."""
    rows = doc["rows"]
    ref = rows.get("fp32", {}).get("bytes")
    lines = ["| model | WER | CER | stored KiB | fp32 size / size |", "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        ratio = f"{ref / r['bytes']:.1f}x" if ref else "—"
        lines.append(f"| {name} | {r['wer']:.3f} | {r['cer']:.3f} | {r['bytes'] / 1024:.0f} | "
                     f"{ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
