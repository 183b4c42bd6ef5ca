"""Metrics against hand-computed values, decoding paths, runners and `edgekit eval`."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekit import models
from edgekit.cli.main import cli
from edgekit.eval import evaluate, metrics
from edgekit.eval.asr import transcribe
from edgekit.eval.runners import TorchRunner, open_runner

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


def test_wer_and_cer_by_hand():
    refs = ["one two three", "stop"]
    hyps = ["one too three", ""]
    assert metrics.wer(refs, hyps) == pytest.approx(2 / 4)  # one substitution, one deletion
    # "one two three" vs "one too three": 1 substitution of 13 chars; "stop": 4 deletions
    assert metrics.cer(refs, hyps) == pytest.approx(5 / 17)
    assert metrics.wer(["a b"], ["a b"]) == 0.0
    with pytest.raises(ValueError):
        metrics.wer(["a"], [])
    with pytest.raises(ValueError):
        metrics.wer([""], ["a"])


def test_snr_and_si_snr():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000)
    noise = rng.standard_normal(16000)
    noise *= np.sqrt(np.sum(x**2) / np.sum(noise**2)) / 10  # exactly 20 dB
    assert metrics.snr(x, x + noise) == pytest.approx(20.0, abs=1e-9)
    assert metrics.snr(x, x) == math.inf
    assert metrics.si_snr(x, 3.0 * x) > 200  # scale does not matter (rounding only)
    assert metrics.si_snr(x, 0.5 * (x + noise)) == pytest.approx(20.0, abs=0.2)
    with pytest.raises(ValueError):
        metrics.snr(x, x[:10])


def test_stoi_and_pesq_order_clean_above_noisy():
    t = np.arange(32000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    noisy = x + 0.2 * np.random.default_rng(1).standard_normal(len(x))
    assert metrics.stoi(x, x) > 0.99 > metrics.stoi(x, noisy)
    assert metrics.pesq_wb(x, x) > 4.0 > metrics.pesq_wb(x, noisy)


def test_entropy_and_huffman():
    syms = [0] * 8 + [1] * 4 + [2] * 2 + [3] * 2  # dyadic: Huffman reaches the entropy
    assert metrics.entropy_bits(syms) == pytest.approx(1.75)
    lengths = metrics.huffman_lengths(syms)
    assert lengths == {0: 1, 1: 2, 2: 3, 3: 3}
    assert metrics.huffman_bits(syms, alphabet=4) == 28 + 20
    assert sum(2.0 ** -n for n in lengths.values()) == 1.0  # a complete prefix code
    assert metrics.huffman_lengths([5, 5]) == {5: 1}


@torch.no_grad()
def test_ctc_streaming_decode_equals_full():
    model = models.build("conformer", seed=0, pretrained=False)
    feats = models.example_features(1, 1.1, seed=2)[0]
    assert transcribe(model, feats) == transcribe(model, feats, streaming=True)
    runner = TorchRunner(model)
    full = model(torch.cat([feats, feats.new_zeros(128 - 110, 80)])[None])
    assert np.allclose(runner.stream(feats[None].numpy()), full.numpy(), atol=1e-5)


@torch.no_grad()
def test_rnnt_streaming_decode_equals_full():
    model = models.build("rnnt", seed=0, pretrained=False)
    feats = models.example_features(1, 0.9, seed=3)[0]  # 90 frames = 3 chunks of 30
    assert transcribe(model, feats) == transcribe(model, feats, streaming=True)


def test_open_runner_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        open_runner(tmp_path / "m.ekm")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="not available yet"):
        open_runner(tmp_path / "m.onnx")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown artifact"):
        open_runner(tmp_path / "m.bin")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing")
    from edgekit.data import synth

    root = tmp_path_factory.mktemp("corpus")
    synth.synthesize(synth.plan_small(2, seed=0), root)
    return root


def test_eval_cli_asr_json(corpus, tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["eval", "conformer", "--data", str(corpus), "--json", str(out)])
    assert res.exit_code == 0, res.output
    acc = json.loads(out.read_text())["accuracy"]
    assert acc["task"] == "asr" and acc["split"] == "test" and acc["utterances"] == 2
    assert 0 <= acc["cer"] and 0 <= acc["wer"] and acc["model"]["source"] == "zoo"
    res = CliRunner().invoke(cli, ["eval", "rnnt", "--data", str(corpus), "--streaming",
                                   "--split", "dev"])
    assert res.exit_code == 0 and "greedy, streaming" in res.output


def test_eval_checkpoint_and_recipe(corpus, tmp_path):
    from edgekit.train.loop import save_checkpoint

    model = models.build("conmer", seed=4, pretrained=False, chunk_frames=16)
    save_checkpoint(tmp_path / "c.pt", model, {"model": "conmer", "size": "tiny",
                                                "config": vars(model.cfg)})
    r = evaluate(str(tmp_path / "c.pt"), corpus, streaming=True)
    assert r["accuracy"]["model"]["source"] == "checkpoint"
    direct = [transcribe(model, f, streaming=True) for f in _feats(corpus)]
    assert [e["hyp"] for e in r["examples"]] == direct
    q = evaluate("conformer", corpus, recipe="int8", limit=1)
    assert q["accuracy"]["model"]["recipe"] == "int8" and q["accuracy"]["utterances"] == 1


def _feats(root):
    from edgekit.data.dataset import SpeechDataset

    ds = SpeechDataset(root, "test")
    return [ds[i]["feats"] for i in range(len(ds))]


def test_eval_codec(corpus):
    acc = evaluate("nwc", corpus, limit=1)["accuracy"]
    assert acc["task"] == "codec" and acc["utterances"] == 1
    for key in ("snr", "si_snr", "stoi", "pesq_wb", "bitrate_entropy_bps", "bitrate_huffman_bps"):
        assert math.isfinite(acc[key]) or math.isnan(acc[key])
    assert 0 < acc["bitrate_entropy_bps"] <= acc["bitrate_raw_bps"]
    assert acc["bitrate_raw_bps"] == pytest.approx(5 * 256 * 16000 / 480)


def test_eval_cli_user_errors(corpus, tmp_path):
    run = CliRunner().invoke
    res = run(cli, ["eval", "whisper", "--data", str(corpus)])
    assert res.exit_code == 2 and "neither a zoo model" in res.output
    res = run(cli, ["eval", "conformer", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "test.jsonl not found" in res.output
    res = run(cli, ["eval", "conformer", "--data", str(corpus), "--recipe", "nope"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    res = run(cli, ["eval", "conformer", "--data", str(corpus), "--limit", "0"])
    assert res.exit_code == 2


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    """Ten fresh test-split utterances (unseen voices, texts drawn anew)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing")
    from edgekit.data import synth

    root = tmp_path_factory.mktemp("unseen")
    synth.synthesize([u for u in synth.plan_small(10, seed=1) if u.split == "test"], root)
    return root


@pytest.mark.parametrize("name", ["conformer", "rnnt"])
def test_shipped_checkpoint_recognises_speech(unseen, name):
    info = models.pretrained_info(name)
    if info is None:
        pytest.skip(f"no trained {name} checkpoint ships")
    assert info["test"]["greedy"]["wer"] < 0.5  # what the sidecar claims is useful...
    acc = evaluate(name, unseen)["accuracy"]  # ...and holds on fresh audio (random: CER ~1)
    assert acc["model"]["weights"] == "trained" and acc["utterances"] == 10
    assert acc["cer"] < 0.45 and acc["wer"] < 0.6, acc
