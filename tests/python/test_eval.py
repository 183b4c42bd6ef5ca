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
    # an untrained codec: far from transparent, but every metric inside its defined range
    assert -60 < acc["snr"] < 60 and -60 < acc["si_snr"] < 60
    assert 0 <= acc["stoi"] <= 1
    assert math.isnan(acc["pesq_wb"]) or 1 <= acc["pesq_wb"] <= 4.7
    assert 0 < acc["bitrate_huffman_bps"] and math.isfinite(acc["bitrate_huffman_bps"])
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
    # a bad --json path fails before decoding, as one line
    res = run(cli, ["eval", "conformer", "--data", str(corpus), "--json", "/dev/null/r.json"])
    assert res.exit_code == 2 and "/dev/null is not a directory" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_eval_warns_on_random_weights(corpus):
    res = CliRunner().invoke(cli, ["eval", "conmer", "--data", str(corpus), "--limit", "1"])
    assert res.exit_code == 0, res.output
    assert "warning: no trained conmer tiny checkpoint ships" in res.output


def test_eval_checkpoint_refuses_other_size(corpus, tmp_path):
    from edgekit.train.loop import save_checkpoint

    save_checkpoint(tmp_path / "c.pt", models.build("conmer", pretrained=False),
                    {"model": "conmer", "size": "tiny"})
    with pytest.raises(ValueError, match="--size small does not apply"):
        evaluate(str(tmp_path / "c.pt"), corpus, size="small")


class _FakeRunner:
    """Stands in for an .ekm session: only its META matters to the refusal."""

    def __init__(self, model):
        self.meta = {"source": {"model": model, "size": "tiny"}, "recipe": {"name": "int8"}}
        self.chunk = 32


@pytest.mark.parametrize("model", ["nwc", "nwc-cmrl", None])
def test_artifact_of_unscored_model_is_refused(monkeypatch, tmp_path, model):
    from edgekit.eval import load_target

    monkeypatch.setattr("edgekit.eval.runners.open_runner", lambda path: _FakeRunner(model))
    with pytest.raises(ValueError, match="scores only conformer/conmer/rnnt") as err:
        load_target(str(tmp_path / "m.ekm"))
    assert "\n" not in str(err.value)


def test_artifact_takes_no_recipe_or_size(monkeypatch, tmp_path):
    from edgekit.eval import load_target

    monkeypatch.setattr("edgekit.eval.runners.open_runner", lambda p: _FakeRunner("conformer"))
    name, runner, desc = load_target(str(tmp_path / "m.ekm"))
    assert name == "conformer" and desc["recipe"] == "int8" and desc["source"] == "artifact"
    with pytest.raises(ValueError, match="--recipe does not apply"):
        load_target(str(tmp_path / "m.ekm"), recipe="int4")
    with pytest.raises(ValueError, match="--size does not apply"):
        load_target(str(tmp_path / "m.ekm"), size="tiny")


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


def _export(name: str, out) -> str:
    res = CliRunner().invoke(cli, ["export", name, "--recipe", "int8", "--format", "ekm",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    return str(out / "model.ekm")


@pytest.mark.slow
def test_ekm_artifact_eval_matches_torch_int8_streaming(corpus, tmp_path):
    """The shipped conformer, exported to .ekm, scored by the C++ runtime vs torch int8."""
    from edgekit import runtime
    from edgekit.compress.report import snr_db
    from edgekit.eval import load_target

    if not runtime.available():
        pytest.skip("the C++ runtime (edgekit._C) is not built")
    ekm = _export("conformer", tmp_path / "c")
    art = evaluate(ekm, corpus, limit=2)
    ref = evaluate("conformer", corpus, recipe="int8", streaming=True, limit=2)
    acc = art["accuracy"]
    assert acc["model"] == {"source": "artifact", "path": ekm, "name": "conformer",
                            "size": "tiny", "recipe": "int8"}
    assert acc["utterances"] == 2 and acc["decoding"] == "greedy, streaming"
    # the runtime quantizes activations to int8 as well, so its logits are close to, not
    # equal to, torch's (about 25-30 dB here); greedy transcripts then differ by a letter
    # at most where two tokens are nearly tied
    hyps = [e["hyp"] for e in art["examples"]]
    want = [e["hyp"] for e in ref["examples"]]
    assert metrics.cer(want, hyps) <= 0.2, (hyps, want)
    assert abs(acc["cer"] - ref["accuracy"]["cer"]) <= 0.1
    _, runner, _ = load_target(ekm)
    _, torch_q, _ = load_target("conformer", recipe="int8", data_dir=corpus)
    for feats in _feats(corpus):
        got = runner.stream(feats[None].numpy())
        want_logits = TorchRunner(torch_q).stream(feats[None].numpy())
        assert snr_db(want_logits, got) > 20
        assert (got.argmax(-1) == want_logits.argmax(-1)).mean() >= 0.9
    res = CliRunner().invoke(cli, ["eval", _export("nwc", tmp_path / "nwc"),
                                   "--data", str(corpus)])
    assert res.exit_code == 2 and "holds zoo model 'nwc'" in res.output


@pytest.mark.slow
def test_rnnt_ekm_greedy_decoding_matches_torch_int8_streaming(corpus, tmp_path):
    """RNN-T .ekm: greedy search over its encoder/predictor/joiner graphs in the runtime."""
    from edgekit import runtime

    if not runtime.available():
        pytest.skip("the C++ runtime (edgekit._C) is not built")
    ekm = _export("rnnt", tmp_path / "r")
    art = evaluate(ekm, corpus, limit=2)
    ref = evaluate("rnnt", corpus, recipe="int8", streaming=True, limit=2)
    acc = art["accuracy"]
    assert acc["model"]["name"] == "rnnt" and acc["decoding"] == "greedy, streaming"
    hyps = [e["hyp"] for e in art["examples"]]
    want = [e["hyp"] for e in ref["examples"]]
    assert all(hyps) and metrics.cer(want, hyps) <= 0.2, (hyps, want)
    # the shipped model recognises speech through the artifact too (random weights: CER ~1)
    assert acc["cer"] < 0.5, art["examples"]
