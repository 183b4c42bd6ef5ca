"""NWC neural waveform codec (METHODS.md section 7) and its CMRL cascade.

Contract (float32):
    forward(wave (B, N)) -> reconstruction (B, N); 16 kHz mono, nominally in [-1, 1].
    init_state(B) -> {"in_tail": (B, 32), "out_tail": (B, 32)}
    step(chunk (B, 480*m), state) -> (out (B, 480*m), state), m >= 1 frames per call.
        The stream is delayed by OVERLAP = 32 samples: concatenating the step outputs of a
        stream x and dropping the first 32 samples gives forward(x) (the ragged end needs
        one more zero chunk). Frames are coded independently, so the only state is the
        overlap; tested at 1e-5 max abs error in fp32 (measured <= 7.5e-8: only the batching
        of frames differs). The hard argmax makes the output discontinuous: a backend whose
        encoder output differs by ~1e-7 would pick the neighbouring bin for a value sitting on
        a bin midpoint (not seen in 16,384 codes against onnxruntime).
    code_frames(frames (F, 512)) -> (reconstructed frames (F, 512), code indices (F, modules, 256))

Framing: frames of 512 samples, hop 480, so neighbours share 32 samples. The signal is
left-padded with 32 zeros; frame k covers padded samples [480k, 480k + 512). Decoded frames
are multiplied by a window that is 1 in the middle and a Hann half (sin^2 / cos^2) on the
32-sample edges; the rising and falling halves sum to 1, so overlap-add is exact for a
perfect codec. Only the synthesis side is windowed (the encoder sees the raw frame).

One module = encoder -> scalar quantizer (soft in training, hard at inference) -> decoder.
Parameter count, every conv with bias unless said (a Conv1d has c_in*c_out*k/groups + c_out):
  Gated residual block c_in -> c_out (narrow 20): 1x1 c_in->20 (20*c_in + 20),
    two dilated k15 20->20 (2 * 6,020), k9 20->c_out (180*c_out + c_out)
    = 20*c_in + 181*c_out + 12,060; so 100->100: 2,020 + 12,040 + 18,100 = 32,160;
    50->50: 1,020 + 12,040 + 9,050 = 22,110; 1->100: 40 + 12,040 + 18,100 = 30,180.
  Encoder: k55 1->100 (5,600) + 4 blocks 100->100 (128,640) + k9 stride-2 100->100 (90,100)
    + k55 100->1 (5,501) = 229,841.
  Quantizer: 32 bins + 1 sharpness = 33.
  Decoder: blocks 1->100 and 100->100 (30,180 + 32,160; the first block's residual adds the
    1-channel code to every channel, by broadcasting) + depthwise k9 without bias (900; the
    pointwise conv after it is linear and has its own bias, so a depthwise bias would be
    redundant) + pointwise 100->100 (10,100) + 2 blocks 50->50 (44,220) + k55 50->1 (2,751)
    = 120,311.
  Module total 229,841 + 33 + 120,311 = 350,185; the 2-module CMRL cascade has 700,370.

CMRL: module i codes the residual x - sum_{j<i} xhat_j and the output is sum_i xhat_i. The
cascade runs per frame before the synthesis window; because windowing and overlap-add are
linear, summing module outputs per frame equals summing their overlap-added waveforms.
Module names: `stages.<i>.encoder.*`, `stages.<i>.quantizer.{bins,alpha}`, `stages.<i>.decoder.*`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.models.common import SAMPLE_RATE  # noqa: F401 (part of this module's API)

FRAME = 512
OVERLAP = 32
HOP = FRAME - OVERLAP
CODE_LEN = FRAME // 2  # the stride-2 conv halves the frame: 256 code values
WIDE, NARROW, LEVELS = 100, 20, 32


def _leaky(x):
    return F.leaky_relu(x, 0.01)


class GatedBlock(nn.Module):
    """1x1 c_in->20, LeakyReLU; linear(dilated k15) * tanh(dilated k15); k9 20->c_out; + input."""

    def __init__(self, c_in: int, c_out: int, dilation: int):
        super().__init__()
        pad = 7 * dilation  # "same" length for k=15
        self.inp = nn.Conv1d(c_in, NARROW, 1)
        self.filt = nn.Conv1d(NARROW, NARROW, 15, dilation=dilation, padding=pad)
        self.gate = nn.Conv1d(NARROW, NARROW, 15, dilation=dilation, padding=pad)
        self.out = nn.Conv1d(NARROW, c_out, 9, padding=4)

    def forward(self, x):
        h = _leaky(self.inp(x))
        return x + self.out(self.filt(h) * torch.tanh(self.gate(h)))


def _run_stack(blocks: nn.ModuleList, x):
    # LeakyReLU between blocks, not after the last: the next layer applies its own activation.
    for i, block in enumerate(blocks):
        x = block(x)
        if i < len(blocks) - 1:
            x = _leaky(x)
    return x


class NWCEncoder(nn.Module):
    """(F, 1, 512) frame -> (F, 1, 256) code values in (-1, 1)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv1d(1, WIDE, 55, padding=27)
        self.blocks1 = nn.ModuleList([GatedBlock(WIDE, WIDE, 1), GatedBlock(WIDE, WIDE, 2)])
        self.down = nn.Conv1d(WIDE, WIDE, 9, stride=2, padding=4)
        self.blocks2 = nn.ModuleList([GatedBlock(WIDE, WIDE, 1), GatedBlock(WIDE, WIDE, 2)])
        self.out = nn.Conv1d(WIDE, 1, 55, padding=27)

    def forward(self, x):
        x = _run_stack(self.blocks1, _leaky(self.inp(x)))
        x = _run_stack(self.blocks2, _leaky(self.down(x)))
        return torch.tanh(self.out(x))


