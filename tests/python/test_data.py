"""Synthetic corpus, vocabulary, log-mel front end, dataset and `edgekit data synth`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.data import features, synth, vocab
from edgekit.data.dataset import SpeechDataset, collate, read_manifest

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


def test_vocab_round_trip_and_blank():
    text = "Turn ON the lights, it's 7!"
    ids = vocab.encode(text)
    assert 0 not in ids  # blank is never a target
    assert vocab.decode(ids) == "turn on the lights it's"
    assert vocab.decode([0, 0] + ids + [63]) == vocab.decode(ids)  # blank and unused ids drop
    vocab.check_head(64)
    with pytest.raises(ValueError, match="smaller"):
        vocab.check_head(10)


def test_plan_is_deterministic_and_splits_by_speaker():
    a, b = synth.plan(0.1, seed=3), synth.plan(0.1, seed=3)
    assert a == b and len(a) == 240
    assert synth.plan(0.1, seed=4) != a
    by_split = {s: {u.speaker for u in a if u.split == s} for s in synth.SPLITS}
    assert all(by_split.values())
    assert not (by_split["train"] & by_split["test"]) and not (by_split["dev"] & by_split["test"])
    assert all(set(u.text) <= set(vocab.CHARS) and u.text for u in a)
    # a longer corpus with the same seed starts with the same utterances
    assert synth.plan(0.2, seed=3)[:240] == a


@pytest.mark.parametrize("hours,seed", [(0, 0), (-1, 0), (1000, 0), (1, -1), (1, 1.5)])
def test_plan_rejects_bad_settings(hours, seed):
    with pytest.raises(ValueError):
        synth.plan(hours, seed)


@needs_espeak
def test_rendering_is_deterministic():
    for utt in synth.plan_small(1, seed=0):
        x, y = synth.render(utt), synth.render(utt)
        assert x.dtype == np.float32 and len(x) > 0.3 * synth.SAMPLE_RATE
        assert np.array_equal(x, y)
        assert 0.2 < np.abs(x).max() <= 0.9


@needs_espeak
def test_synthesize_resumes_and_refuses_other_settings(tmp_path):
    corpus = synth.plan_small(1, seed=1)
    counts = synth.synthesize(corpus, tmp_path, {"seed": 1})
    assert counts == {"train": 1, "dev": 1, "test": 1}
    rows = read_manifest(tmp_path, "test")
    wav = tmp_path / rows[0]["audio"]
    first = wav.read_bytes()
    wav.write_bytes(first[:30])  # an interrupted write: resumed, not trusted
    keep = tmp_path / read_manifest(tmp_path, "train")[0]["audio"]
    mtime = keep.stat().st_mtime_ns
    synth.synthesize(corpus, tmp_path, {"seed": 1})
    assert wav.read_bytes() == first
    assert keep.stat().st_mtime_ns == mtime  # finished files are not redone
    with pytest.raises(ValueError, match="new dir"):
        synth.synthesize(corpus, tmp_path, {"seed": 2})


def test_missing_espeak_is_a_clear_cli_error(monkeypatch, tmp_path):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    res = CliRunner().invoke(cli, ["data", "synth", "-o", str(tmp_path / "c"), "--hours", "0.01"])
    assert res.exit_code == 2
    assert "espeak-ng not found" in res.output and "Traceback" not in res.output


def test_failing_espeak_is_a_one_line_error(monkeypatch, tmp_path):
    fake = tmp_path / "espeak-ng"
    fake.write_text("#!/bin/sh\necho 'Error: voice not found' >&2\necho 'second line' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(synth.shutil, "which", lambda name: str(fake))
    res = CliRunner().invoke(cli, ["data", "synth", "-o", str(tmp_path / "c"), "--hours", "0.002"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "espeak-ng failed (exit 1)" in res.output
    assert "Error: voice not found second line" in res.output  # its stderr, on one line
    assert len(res.output.strip().splitlines()) == 1

    def hang(*args, **kwargs):
        raise synth.subprocess.TimeoutExpired(args[0], 60)

    monkeypatch.setattr(synth.subprocess, "run", hang)
    with pytest.raises(ValueError, match="did not finish in 60 s"):
        synth.render(synth.plan_small(1)[0])


def test_corrupt_corpus_json_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(synth.shutil, "which", lambda name: "/bin/true")
    (tmp_path / "corpus.json").write_text("{not json")
    with pytest.raises(ValueError, match="corpus.json is unreadable or not JSON"):
        synth.synthesize(synth.plan_small(1), tmp_path)


def test_cli_rejects_bad_hours(tmp_path):
    res = CliRunner().invoke(cli, ["data", "synth", "-o", str(tmp_path), "--hours", "-1"])
    assert res.exit_code == 2 and "hours" in res.output


@needs_espeak
def test_cli_synth_writes_manifests(tmp_path):
    res = CliRunner().invoke(cli, ["data", "synth", "-o", str(tmp_path), "--hours", "0.002"])
    assert res.exit_code == 0, res.output
    total = sum(len(read_manifest(tmp_path, s)) if (tmp_path / f"{s}.jsonl").read_text() else 0
                for s in synth.SPLITS)
    assert total == 5
    assert json.loads((tmp_path / "corpus.json").read_text())["seed"] == 0


def test_log_mel_shape_and_band_of_a_tone():
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * torch.pi * 1000 * t)
    f = features.log_mel(tone)
    assert f.shape == (features.num_frames(16000), 80) == (101, 80)
    peak = int(f[50].argmax())
    fb = features.mel_matrix()
    centre_hz = float(fb[:, peak].argmax()) * 16000 / features.N_FFT
    assert abs(centre_hz - 1000) < 80
    assert torch.allclose(features.log_mel(tone[None].repeat(2, 1))[1], f)
    with pytest.raises(ValueError):
        features.log_mel(torch.zeros(2, 2, 2))


def test_front_end_is_causal_up_to_its_window():
    # frame t depends on samples < 160 t + 200 only, so appending audio never changes it
    x = torch.randn(8000)
    a, b = features.log_mel(x[:4000]), features.log_mel(x)
    n = (4000 - 200) // 160 + 1
    assert torch.allclose(a[:n], b[:n], atol=1e-5)


def _write_corpus(root, rows_by_split):
    for split, rows in rows_by_split.items():
        lines = []
        for i, (text, seconds) in enumerate(rows):
            rel = f"wav/{split}/{i}.wav"
            x = 0.1 * np.sin(np.arange(int(seconds * 16000)) * 0.05)
            (root / "wav" / split).mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(synth.wav_bytes(x))
            lines.append(json.dumps({"id": f"{split}{i}", "audio": rel, "text": text}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_dataset_and_collate(tmp_path):
    _write_corpus(tmp_path, {"train": [("one two", 0.5), ("stop", 0.3)]})
    ds = SpeechDataset(tmp_path, "train")
    assert len(ds) == 2 and ds[1]["text"] == "stop"
    assert ds[0]["feats"].shape == (features.num_frames(8000), 80)
    batch = collate([ds[0], ds[1]])
    assert batch["feats"].shape == (2, 51, 80)
    assert batch["feat_lens"].tolist() == [51, 31]
    assert batch["token_lens"].tolist() == [7, 4]
    assert batch["tokens"][1, 4:].eq(0).all()


def test_manifest_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_manifest(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split"):
        read_manifest(tmp_path, "valid")
    (tmp_path / "dev.jsonl").write_text('{"audio": "x.wav"}\n')
    with pytest.raises(ValueError, match="dev.jsonl:1"):
        read_manifest(tmp_path, "dev")
    (tmp_path / "test.jsonl").write_text('{"audio": "x.wav", "text": "hi"}\n')
    with pytest.raises(ValueError, match="not a readable WAV"):
        SpeechDataset(tmp_path, "test")[0]
