"""Losses against brute force, the training loop's hooks, checkpoints, shipped weights, CLI."""

from __future__ import annotations

import itertools
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from edgekit import models
from edgekit.cli.main import cli
from edgekit.models.common import BLANK
from edgekit.models.weights import loader as weights
from edgekit.train import asr
from edgekit.train.codec import CodecLoss, mel_rmse
from edgekit.train.loop import TrainConfig, load_checkpoint, lr_at, save_checkpoint, train


def rnnt_loss_brute_force(joint: torch.Tensor, tokens: list[int]) -> float:
    """Reference transducer loss of one item (T, U+1, V): log-sum over every alignment."""
    logp = torch.log_softmax(joint.double(), dim=-1)
    t_max, u_max = logp.shape[0], len(tokens)
    assert logp.shape[1] == u_max + 1
    total = []

    def walk(t: int, u: int, acc: float) -> None:
        if t == t_max - 1 and u == u_max:
            total.append(acc + float(logp[t, u, BLANK]))
            return
        if u < u_max:  # emit the next label, stay on this frame
            walk(t, u + 1, acc + float(logp[t, u, tokens[u]]))
        if t < t_max - 1:  # blank: move to the next frame
            walk(t + 1, u, acc + float(logp[t, u, BLANK]))

    walk(0, 0, 0.0)
    m = max(total)
    return -(m + math.log(sum(math.exp(v - m) for v in total)))


@pytest.mark.parametrize("t,u,v", [(1, 0, 3), (1, 2, 4), (3, 2, 5), (4, 3, 4), (5, 2, 3)])
def test_rnnt_loss_equals_brute_force(t, u, v):
    g = torch.Generator().manual_seed(t * 10 + u)
    joint = torch.randn(t, u + 1, v, generator=g) * 2
    tokens = torch.randint(1, v, (u,), generator=g)
    ours = asr.rnnt_loss(joint[None], tokens[None], torch.tensor([t]), torch.tensor([u]))
    assert ours.item() == pytest.approx(rnnt_loss_brute_force(joint, tokens.tolist()),
                                        abs=1e-5)


def test_rnnt_loss_batched_with_padding_and_gradient():
    g = torch.Generator().manual_seed(0)
    joint = torch.randn(2, 4, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.tensor([[1, 2, 3], [4, 1, 0]])
    enc_lens, tok_lens = torch.tensor([4, 2]), torch.tensor([3, 2])
    loss = asr.rnnt_loss(joint, tokens, enc_lens, tok_lens)
    ref = (rnnt_loss_brute_force(joint[0].detach(), [1, 2, 3])
           + rnnt_loss_brute_force(joint[1, :2, :3].detach(), [4, 1])) / 2
    assert loss.item() == pytest.approx(ref, abs=1e-9)
    assert torch.autograd.gradcheck(
        lambda j: asr.rnnt_loss(j, tokens, enc_lens, tok_lens), (joint,), eps=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="enc_lens"):
        asr.rnnt_loss(joint, tokens, torch.tensor([5, 1]), tok_lens)


def _ctc_brute_force(logits, target):
    logp = torch.log_softmax(logits.double(), -1)
    total = []
    for path in itertools.product(range(logits.shape[1]), repeat=logits.shape[0]):
        collapsed = [k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k)]
        if collapsed == target:
            total.append(sum(float(logp[i, k]) for i, k in enumerate(path)))
    m = max(total)
    return -(m + math.log(sum(math.exp(x - m) for x in total)))


@pytest.mark.parametrize("target", [[1], [1, 2], [2, 2], [1, 2, 1]])
def test_ctc_loss_equals_brute_force(target):
    g = torch.Generator().manual_seed(len(target))
    logits = torch.randn(5, 3, generator=g)
    ours = asr.ctc_loss(logits[None], torch.tensor([5]), torch.tensor([target]),
                        torch.tensor([len(target)]))
    assert ours.item() == pytest.approx(_ctc_brute_force(logits, target), abs=1e-4)


def test_ctc_out_lens_match_the_conformer():
    m = models.build("conformer", pretrained=False)
    for t in (1, 4, 5, 33):
        assert m(torch.zeros(1, t, 80)).shape[1] == int(asr.ctc_out_lens(torch.tensor([t])))


def test_spec_augment_is_seeded_and_masks():
    x = torch.ones(2, 100, 80)
    a = asr.spec_augment(x, torch.Generator().manual_seed(1))
    b = asr.spec_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and (a == 0).any() and x.eq(1).all()


