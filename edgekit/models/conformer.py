"""Streaming Conformer (and Conmer) encoders with a CTC head.

Contract (float32, blank id 0 = `common.BLANK`):
    forward(features (B, T, 80)) -> CTC logits (B, ceil(T / 4), vocab) (raw scores; apply
        log_softmax for the loss). One encoder frame = 40 ms.
    init_state(B) -> dict of tensors (conv caches, attention KV cache + its validity mask).
    step(chunk (B, chunk_frames, 80), state) -> (logits (B, chunk_frames / 4, vocab), state).
        Concatenated step outputs equal `forward` on the same frames when T is a multiple of
        `chunk_frames` (pad with `common.pad_to_multiple`); tested at 1e-5 max abs error on
        fp32 logits (measured 0 on this CPU: masked keys get exactly zero weight).

Streaming design:
  * Subsampling: two causal Conv1d (k=3, stride 2) over time, 80 -> d -> d, ReLU: x4 in time.
  * Attention is chunked: encoder frame i in chunk c = i // C (C = chunk_frames / 4) sees
    frames j with j // C <= c and j >= c*C - left_context: the whole current chunk (so a chunk
    costs at most one chunk of look-ahead latency) plus a bounded history. Streaming keeps the
    last `left_context` keys/values per layer and a 0/1 validity mask (no step counter, so no
    data-dependent control flow). No positional encoding: the causal convs already give the
    model relative order, and absolute positions would not survive an unbounded stream.
  * The depthwise conv is causal (left padding only) and LayerNorm replaces the paper's
    BatchNorm, so a step's output never depends on batch statistics or future frames.

Conmer = the same blocks with the self-attention module removed (`attention=False`).
Module names: `encoder.subsample.conv1|conv2`, `encoder.layers.<i>.ffn1.{norm,fc1,fc2}`,
`.attn.{norm,q,k,v,out}`, `.conv.{norm,pw1,dw,dw_norm,pw2}`, `.ffn2.*`, `.norm`, `ctc_head`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.models.common import N_MELS, causal_conv, check_features, conv_context, streaming_conv

SUBSAMPLE = 4  # two stride-2 convs


@dataclass(frozen=True)
class ConformerConfig:
    """Conformer/Conmer sizes. `chunk_frames` and `left_chunks` set the streaming latency."""

    d_model: int
    n_layers: int
    n_heads: int
    vocab: int
    ffn_mult: int = 4
    conv_kernel: int = 15
    chunk_frames: int = 32  # 10 ms feature frames per step (8 encoder frames)
    left_chunks: int = 2  # attention history, in chunks
    attention: bool = True

    @property
    def chunk(self) -> int:
        return self.chunk_frames // SUBSAMPLE

    @property
    def left_context(self) -> int:
        return self.left_chunks * self.chunk


SIZES = {
    "tiny": dict(d_model=96, n_layers=3, n_heads=4, vocab=64),
    "small": dict(d_model=256, n_layers=6, n_heads=4, vocab=512),
}


class FeedForward(nn.Module):
    """Pre-norm Linear-SiLU-Linear; returns the update (the block adds it with weight 1/2)."""

    def __init__(self, d: int, mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, d * mult)
        self.fc2 = nn.Linear(d * mult, d)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(self.norm(x))))


class ChunkedSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention from plain Linears (compressible like any Linear)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def _split(self, x):
        b, t, d = x.shape
        return x.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)

    def project(self, x):
        """Normalise and project: (B, T, d) -> q, k, v as (B, heads, T, d_head)."""
        x = self.norm(x)
        return self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))

    def attend(self, q, k, v, bias):
        """softmax(q k^T / sqrt(d_head) + bias) v, merged back to (B, Tq, d) and projected."""
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias, dim=-1)
        y = (att @ v).transpose(1, 2)
        return self.out(y.reshape(y.shape[0], y.shape[1], -1))


class ConvModule(nn.Module):
    """Pointwise conv + GLU, causal depthwise conv, LayerNorm, SiLU, pointwise conv."""

    def __init__(self, d: int, kernel: int):
        super().__init__()
        self.context = conv_context(kernel)
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, groups=d)
        self.dw_norm = nn.LayerNorm(d)
        self.pw2 = nn.Conv1d(d, d, 1)

    def forward(self, x, cache=None):
        """x (B, T, d) -> (update (B, T, d), new cache); the full sequence when cache is None."""
        h = F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)
        if cache is None:
            h, new_cache = causal_conv(self.dw, h, self.context), None
        else:
            h, new_cache = streaming_conv(self.dw, h, cache)
        h = F.silu(self.dw_norm(h.transpose(1, 2)))
        return self.pw2(h.transpose(1, 2)).transpose(1, 2), new_cache


class ConformerBlock(nn.Module):
    """Macaron block: x + FFN/2, + attention (Conformer only), + conv, + FFN/2, LayerNorm."""

    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.ffn1 = FeedForward(cfg.d_model, cfg.ffn_mult)
        self.attn = ChunkedSelfAttention(cfg.d_model, cfg.n_heads) if cfg.attention else None
        self.conv = ConvModule(cfg.d_model, cfg.conv_kernel)
        self.ffn2 = FeedForward(cfg.d_model, cfg.ffn_mult)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x, attn_bias, kv=None, conv_cache=None):
        """One block; kv = (k_cache, v_cache) when streaming. Returns (x, new kv, conv cache)."""
        x = x + 0.5 * self.ffn1(x)
        new_kv = None
        if self.attn is not None:
            q, k, v = self.attn.project(x)
            if kv is not None:
                k, v = torch.cat([kv[0], k], 2), torch.cat([kv[1], v], 2)
                keep = kv[0].shape[2]
                new_kv = (k[:, :, k.shape[2] - keep :], v[:, :, v.shape[2] - keep :])
            x = x + self.attn.attend(q, k, v, attn_bias)
        upd, conv_cache = self.conv(x, conv_cache)
        x = x + upd
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x), new_kv, conv_cache


class Subsample(nn.Module):
    """Two causal stride-2 Conv1d over time (80 -> d -> d), ReLU after each: 10 ms -> 40 ms."""

    def __init__(self, d: int):
        super().__init__()
        self.context = conv_context(3)
        self.conv1 = nn.Conv1d(N_MELS, d, 3, stride=2)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2)

    def forward(self, x, caches=None):
        """(B, T, 80) -> ((B, ceil(T/4), d), new caches or None)."""
        h = x.transpose(1, 2)
        if caches is None:
            h = F.relu(causal_conv(self.conv1, h, self.context))
            return F.relu(causal_conv(self.conv2, h, self.context)).transpose(1, 2), None
        h, c1 = streaming_conv(self.conv1, h, caches[0])
        h, c2 = streaming_conv(self.conv2, F.relu(h), caches[1])
        return F.relu(h).transpose(1, 2), (c1, c2)


class ConformerEncoder(nn.Module):
    """Subsampling + a stack of Conformer (or Conmer) blocks."""

    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.subsample = Subsample(cfg.d_model)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))


class Conformer(nn.Module):
    """Streaming Conformer/Conmer + CTC head; see the module docstring for the contract."""

    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        if cfg.chunk_frames % SUBSAMPLE or cfg.chunk_frames <= 0:
            raise ValueError(f"chunk_frames must be a positive multiple of {SUBSAMPLE}")
        self.cfg = cfg
        self.chunk_frames = cfg.chunk_frames
        self.encoder = ConformerEncoder(cfg)
        self.ctc_head = nn.Linear(cfg.d_model, cfg.vocab)

    def chunk_mask(self, t: int, device=None) -> torch.Tensor:
        """Additive (t, t) attention bias for the full sequence: 0 where visible, -inf elsewhere."""
        i = torch.arange(t, device=device)
        c = self.cfg.chunk
        ci, cj = (i // c)[:, None], (i // c)[None, :]
        ok = (cj <= ci) & (i[None, :] >= ci * c - self.cfg.left_context)
        return torch.zeros(t, t, device=device).masked_fill(~ok, float("-inf"))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Full-sequence forward: (B, T, 80) -> CTC logits (B, ceil(T/4), vocab)."""
        check_features(features)
        x, _ = self.encoder.subsample(features)
        bias = self.chunk_mask(x.shape[1], x.device).to(x.dtype)
        for layer in self.encoder.layers:
            x, _, _ = layer(x, bias)
        return self.ctc_head(x)

    def init_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Zeroed caches: subsampling, per-layer depthwise conv, per-layer KV + validity mask."""
        cfg, p = self.cfg, next(self.parameters())
        z = dict(dtype=p.dtype, device=p.device)
        ctx = self.encoder.subsample.context
        st = {
            "sub1": torch.zeros(batch, N_MELS, ctx, **z),
            "sub2": torch.zeros(batch, cfg.d_model, ctx, **z),
            "conv": torch.zeros(
                cfg.n_layers, batch, cfg.d_model, conv_context(cfg.conv_kernel), **z
            ),
        }
        if cfg.attention:
            dh = cfg.d_model // cfg.n_heads
            kv = (cfg.n_layers, batch, cfg.n_heads, cfg.left_context, dh)
            st["k"], st["v"] = torch.zeros(kv, **z), torch.zeros(kv, **z)
            # 0 = cache slot not filled yet (start of stream), 1 = holds a real past frame
            st["kv_valid"] = torch.zeros(batch, cfg.left_context, **z)
        return st

    def step(self, chunk: torch.Tensor, state: dict[str, torch.Tensor]):
        """One chunk (B, chunk_frames, 80) -> (logits (B, chunk_frames / 4, vocab), state)."""
        check_features(chunk, "chunk")
        if chunk.shape[1] != self.cfg.chunk_frames:
            raise ValueError(
                f"chunk must have exactly {self.cfg.chunk_frames} frames, got {chunk.shape[1]}"
            )
        x, (s1, s2) = self.encoder.subsample(chunk, (state["sub1"], state["sub2"]))
        new = {"sub1": s1, "sub2": s2}
        bias = None
        if self.cfg.attention:
            fresh = state["kv_valid"].new_ones(x.shape[0], x.shape[1])
            valid = torch.cat([state["kv_valid"], fresh], 1)
            bias = torch.zeros_like(valid).masked_fill(valid == 0, float("-inf"))[:, None, None, :]
            new["kv_valid"] = valid[:, x.shape[1] :]
            ks, vs = [], []
        convs = []
        for i, layer in enumerate(self.encoder.layers):
            kv = (state["k"][i], state["v"][i]) if self.cfg.attention else None
            x, kv, conv = layer(x, bias, kv, state["conv"][i])
            convs.append(conv)
            if kv is not None:
                ks.append(kv[0])
                vs.append(kv[1])
        new["conv"] = torch.stack(convs)
        if self.cfg.attention:
            new["k"], new["v"] = torch.stack(ks), torch.stack(vs)
        return self.ctc_head(x), new


def build(size: str, attention: bool = True, **overrides) -> Conformer:
    """Conformer (attention=True) or Conmer (attention=False) of the named size.

    `overrides` replace ConformerConfig fields (e.g. chunk_frames=64, left_chunks=4).
    """
    return Conformer(ConformerConfig(**{**SIZES[size], **overrides, "attention": attention}))
