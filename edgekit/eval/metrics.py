"""Task metrics: WER/CER (jiwer) for ASR; SNR, SI-SNR, STOI, PESQ and bitrate for codecs."""

from __future__ import annotations

import heapq
import math
from collections import Counter

import numpy as np


def _texts(refs, hyps) -> tuple[list[str], list[str]]:
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps) or not refs:
        raise ValueError(
            f"need equal, non-zero numbers of refs and hyps ({len(refs)}, {len(hyps)})")
    return refs, hyps


def wer(refs, hyps) -> float:
    """Corpus word error rate (total edits / total reference words), via jiwer."""
    import jiwer

    refs, hyps = _texts(refs, hyps)
    if not any(r.split() for r in refs):
        raise ValueError("WER needs at least one reference word")
    # jiwer rejects empty references; an empty hypothesis is fine (all deletions)
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def cer(refs, hyps) -> float:
    """Corpus character error rate (spaces count as characters), via jiwer."""
    import jiwer

    refs, hyps = _texts(refs, hyps)
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        raise ValueError("CER needs at least one non-empty reference")
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))


def _pair(ref, est) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64).ravel()
    est = np.asarray(est, dtype=np.float64).ravel()
    if ref.shape != est.shape or ref.size == 0:
        raise ValueError(f"reference and estimate must be equal-length, non-empty "
                         f"({ref.size}, {est.size})")
    return ref, est


def snr(ref, est) -> float:
    """Signal-to-noise ratio in dB of `est` against `ref` (inf for an exact copy).

    The formula is `edgekit.compress.snr_db`'s; this adds the length check and reports an
    exact copy as inf (a number JSON and means can hold) instead of None.
    """
    from edgekit.compress.report import snr_db

    db = snr_db(*_pair(ref, est))
    return math.inf if db is None else float(db)


def si_snr(ref, est) -> float:
    """Scale-invariant SNR in dB (zero-mean signals, `est` projected onto `ref`)."""
    ref, est = _pair(ref, est)
    ref, est = ref - ref.mean(), est - est.mean()
    target = ref * (np.dot(est, ref) / (np.dot(ref, ref) + 1e-12))
    noise = np.sum((est - target) ** 2)
    return math.inf if noise == 0 else float(10 * np.log10(np.sum(target**2) / noise + 1e-300))


def stoi(ref, est, rate: int = 16000) -> float:
    """Short-time objective intelligibility (pystoi), 0..1."""
    from pystoi import stoi as _stoi

    ref, est = _pair(ref, est)
    return float(_stoi(ref, est, rate, extended=False))


def pesq_wb(ref, est, rate: int = 16000) -> float:
    """Wideband PESQ (ITU-T P.862.2, `pesq` package), about 1..4.6; needs >= 0.25 s of audio."""
    from pesq import pesq as _pesq

    ref, est = _pair(ref, est)
    if rate != 16000:
        raise ValueError("wideband PESQ needs 16 kHz audio")
    return float(_pesq(rate, ref.astype(np.float32), est.astype(np.float32), "wb"))


def entropy_bits(symbols) -> float:
    """Empirical (zeroth-order) entropy in bits per symbol."""
    counts = np.array(list(Counter(np.asarray(symbols).ravel().tolist()).values()), dtype=float)
    if counts.sum() == 0:
        raise ValueError("no symbols")
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def huffman_lengths(symbols) -> dict[int, int]:
    """Code length per symbol of a Huffman code built on the symbols' own counts."""
    counts = Counter(np.asarray(symbols).ravel().tolist())
    if not counts:
        raise ValueError("no symbols")
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    heap = [(n, i, (sym,)) for i, (sym, n) in enumerate(sorted(counts.items()))]
    heapq.heapify(heap)
    depth = Counter()
    tie = len(heap)
    while len(heap) > 1:
        n1, _, a = heapq.heappop(heap)
        n2, _, b = heapq.heappop(heap)
        for sym in a + b:
            depth[sym] += 1
        heapq.heappush(heap, (n1 + n2, tie, a + b))
        tie += 1
    return dict(depth)


def huffman_bits(symbols, alphabet: int) -> int:
    """Bits to store `symbols` with a Huffman code: payload plus a table of code lengths
    (one 5-bit length per alphabet entry), i.e. what an actual entropy coder would write."""
    lengths = huffman_lengths(symbols)
    counts = Counter(np.asarray(symbols).ravel().tolist())
    return int(sum(counts[s] * lengths[s] for s in counts) + 5 * alphabet)