def test_loop_hooks_regularizer_and_schedule():
    torch.manual_seed(0)
    w_true = torch.tensor([[2.0, -3.0]])
    xs = [torch.randn(32, 2) for _ in range(4)]
    model = torch.nn.Linear(2, 1, bias=False)
    seen, ended = [], []

    class Probe:
        def on_step(self, m, step):
            assert not torch.is_grad_enabled()
            seen.append(step)

        def on_end(self, m):
            ended.append(True)

    def loss_fn(m, x):
        return (m(x) - x @ w_true.T).pow(2).mean(), {}

    cfg = TrainConfig(steps=150, lr=0.1, warmup=10, log_every=50, weight_decay=0.0)
    res = train(model, lambda: xs, loss_fn, cfg, callbacks=[Probe()],
                regularizer=lambda m: 1e-3 * m.weight.abs().sum())
    assert seen == list(range(1, 151)) and ended == [True]
    assert torch.allclose(model.weight, w_true, atol=0.05)
    assert [r["step"] for r in res.history] == [50, 100, 150] and "reg" in res.history[-1]
    assert lr_at(5, cfg) == pytest.approx(0.05) and lr_at(150, cfg) == pytest.approx(0.005)
    with pytest.raises(ValueError):
        TrainConfig(steps=0)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    m = models.build("conformer", seed=1, pretrained=False)
    save_checkpoint(tmp_path / "c.pt", m, {"model": "conformer", "size": "tiny"}, step=7)
    ck = load_checkpoint(tmp_path / "c.pt")
    assert ck["step"] == 7 and ck["meta"]["model"] == "conformer"
    ref = models.build("conformer", seed=1, pretrained=False).state_dict()
    assert ck["state_dict"].keys() == ref.keys()
    for key, tensor in ref.items():
        assert torch.equal(ck["state_dict"][key], tensor), key
    other = models.build("conformer", seed=2, pretrained=False)
    assert not torch.equal(other.state_dict()["ctc_head.weight"], ref["ctc_head.weight"])
    other.load_state_dict(ck["state_dict"])
    assert all(torch.equal(other.state_dict()[k], t) for k, t in ref.items())
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only") as bad:
        load_checkpoint(tmp_path / "bad.pt")
    assert "\n" not in str(bad.value) and "Weights only load failed" not in str(bad.value)
    torch.save({"evil": object()}, tmp_path / "pickle.pt")  # arbitrary objects are refused
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_shipped_weights_load_and_are_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "HERE", tmp_path)
    src = models.build("conformer", seed=5, pretrained=False)
    weights.ship(src, "conformer", "tiny", {"metrics": {"test_cer": 0.1}})
    loaded = models.build("conformer", seed=0)
    assert torch.equal(loaded.ctc_head.weight, src.ctc_head.weight)
    assert models.pretrained_info("conformer")["metrics"] == {"test_cer": 0.1}
    fresh = models.build("conformer", seed=0, pretrained=False)
    assert not torch.equal(fresh.ctc_head.weight, src.ctc_head.weight)
    # a shape-changing override keeps random weights unless the checkpoint is required
    assert models.build("conformer", conv_kernel=7).encoder.layers[0] is not None
    with pytest.raises(ValueError, match="does not fit"):
        models.build("conformer", conv_kernel=7, pretrained=True)
    with pytest.raises(ValueError, match="no trained checkpoint"):
        models.build("conmer", pretrained=True)
    (tmp_path / "conformer-tiny.pt").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="SHA-256"):
        models.build("conformer")


def test_codec_loss_terms_and_tau_controller():
    model = models.build("nwc", pretrained=False).train()
    loss_fn = CodecLoss(model, target_entropy=3.0, epoch_steps=2)
    wave = 0.1 * torch.randn(1, 960, generator=torch.Generator().manual_seed(0))
    loss, logs = loss_fn(model, wave)
    assert loss.requires_grad and logs["quant"] >= 1.0 - 1e-6  # sum sqrt(a) >= 1, = 1 iff hard
    assert 0 <= logs["entropy"] <= 5
    assert mel_rmse(wave, wave).item() == 0.0
    loss_fn._seen = [4.0]
    loss_fn.on_step(model, 2)
    assert loss_fn.tau == pytest.approx(0.015)
    loss_fn._seen = [1.0]
    loss_fn.on_step(model, 4)
    loss_fn._seen = [1.0]
    loss_fn.on_step(model, 6)
    assert loss_fn.tau == 0.0


