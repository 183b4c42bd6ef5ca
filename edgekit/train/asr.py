"""ASR losses: CTC for Conformer/Conmer, the transducer (RNN-T) loss in plain torch.

The RNN-T loss is the negative log of the sum over all monotonic alignments of (T frames,
U labels): alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] + emit[t, u-1]),
loss = -(alpha[T-1, U] + blank[T-1, U]). The recursion along u inside one frame is a prefix
sum, so each frame is one `logcumsumexp` and the Python loop runs over T only:
    alpha[t, u] = E[u] + logcumsumexp_{u' <= u}(alpha[t-1, u'] + blank[t-1, u'] - E[u'])
with E[u] = sum_{k<u} emit[t, k]. Autograd gives the gradient; memory is O(T U) per item on
top of the joint logits.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from edgekit.models.common import BLANK, is_rnnt


def ctc_loss(logits: torch.Tensor, out_lens: torch.Tensor, tokens: torch.Tensor,
             token_lens: torch.Tensor) -> torch.Tensor:
    """Mean per-utterance CTC loss (nats per utterance) of raw logits (B, T, V), blank 0.

    Impossible alignments (more labels than frames) give 0, not inf, so one bad item cannot
    poison a batch.
    """
    logp = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
    return F.ctc_loss(logp, tokens, out_lens, token_lens, blank=BLANK, reduction="sum",
                      zero_infinity=True) / logits.shape[0]


def ctc_out_lens(feat_lens: torch.Tensor, subsample: int = 4) -> torch.Tensor:
    """Encoder frames the Conformer/Conmer emit for `feat_lens` input frames (ceil(T / 4))."""
    return torch.div(feat_lens + subsample - 1, subsample, rounding_mode="floor")


def rnnt_loss(joint: torch.Tensor, tokens: torch.Tensor, enc_lens: torch.Tensor,
              token_lens: torch.Tensor, blank: int = BLANK) -> torch.Tensor:
    """Mean per-utterance transducer loss of joint logits (B, T, U+1, V), blank 0.

    tokens (B, U) padded labels; enc_lens (B,) valid frames (>= 1); token_lens (B,) labels.
    """
    b, t_max, u1, _ = joint.shape
    if tokens.shape != (b, u1 - 1):
        raise ValueError(f"tokens must be (B, U) = ({b}, {u1 - 1}), got {tuple(tokens.shape)}")
    if bool((enc_lens < 1).any()) or bool((enc_lens > t_max).any()):
        raise ValueError(f"enc_lens must be in 1..{t_max}")
    if bool((token_lens < 0).any()) or bool((token_lens > u1 - 1).any()):
        raise ValueError(f"token_lens must be in 0..{u1 - 1}")
    # float64 stays float64 (gradient checks); anything narrower is promoted to float32
    logp = F.log_softmax(joint if joint.dtype == torch.float64 else joint.float(), dim=-1)
    blank_lp = logp[..., blank]  # (B, T, U+1)
    idx = tokens.clamp(min=0).unsqueeze(1).unsqueeze(-1).expand(b, t_max, u1 - 1, 1)
    emit = logp[:, :, :-1, :].gather(-1, idx).squeeze(-1)  # (B, T, U)
    zero = emit.new_zeros(b, 1)
    alphas = []
    prev = None
    for t in range(t_max):
        e = torch.cat([zero, emit[:, t].cumsum(-1)], dim=-1)  # E[u], (B, U+1)
        if prev is None:
            alpha = e  # t = 0: only emissions
        else:
            alpha = e + torch.logcumsumexp(prev + blank_lp[:, t - 1] - e, dim=-1)
        alphas.append(alpha)
        prev = alpha
    alpha = torch.stack(alphas, dim=1)  # (B, T, U+1)
    rows = torch.arange(b)
    last = alpha[rows, enc_lens - 1, token_lens] + blank_lp[rows, enc_lens - 1, token_lens]
    return -last.mean()


def spec_augment(feats: torch.Tensor, gen: torch.Generator, freq_masks: int = 2,
                 freq_width: int = 12, time_masks: int = 2, time_width: int = 20) -> torch.Tensor:
    """SpecAugment-style masking (zeros = the normalised mean) on a (B, T, 80) batch.

    The test split holds unseen voices, so the model must not memorise spectral detail.
    """
    x = feats.clone()
    b, t, f = x.shape
    for i in range(b):
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, f - w), (1,), generator=gen))
            x[i, :, s : s + w] = 0
        for _ in range(time_masks):
            w = int(torch.randint(0, time_width + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, t - w), (1,), generator=gen))
            x[i, s : s + w] = 0
    return x


def make_loss(model, augment: bool = True, seed: int = 0):
    """loss_fn(model, batch) for `edgekit.train.loop.train`: CTC, or RNN-T for transducers."""
    gen = torch.Generator().manual_seed(seed)
    transducer = is_rnnt(model)

    def loss_fn(m, batch):
        feats = spec_augment(batch["feats"], gen) if augment else batch["feats"]
        if transducer:
            stack = m.cfg.stack
            joint = m(feats, batch["tokens"])
            enc_lens = torch.div(batch["feat_lens"] + stack - 1, stack, rounding_mode="floor")
            loss = rnnt_loss(joint, batch["tokens"], enc_lens, batch["token_lens"])
        else:
            logits = m(feats)
            loss = ctc_loss(logits, ctc_out_lens(batch["feat_lens"]), batch["tokens"],
                            batch["token_lens"])
        return loss, {}

    return loss_fn