class ScalarQuantizer(nn.Module):
    """L trainable bins b (init linspace(-1, 1)) and a trainable sharpness alpha (init -300).

    a = softmax(alpha * |h - b|) over bins. Training: the soft code a . b (differentiable in h,
    b and alpha). Inference (eval mode): the hard code b[argmax a].
    """

    def __init__(self, levels: int = LEVELS, alpha: float = -300.0):
        super().__init__()
        self.bins = nn.Parameter(torch.linspace(-1.0, 1.0, levels))
        self.alpha = nn.Parameter(torch.tensor(alpha))

    def assignment(self, h):
        """Soft assignment (..., L) of code values h (...)."""
        return torch.softmax(self.alpha * (h[..., None] - self.bins).abs(), dim=-1)

    def forward(self, h):
        """h (...) -> (quantized code values (...), bin indices (...) int64)."""
        a = self.assignment(h)
        idx = a.argmax(-1)
        if self.training:
            return a @ self.bins, idx
        return self.bins[idx], idx


class NWCDecoder(nn.Module):
    """(F, 1, 256) quantized code -> (F, 1, 512) frame via a 2x sub-pixel shuffle."""

    def __init__(self):
        super().__init__()
        self.blocks1 = nn.ModuleList([GatedBlock(1, WIDE, 1), GatedBlock(WIDE, WIDE, 2)])
        self.dw = nn.Conv1d(WIDE, WIDE, 9, padding=4, groups=WIDE, bias=False)
        self.pw = nn.Conv1d(WIDE, WIDE, 1)
        half = WIDE // 2
        self.blocks2 = nn.ModuleList([GatedBlock(half, half, 1), GatedBlock(half, half, 2)])
        self.out = nn.Conv1d(WIDE // 2, 1, 55, padding=27)

    @staticmethod
    def shuffle(x):
        """Sub-pixel shuffle (B, 2C, T) -> (B, C, 2T): out[c, 2t + r] = in[2c + r, t]."""
        b, c2, t = x.shape
        return x.reshape(b, c2 // 2, 2, t).transpose(2, 3).reshape(b, c2 // 2, 2 * t)

    def forward(self, code):
        x = _run_stack(self.blocks1, code)
        x = self.shuffle(_leaky(self.pw(self.dw(x))))
        return self.out(_run_stack(self.blocks2, x))


class NWCModule(nn.Module):
    """One codec module on frames: (F, 512) -> ((F, 512) reconstruction, (F, 256) indices)."""

    def __init__(self):
        super().__init__()
        self.encoder = NWCEncoder()
        self.quantizer = ScalarQuantizer()
        self.decoder = NWCDecoder()

    def forward(self, frames):
        code, idx = self.quantizer(self.encoder(frames[:, None, :]))
        return self.decoder(code)[:, 0], idx[:, 0]


def synthesis_window(dtype=torch.float32) -> torch.Tensor:
    """(512,) window: sin^2 rise over 32 samples, flat 1, cos^2 fall; rise + fall = 1."""
    n = torch.arange(OVERLAP, dtype=torch.float64)
    rise = torch.sin(math.pi * (n + 0.5) / (2 * OVERLAP)) ** 2
    flat = torch.ones(FRAME - 2 * OVERLAP, dtype=torch.float64)
    return torch.cat([rise, flat, rise.flip(0)]).to(dtype)


def _check_wave(x, what, multiple=1):
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        got = f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}"
        raise ValueError(f"{what} must be a float tensor of shape (batch, samples), got {got}")
    if x.shape[1] < 1 or x.shape[1] % multiple:
        raise ValueError(f"{what} length {x.shape[1]} must be a positive multiple of {multiple}")


class NWCCodec(nn.Module):
    """Framed, overlap-added codec of `n_modules` cascaded NWC modules (1 = plain NWC)."""

    latency_samples = OVERLAP
    chunk_samples = HOP

    def __init__(self, n_modules: int = 1):
        super().__init__()
        self.stages = nn.ModuleList(NWCModule() for _ in range(n_modules))
        self.register_buffer("window", synthesis_window(), persistent=False)

    def code_frames(self, frames):
        """Cascade on residuals: frames (F, 512) -> (sum of module outputs, indices (F, M, 256))."""
        out, idxs = torch.zeros_like(frames), []
        for stage in self.stages:
            y, idx = stage(frames - out)
            out = out + y
            idxs.append(idx)
        return out, torch.stack(idxs, 1)

    def _overlap_add(self, frames, prev_tail):
        """Code + window frames (B, m, 512); add each frame's head to the previous tail.

        Returns (B, 480*m) finished samples and the last frame's (B, 32) unfinished tail.
        """
        b, m, _ = frames.shape
        dec, _ = self.code_frames(frames.reshape(b * m, FRAME))
        dec = dec.reshape(b, m, FRAME) * self.window
        tails = dec[:, :, HOP:]
        incoming = torch.cat([prev_tail[:, None], tails[:, :-1]], 1)
        body = dec[:, :, :HOP] + F.pad(incoming, (0, HOP - OVERLAP))
        return body.reshape(b, m * HOP), tails[:, -1]

    def forward(self, wave):
        """Full-signal encode + decode: (B, N) -> (B, N)."""
        _check_wave(wave, "wave")
        b, n = wave.shape
        m = -(-(n + OVERLAP) // HOP)  # frames so every input sample lies outside the last fall
        xp = F.pad(wave, (OVERLAP, m * HOP - n))
        body, tail = self._overlap_add(xp.unfold(1, FRAME, HOP), wave.new_zeros(b, OVERLAP))
        return torch.cat([body, tail], 1)[:, OVERLAP : OVERLAP + n]

    def init_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Zero overlap buffers: input look-back (= the forward's left padding) and output tail."""
        z = self.window.new_zeros(batch, OVERLAP)
        return {"in_tail": z, "out_tail": z.clone()}

    def step(self, chunk, state):
        """Code 480*m new samples; returns the 480*m output samples they complete (32 behind)."""
        _check_wave(chunk, "chunk", HOP)
        buf = torch.cat([state["in_tail"], chunk], 1)
        out, tail = self._overlap_add(buf.unfold(1, FRAME, HOP), state["out_tail"])
        return out, {"in_tail": buf[:, buf.shape[1] - OVERLAP :], "out_tail": tail}


def build(size: str, n_modules: int = 1, **overrides) -> NWCCodec:
    """NWC codec; the architecture is fixed by the spec, so 'tiny' and 'small' are identical."""
    if overrides:
        raise ValueError(f"NWC is fixed by its spec; it takes no options, got {sorted(overrides)}")
    return NWCCodec(n_modules)