def test_train_cli_errors(tmp_path):
    run = CliRunner().invoke
    res = run(cli, ["train", "whisper", "--data", str(tmp_path), "--steps", "1"])
    assert res.exit_code == 2 and "implemented for" in res.output
    res = run(cli, ["train", "conformer", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "exactly one of --steps and --epochs" in res.output
    res = run(cli, ["train", "conformer", "--data", str(tmp_path), "--steps", "1"])
    assert res.exit_code == 2 and "train.jsonl not found" in res.output
    res = run(cli, ["train", "conformer", "--data", str(tmp_path), "--steps", "1",
                    "--recipe", "int4"])
    assert res.exit_code == 2 and "--qat" in res.output
    for name in ("nwc", "conformer"):
        res = run(cli, ["train", name, "--data", str(tmp_path), "--epochs", "1",
                        "--batch-size", "0"])
        assert res.exit_code == 2 and "--batch-size must be >= 1" in res.output
    # an unwritable output is found before any data is read or step is taken
    res = run(cli, ["train", "conformer", "--data", str(tmp_path), "--steps", "1",
                    "-o", "/dev/null/x.pt"])
    assert res.exit_code == 2 and "/dev/null is not a directory" in res.output
    res = run(cli, ["train", "conformer", "--data", str(tmp_path), "--steps", "1",
                    "-o", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.output


def test_check_output_path(tmp_path):
    from edgekit.train.loop import check_output_path

    check_output_path(tmp_path / "new" / "deeper" / "c.pt")  # parents are created on write
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        check_output_path(tmp_path / "file" / "c.pt")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as root")
        with pytest.raises(ValueError, match="not writable"):
            check_output_path(locked / "c.pt")
    finally:
        locked.chmod(0o700)


def test_fit_rejects_zero_batch_size(tmp_path):
    from edgekit.train.run import fit, fit_codec

    with pytest.raises(ValueError, match="batch_size"):
        fit_codec("nwc", tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        fit("conformer", "tiny", tmp_path, batch_size=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing")
    from edgekit.data import synth

    root = tmp_path_factory.mktemp("corpus")
    synth.synthesize(synth.plan_small(2, seed=0), root)
    return root


@pytest.mark.parametrize("name", ["conformer", "rnnt"])
def test_train_cli_runs_and_checkpoints(tmp_path, corpus, name):
    out = tmp_path / "m.pt"
    res = CliRunner().invoke(cli, ["train", name, "--data", str(corpus), "--steps", "3",
                                   "--batch-size", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(out)
    assert ck["step"] == 3 and ck["meta"]["model"] == name
    assert set(ck["meta"]["metrics"]) == {"dev_cer", "dev_wer"}


@pytest.mark.slow
def test_qat_flag_trains_and_evaluates_or_says_not_available(tmp_path, corpus):
    import importlib.util

    from edgekit.eval import evaluate

    out = tmp_path / "q.pt"
    res = CliRunner().invoke(cli, ["train", "conformer", "--data", str(corpus), "--steps", "2",
                                   "--batch-size", "2", "--qat", "gq", "-o", str(out)])
    if importlib.util.find_spec("edgekit.compress.qat") is None:
        assert res.exit_code == 2 and "not available yet" in res.output
        return
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out)["meta"]["qat"] == "gq"
    # the quantized layers are rebuilt from the checkpoint, not loaded into a float model
    acc = evaluate(str(out), corpus, limit=1)["accuracy"]
    assert acc["model"]["qat"] == "gq" and acc["utterances"] == 1


@pytest.mark.slow
def test_codec_training_runs_and_checkpoints(tmp_path, corpus):
    from edgekit.train.run import fit_codec

    out = tmp_path / "nwc.pt"
    res = fit_codec("nwc", corpus, out, TrainConfig(steps=2, warmup=1), size="small",
                    batch_size=2, segment=960, dev_limit=1)
    assert res.step == 2 and set(res.metrics) == {"dev_snr", "dev_pesq_wb",
                                                  "dev_bitrate_entropy_bps"}
    ck = load_checkpoint(out)
    assert ck["meta"]["model"] == "nwc" and "tau" in ck["meta"]
    assert ck["meta"]["size"] == "small"  # --size is passed through, not replaced by tiny


def test_ship_refuses_a_codec_checkpoint(tmp_path, capsys):
    from edgekit.train import ship

    save_checkpoint(tmp_path / "nwc.pt", models.build("nwc", pretrained=False),
                    {"model": "nwc", "size": "tiny"})
    assert ship.main([str(tmp_path / "nwc.pt"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ship: error:") and "holds nwc" in err and "\n" not in err
