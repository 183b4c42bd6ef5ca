"""Whole-model output SNR of the zoo's small ASR models under compression settings.

    .venv/bin/python scripts/measure_compression.py --json out/compression.json

Calibration and evaluation inputs are random log-mel-like features (`example_features`,
disjoint seeds); the models are untrained (seeded random init), so these numbers say how
faithfully a setting reproduces the float model, not what it does to WER.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit import models  # noqa: E402
from edgekit._io import atomic_write_json  # noqa: E402
from edgekit.compress import compress, report  # noqa: E402
from edgekit.models.common import example_features  # noqa: E402

G64 = {"granularity": "group", "group_size": 64}
LM = {"quantizer": "lloyd_max", "codebook": "channel", **G64}


def _all(**settings) -> dict:
    return {"rules": [{"match": "*", **settings}]}


SETTINGS = {
    "int8": "int8",
    "int4 uniform (g64)": "int4",
    "int4 uniform (per channel)": _all(bits=4),
    "int4 Lloyd-Max (g64)": _all(bits=4, **LM),
    "3-bit Lloyd-Max (g64)": _all(bits=3, **LM),
    "2-bit Lloyd-Max (g64)": _all(bits=2, **LM),
    "mixed": "mixed",
    "int4 uniform (g64) + gptq": _all(bits=4, rounding="gptq", **G64),
    "int4 Lloyd-Max (g64) + gptq": _all(bits=4, rounding="gptq", **LM),
    "3-bit Lloyd-Max (g64) + gptq": _all(bits=3, rounding="gptq", **LM),
    "2-bit Lloyd-Max (g64) + gptq": _all(bits=2, rounding="gptq", **LM),
    "mixed + gptq": None,
    "50% magnitude, int8": _all(bits=8, sparsity={"kind": "magnitude", "amount": 0.5}),
    "50% Wanda, int8": _all(bits=8, sparsity={"kind": "wanda", "amount": 0.5}),
    "int8 + int8 activations (mse)": _all(bits=8, activations="mse"),
    "int8 + int8 activations (minmax)": _all(bits=8, activations="minmax"),
    "2:4 magnitude, int8": None,
    "2:4 Wanda, int8": None,
}
_mixed = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/mixed.yaml").read_text())
_mixed["defaults"]["rounding"] = "gptq"
SETTINGS["mixed + gptq"] = _mixed
for _score, _key in (("magnitude", "2:4 magnitude, int8"), ("wanda", "2:4 Wanda, int8")):
    # Depthwise convs (K = kernel size, e.g. 15) cannot hold 2:4 groups; they stay dense.
    SETTINGS[_key] = {"rules": [
        {"match": "*.dw", "optional": True, "bits": 8},
        {"match": "*", "bits": 8, "sparsity": {"kind": "nm", "n": 2, "m": 4, "score": _score}}]}


def _inputs(name: str, model, seeds, batch: int, seconds: float) -> list[tuple]:
    out = []
    for s in seeds:
        feats = example_features(batch, seconds, seed=s)
        if name == "rnnt":
            g = torch.Generator().manual_seed(s + 1)
            tokens = torch.randint(1, model.cfg.vocab, (batch, max(1, int(10 * seconds))),
                                   generator=g)
            out.append((feats, tokens))
        else:
            out.append((feats,))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="conformer,rnnt")
    ap.add_argument("--size", default="small")
    ap.add_argument("--settings", default=None, help="comma-separated subset of setting names")
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each eval batch")
    ap.add_argument("--calib-seconds", type=float, default=None,
                    help="length of each calibration batch (default: --seconds)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="out/compression.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = list(SETTINGS) if not args.settings else [s.strip() for s in args.settings.split(",")]
    results = []
    for name in args.models.split(","):
        model = models.build(name, args.size, seed=0)
        calib = _inputs(name, model, range(args.calib_batches), 2,
                        args.calib_seconds or args.seconds)
        held_out = _inputs(name, model, range(100, 102), 2, args.seconds)
        for setting in wanted:
            t0 = time.perf_counter()
            small = compress(model, SETTINGS[setting], calib=calib)
            t1 = time.perf_counter()
            rep = report(small, model, held_out)
            m = rep["model"]
            row = {"model": f"{name}-{args.size}", "setting": setting,
                   "output_snr_db": m["output_snr_db"], "total_bytes": m["total_bytes"],
                   "fp32_bytes": m["fp32_bytes"], "compression": m["compression"],
                   "min_layer_out_snr_db": min(r["output_snr_db"] for r in rep["layers"]),
                   "compress_s": t1 - t0, "report": rep}
            results.append(row)
            print(f"{row['model']:16s} {setting:28s} SNR {m['output_snr_db']:6.2f} dB  "
                  f"{m['total_bytes'] / 1e6:7.2f} MB ({m['compression']:.2f}x)  "
                  f"worst layer {row['min_layer_out_snr_db']:6.2f} dB  "
                  f"compress {t1 - t0:5.1f} s", flush=True)
    calib_desc = (f"example_features seeds 0..{args.calib_batches - 1}, batch 2, "
                  f"{args.calib_seconds or args.seconds} s")
    atomic_write_json(args.json, {"calibration": calib_desc,
                                  "evaluation": f"example_features seeds 100, 101, batch 2, "
                                                f"{args.seconds} s",
                                  "untrained": True, "results": results})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
