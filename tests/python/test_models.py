"""Model zoo: registry, parameter counts, streaming == full forward, determinism, decoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit import models
from edgekit.models import nwc
from edgekit.models.common import count_params, ctc_greedy_decode, pad_to_multiple

ASR = ["rnnt", "conformer", "conmer"]
# Streaming and full forward run the same ops on the same numbers; the only difference is
# GEMM blocking / summation order, so fp32 agreement must be far tighter than this.
TOL = 1e-5



def _stream_asr(model, feats):
    st, outs = model.init_state(feats.shape[0]), []
    for i in range(0, feats.shape[1], model.chunk_frames):
        out, st = model.step(feats[:, i : i + model.chunk_frames], st)
        outs.append(out)
    return torch.cat(outs, 1)


def _full_asr(model, feats):
    return model.encode(feats) if isinstance(model, models.rnnt.RNNT) else model(feats)


# ---------------------------------------------------------------- registry and errors


def test_names():
    assert models.names() == ["conformer", "conmer", "nwc", "nwc-cmrl", "rnnt"]


@pytest.mark.parametrize("name,size",
                         [("nope", "tiny"), ("rnnt", "big"), (None, "tiny"), ("rnnt", 1)])
def test_unknown_name_or_size_lists_valid_ones(name, size):
    with pytest.raises(ValueError) as exc:
        models.build(name, size)
    listed = "conformer, conmer, nwc, nwc-cmrl, rnnt" if name != "rnnt" else "tiny, small"
    assert listed in str(exc.value)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        models.build("rnnt", "tiny", seed)


def test_bad_inputs_are_value_errors():
    conf = models.build("conformer")
    with pytest.raises(ValueError, match="80"):
        conf(torch.zeros(1, 32, 40))
    with pytest.raises(ValueError, match="exactly 32"):
        conf.step(torch.zeros(1, 16, 80), conf.init_state(1))
    with pytest.raises(ValueError, match="float"):
        conf(torch.zeros(1, 32, 80, dtype=torch.long))
    rn = models.build("rnnt")
    with pytest.raises(ValueError, match="multiple of the frame stack"):
        rn.step(torch.zeros(1, 31, 80), rn.init_state(1))
    with pytest.raises(ValueError, match="token ids"):
        rn(torch.zeros(1, 30, 80), torch.full((1, 2), 10_000))
    codec = models.build("nwc")
    with pytest.raises(ValueError, match="multiple of 480"):
        codec.step(torch.zeros(1, 500), codec.init_state(1))
    with pytest.raises(ValueError, match="batch, samples"):
        codec(torch.zeros(1, 1, 480))


@pytest.mark.parametrize("name,config,match", [
    ("conformer", {"foo": 1}, "unknown option"),
    ("conformer", {"chunk_frames": 30}, "multiple of 4"),
    ("conformer", {"chunk_frames": "32"}, "int >= 1"),
    ("conformer", {"n_heads": 5}, "divisible"),
    ("rnnt", {"chunk_frames": 31}, "multiple of stack"),
    ("nwc", {"chunk_frames": 480}, "valid: none"),
])
def test_bad_config_overrides(name, config, match):
    with pytest.raises(ValueError, match=match):
        models.build(name, "tiny", **config)


# ---------------------------------------------------------------- parameter counts

RANGES = {
    ("rnnt", "tiny"): (100_000, 1_000_000),
    ("rnnt", "small"): (20_000_000, 30_000_000),
    ("conformer", "tiny"): (100_000, 1_000_000),
    ("conformer", "small"): (8_000_000, 12_000_000),
    ("conmer", "tiny"): (100_000, 1_000_000),
    ("conmer", "small"): (6_000_000, 12_000_000),
}


@pytest.mark.parametrize("name,size", sorted(RANGES))
def test_asr_param_ranges(name, size):
    lo, hi = RANGES[name, size]
    n = count_params(models.build(name, size))
    assert lo <= n <= hi, f"{name}/{size}: {n:,} params"


@pytest.mark.parametrize("size", models.SIZES)
def test_nwc_counts_exact(size):
    m = models.build("nwc", size)
    assert count_params(m) == 350_185
    stage = m.stages[0]
    assert count_params(stage.decoder) == 120_311
    assert count_params(stage.encoder) == 229_841
    assert count_params(stage.quantizer) == 33
    assert count_params(models.build("nwc-cmrl", size)) == 700_370


def test_info_consistent_with_model():
    for name in models.names():
        spec = models.info(name, "tiny")
        model = models.build(name, "tiny")
        assert spec["params"] == count_params(model) == sum(spec["params_by_module"].values())
        out = model(*spec["example_input"](batch=2, seconds=0.1))
        assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_conmer_is_conformer_without_attention():
    conf = dict(models.build("conformer").named_modules())
    conm = dict(models.build("conmer").named_modules())
    assert isinstance(conf["encoder.layers.0.attn.q"], nn.Linear)
    assert not any(".attn" in k for k in conm)
    assert set(conm) == {k for k in conf if ".attn" not in k}


# ---------------------------------------------------------------- streaming == full


@pytest.mark.parametrize("name", ASR)
@torch.no_grad()
def test_asr_streaming_equals_full(name):
    model = models.build(name, "tiny", seed=3)
    feats = pad_to_multiple(models.example_features(2, 2.5, seed=1), model.chunk_frames)
    full, stream = _full_asr(model, feats), _stream_asr(model, feats)
    assert stream.shape == full.shape
    assert (stream - full).abs().max().item() <= TOL


@pytest.mark.parametrize("config", [{"chunk_frames": 64, "left_chunks": 0},
                                    {"chunk_frames": 16, "left_chunks": 3, "conv_kernel": 7}])
@torch.no_grad()
def test_conformer_streaming_other_chunkings(config):
    model = models.build("conformer", "tiny", **config)
    assert model.chunk_frames == config["chunk_frames"]
    feats = models.example_features(1, 1.28)
    assert (_stream_asr(model, feats) - model(feats)).abs().max().item() <= TOL


@torch.no_grad()
def test_conformer_state_is_needed_and_latency_is_one_chunk():
    """Negative control for the test above, plus the limited look-ahead of chunked attention."""
    model = models.build("conformer", "tiny")
    feats = models.example_features(1, 1.28)  # 128 frames = 4 chunks
    full = model(feats)
    fresh = [model.step(feats[:, i : i + 32], model.init_state(1))[0] for i in range(0, 128, 32)]
    assert (torch.cat(fresh, 1) - full).abs().max() > 1e-2  # dropping the state changes outputs
    changed = feats.clone()
    changed[:, 70:] += 1.0  # frame 70 = encoder frame 17, in chunk 2
    diff = (model(changed) - full).abs().amax(dim=(0, 2))
    assert diff[:16].max() == 0 and diff[16:24].max() > 0


@pytest.mark.parametrize("name", ["nwc", "nwc-cmrl"])
@pytest.mark.parametrize("frames_per_step", [1, 3])
@torch.no_grad()
def test_nwc_streaming_equals_full(name, frames_per_step):
    model = models.build(name)
    n = 1200  # 3 frames: enough for two overlaps, cheap enough for the default suite
    (wave,) = models.info(name)["example_input"](batch=2, seconds=n / 16000)
    full = model(wave)
    chunk = nwc.HOP * frames_per_step
    st, outs = model.init_state(2), []
    padded = pad_to_multiple(wave, chunk)
    if padded.shape[1] < n + nwc.OVERLAP:  # one more chunk flushes the last overlap
        padded = pad_to_multiple(torch.cat([padded, wave.new_zeros(2, 1)], 1), chunk)
    for i in range(0, padded.shape[1], chunk):
        out, st = model.step(padded[:, i : i + chunk], st)
        outs.append(out)
    stream = torch.cat(outs, 1)[:, nwc.OVERLAP : nwc.OVERLAP + n]
    assert full.shape == wave.shape
    assert (stream - full).abs().max().item() <= TOL


def test_nwc_overlap_add_reconstructs_exactly():
    """With an identity codec the framing + Hann-tapered overlap-add must give the input back."""
    model = models.build("nwc")
    model.code_frames = lambda frames: (frames, None)
    wave = torch.randn(2, 1500, dtype=torch.float32)
    assert torch.allclose(model(wave), wave, atol=1e-6)
    w = nwc.synthesis_window()
    assert torch.allclose(w[: nwc.OVERLAP] + w[nwc.HOP :], torch.ones(nwc.OVERLAP))


def test_nwc_quantizer_soft_in_training_hard_in_eval():
    q = nwc.ScalarQuantizer()
    assert torch.equal(q.bins.detach(), torch.linspace(-1, 1, 32)) and q.alpha.item() == -300.0
    h = torch.rand(4, 256) * 2 - 1
    hard, idx = q.eval()(h)
    nearest = (h[..., None] - q.bins).abs().argmin(-1)
    assert torch.equal(idx, nearest) and torch.equal(hard, q.bins[nearest])
    soft, _ = q.train()(h.requires_grad_())
    soft.sum().backward()
    assert q.alpha.grad is not None and q.bins.grad is not None and h.grad.abs().sum() > 0
    assert not torch.equal(soft.detach(), hard)  # soft code differs from the hard one...
    assert (soft.detach() - hard).abs().max() < 2 / 31  # ...but stays within a bin


def test_nwc_code_shape():
    model = models.build("nwc-cmrl")
    frames = torch.randn(3, nwc.FRAME) * 0.1
    with torch.no_grad():
        rec, idx = model.code_frames(frames)
    assert rec.shape == (3, 512) and idx.shape == (3, 2, 256) and idx.dtype == torch.long
    assert int(idx.min()) >= 0 and int(idx.max()) < 32


@pytest.mark.parametrize("name", models.names())
def test_every_parameter_is_trainable(name):
    """A backward pass reaches every parameter (nothing detached; NWC uses its soft code)."""
    model = models.build(name).train()
    args = models.info(name)["example_input"](batch=1, seconds=0.1)
    model(*args).pow(2).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", models.names())
def test_deterministic_from_seed(name):
    before = torch.get_rng_state()
    a, b, c = (models.build(name, "tiny", s, pretrained=False).state_dict() for s in (7, 7, 8))
    assert torch.equal(before, torch.get_rng_state())  # build leaves the global RNG alone
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ---------------------------------------------------------------- decoding helpers


def test_ctc_greedy_decode():
    ids = torch.tensor([[0, 3, 3, 0, 3, 5, 5, 0], [2, 2, 2, 0, 0, 1, 1, 1]])
    logits = torch.nn.functional.one_hot(ids, 6).float()
    assert ctc_greedy_decode(logits) == [[3, 3, 5], [2, 1]]
    assert ctc_greedy_decode(logits, lengths=torch.tensor([3, 8])) == [[3], [2, 1]]
    with pytest.raises(ValueError):
        ctc_greedy_decode(logits, lengths=torch.tensor([9, 1]))


@torch.no_grad()
def test_rnnt_lattice_and_streamed_greedy_decode():
    model = models.build("rnnt", pretrained=False)
    feats, tokens = models.info("rnnt")["example_input"](batch=2, seconds=0.6)
    logits = model(feats, tokens)
    assert logits.shape == (2, 20, tokens.shape[1] + 1, 64)
    # lattice entry (t, u) is the joiner on encoder frame t and the predictor after u labels
    enc = model.encode(feats)
    pred, _ = model.predict(torch.cat([torch.zeros(2, 1, dtype=torch.long), tokens], 1),
                            model.init_pred_state(2))
    assert torch.allclose(logits[:, 5, 2], model.join(enc[:, 5], pred[:, 2]), atol=1e-6)
    full_hyps, _ = models.rnnt_greedy_decode(model, enc)
    st, dst = model.init_state(2), None
    for i in range(0, feats.shape[1], model.chunk_frames):
        chunk_enc, st = model.step(feats[:, i : i + model.chunk_frames], st)
        hyps, dst = models.rnnt_greedy_decode(model, chunk_enc, dst)
    assert hyps == full_hyps and any(full_hyps)  # random weights still emit labels


# ---------------------------------------------------------------- small sizes


@pytest.mark.parametrize("name", ASR)
@torch.no_grad()
def test_small_forward_shapes(name):
    model = models.build(name, "small")
    args = models.info(name, "small")["example_input"](batch=1, seconds=0.64)
    out = model(*args)
    vocab = model.cfg.vocab
    expected = (1, 22, args[1].shape[1] + 1, vocab) if name == "rnnt" else (1, 16, vocab)
    assert out.shape == expected
    st = model.init_state(1)
    step_out, _ = model.step(args[0][:, : model.chunk_frames], st)
    assert step_out.shape[1] == model.chunk_frames // (3 if name == "rnnt" else 4)


# ---------------------------------------------------------------- exportability


class _StepGraph(nn.Module):
    """step() with the state dict flattened into positional tensors, as an exporter sees it."""

    def __init__(self, model, keys):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, chunk, *state):
        out, st = self.model.step(chunk, dict(zip(self.keys, state)))
        return (out, *[st[k] for k in self.keys])


@pytest.mark.slow
# The tracer warns about shape checks it freezes; with a fixed chunk size that is intended.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning",
                            "ignore::DeprecationWarning")
@pytest.mark.parametrize("name", models.names())
@torch.no_grad()
def test_step_exports_to_onnx_and_matches(name, tmp_path):
    """Two chained steps through onnxruntime equal torch: the state round-trips as plain tensors."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = models.build(name)
    state = model.init_state(1)
    keys = list(state)
    g = torch.Generator().manual_seed(0)
    if name.startswith("nwc"):
        chunk = 0.1 * torch.randn(1, nwc.HOP, generator=g)
    else:
        chunk = torch.randn(1, model.chunk_frames, 80, generator=g)
    # eval() on the wrapper too: the exporter restores the wrapper's own (training) mode
    # recursively afterwards, which would silently switch NWC to its soft quantizer.
    graph = _StepGraph(model, keys).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(graph, (chunk, *state.values()), str(path), dynamo=False,
                      opset_version=17, input_names=["chunk", *keys])
    sess = ort.InferenceSession(str(path))
    ref = graph(chunk, *state.values())
    got = sess.run(None, {"chunk": chunk.numpy(), **{k: v.numpy() for k, v in state.items()}})
    ref = graph(chunk, *ref[1:])
    got = sess.run(None, {"chunk": chunk.numpy(), **{k: got[i + 1] for i, k in enumerate(keys)}})
    assert not any(m.training for m in graph.modules())
    for a, b in zip(got, ref):
        assert a.shape == tuple(b.shape)
        assert float(abs(a - b.numpy()).max()) <= 1e-4


# ---------------------------------------------------------------- with edgekit.compress


@pytest.mark.parametrize("name", ["rnnt", "conformer"])
@torch.no_grad()
def test_compressed_model_still_streams(name):
    """The compress stage wraps our Linear/Conv1d/LSTM layers; streaming must survive that."""
    compress = pytest.importorskip("edgekit.compress").compress
    ex = models.info(name)["example_input"]
    small = compress(models.build(name), "int4", calib=[ex(batch=1, seconds=0.3)]).eval()
    assert any(type(m).__name__.startswith("Quant") for m in small.modules())
    feats = pad_to_multiple(models.example_features(1, 0.64, seed=2), small.chunk_frames)
    assert (_stream_asr(small, feats) - _full_asr(small, feats)).abs().max().item() <= TOL
