"""Weight quantizers onto the packed codebook representation (METHODS.md §1, §2, §4).

Every quantizer returns the same thing: b-bit codes, an int8 codebook (per tensor or per output
row) and float32 scales (per row, optionally per group of K), so that the dequantized weight is
exactly ``scale[n, g(k)] * codebook[code[n, k]]`` (docs/format.md §1). The quantizers differ
only in how the codebook levels are chosen:

* ``uniform``  the identity codebook ``c - 2**(b-1)`` (affine fast path in the kernels);
  ``narrow`` range leaves code 0 (-2**(b-1)) unused so the grid is symmetric.
* ``lloyd_max`` 1-D Lloyd-Max / k-means levels (quantile init, Δ distortion < tol relative),
  scaled so max |level| -> 127, rounded onto the int8 grid, duplicates merged.
* ``mulaw``    μ-law spaced levels ``s · μ⁻¹(u_k)``, u uniform in [-1, 1] (the GQ initial point).
* ``binary``   1 bit, {-a, +a}.

Scales: the weights of each scale group are first normalised by their max |w|; the levels are
fitted on the normalised values (weighted by the squared group scale so the fit minimises the
real, not the normalised, error). After the codes are chosen, each group's scale is refitted by
least squares and the codes re-chosen (``refine`` rounds); each round can only lower the
group's squared error, and the representation stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUANTIZERS = ("uniform", "lloyd_max", "mulaw", "binary")
GRANULARITIES = ("tensor", "channel", "group")
CODEBOOK_SCOPES = ("tensor", "channel")


@dataclass
class QuantizedWeight:
    """One quantized (N, K) matrix in the packed representation (docs/format.md §1)."""

    codes: np.ndarray       # (N, K) uint8, b-bit indices into the row's codebook
    codebook: np.ndarray    # (1 or N, 2**bits) int8
    scale: np.ndarray       # (N, ngroups) float32
    bits: int
    group_size: int         # 0: one scale group per row
    quantizer: str
    levels: int             # effective distinct int8 levels (max over codebook scopes)
    mask: np.ndarray | None = None   # (N, K) bool, False = zero weight, not stored

    def dequantize(self) -> np.ndarray:
        """Float32 (N, K) weight: scale * codebook[code], exactly 0 where masked."""
        return dequantize(self.codes, self.codebook, self.scale, self.group_size, self.mask)


def dequantize(codes, codebook, scale, group_size=0, mask=None) -> np.ndarray:
    """Float32 weight of the packed representation (docs/format.md §1)."""
    codes = np.asarray(codes)
    codebook = np.asarray(codebook)
    n, k = codes.shape
    table = codebook.astype(np.float32)
    if table.shape[0] == 1:
        vals = table[0][codes]
    else:
        vals = np.take_along_axis(table, codes.astype(np.int64), axis=1)
    w = vals * _expand(np.asarray(scale, np.float32).reshape(n, -1), k, group_size)
    if mask is not None:
        w = np.where(mask, w, np.float32(0))
    return w.astype(np.float32)


def _expand(per_group: np.ndarray, k: int, group_size: int) -> np.ndarray:
    """(N, G) -> (N, K): each k gets its group's value."""
    if per_group.shape[1] == 1:
        return np.broadcast_to(per_group, (per_group.shape[0], k))
    return np.repeat(per_group, group_size, axis=1)[:, :k]


def _group_reduce(x: np.ndarray, granularity: str, group_size: int, op) -> np.ndarray:
    """Reduce (N, K) over each scale group -> (N, G); 'tensor' broadcasts one value to (N, 1)."""
    n, k = x.shape
    if granularity == "tensor":
        return np.full((n, 1), op(x), dtype=np.float64)
    if granularity == "channel":
        return op(x, axis=1, keepdims=True).astype(np.float64)
    g = -(-k // group_size)
    pad = np.zeros((n, g * group_size - k), x.dtype)
    return op(np.concatenate([x, pad], axis=1).reshape(n, g, group_size), axis=2).astype(np.float64)


def mulaw_inverse(y: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """μ⁻¹(y) = sign(y) ((1 + μ)^|y| - 1) / μ (METHODS.md §4)."""
    y = np.asarray(y, np.float64)
    return np.sign(y) * ((1.0 + mu) ** np.abs(y) - 1.0) / mu


def lloyd_max_levels(x: np.ndarray, nlevels: int, weights: np.ndarray | None = None,
                     tol: float = 1e-6, max_iter: int = 300,
                     init: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Weighted 1-D Lloyd-Max (k-means) levels for each row of `x` (S, M) -> ((S, L), iterations).

    Quantile initialisation unless `init` (S or 1, L) is given; stops when every row's
    distortion drops by less than `tol` relative (METHODS.md §2). Each row is sorted once; an
    iteration is then one searchsorted for the decision thresholds and prefix sums for the
    centroids, for all rows at once.
    """
    x = np.asarray(x, np.float64)
    s, m = x.shape
    w = np.ones_like(x) if weights is None else np.asarray(weights, np.float64)
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1)
    ws = np.take_along_axis(w, order, axis=1)
    zero = np.zeros((s, 1))
    p0 = np.concatenate([zero, np.cumsum(ws, axis=1)], axis=1)
    p1 = np.concatenate([zero, np.cumsum(ws * xs, axis=1)], axis=1)
    p2 = np.concatenate([zero, np.cumsum(ws * xs * xs, axis=1)], axis=1)
    pos = np.minimum(((np.arange(nlevels) + 0.5) / nlevels * m).astype(np.int64), m - 1)
    c = xs[:, pos].copy() if init is None else np.sort(
        np.broadcast_to(np.asarray(init, np.float64), (s, nlevels)), axis=1).copy()
    # Rows are shifted apart so one flat searchsorted serves every row.
    span = (np.abs(xs).max() + 1.0) * 4.0
    off = np.arange(s)[:, None] * span
    flat = (xs + off).ravel()
    prev = np.full(s, np.inf)
    it = 0
    for it in range(1, max_iter + 1):
        t = (c[:, 1:] + c[:, :-1]) / 2.0
        b = np.searchsorted(flat, (t + off).ravel()).reshape(s, nlevels - 1)
        b = b - np.arange(s)[:, None] * m
        b = np.concatenate([np.zeros((s, 1), np.int64), b, np.full((s, 1), m)], axis=1)
        n0 = np.diff(np.take_along_axis(p0, b, axis=1), axis=1)
        n1 = np.diff(np.take_along_axis(p1, b, axis=1), axis=1)
        n2 = np.diff(np.take_along_axis(p2, b, axis=1), axis=1)
        c = np.where(n0 > 0, n1 / np.where(n0 > 0, n0, 1.0), c)
        c = np.sort(c, axis=1)
        dist = np.maximum((n2 - 2 * c * n1 + c * c * n0).sum(axis=1), 0.0)
        done = np.isfinite(prev) & ((prev - dist) <= tol * np.maximum(prev, 1e-300))
        prev = dist
        if np.all(done):
            break
    return c, it


def _nearest(v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of the row's sorted table (S, L) for every v (N, K)."""
    n, k = v.shape
    nl = table.shape[1]
    v = np.clip(v, -512.0, 512.0)
    t = (table[:, 1:] + table[:, :-1]) / 2.0
    if table.shape[0] == 1:
        return np.searchsorted(t[0], v, side="left").astype(np.uint8)
    off = np.arange(n)[:, None] * 2048.0
    idx = np.searchsorted((t + off).ravel(), (v + off).ravel(), side="left").reshape(n, k)
    return (idx - np.arange(n)[:, None] * (nl - 1)).astype(np.uint8)


def _int8_table(levels: np.ndarray, nentries: int) -> tuple[np.ndarray, float | np.ndarray, int]:
    """Float levels (S, L) -> sorted int8 table (S, nentries), per-row level scale, max unique.

    max |level| maps to 127; levels that round to the same int8 are merged and the table is
    padded by repeating its largest entry (a code may point at a padding entry: same value).
    """
    amax = np.abs(levels).max(axis=1, keepdims=True)
    amax = np.where(amax > 0, amax, 1.0)
    q = np.clip(np.round(levels / amax * 127.0), -128, 127)
    rows, uniq = [], 0
    for r in q:
        u = np.unique(r)
        uniq = max(uniq, len(u))
        rows.append(np.concatenate([u, np.full(nentries - len(u), u[-1])]))
    return np.asarray(rows, np.int8), amax / 127.0, uniq


def quantize(w, bits: int, quantizer: str = "uniform", granularity: str = "channel",
             group_size: int = 0, codebook: str = "tensor", narrow: bool = False,
             mask=None, mu: float = 255.0, refine: int = 2, tol: float = 1e-6,
             hessian: np.ndarray | None = None, damp: float = 0.01) -> QuantizedWeight:
    """Quantize a float (N, K) matrix to b-bit codes + int8 codebook + float32 scales.

    granularity: scale per 'tensor' (one value, stored per row), per 'channel' (row) or per
    'group' of `group_size` inputs (a multiple of 64). codebook: one table per 'tensor' or per
    'channel' (row); uniform always uses the shared identity table. `mask` (bool (N, K),
    False = pruned) excludes weights from fitting; their codes are 0 and they dequantize to 0.
    `refine`: rounds of least-squares scale refit + re-assignment (0 disables).
    `hessian` (G, K, K) input covariance(s) (rows split evenly over the G groups): the final
    codes are chosen with GPTQ-style error feedback (`edgekit.compress.gptq`), not nearest.
    """
    w = np.asarray(w, dtype=np.float32)
    _check_args(w, bits, quantizer, granularity, group_size, codebook, mu)
    n, k = w.shape
    gs = group_size if granularity == "group" else 0
    m = np.ones((n, k), bool) if mask is None else np.asarray(mask, bool)
    if m.shape != (n, k):
        raise ValueError(f"mask shape {m.shape} does not match weight shape {(n, k)}")
    wm = np.where(m, w, 0.0).astype(np.float64)
    s0 = _group_reduce(np.abs(wm), granularity, gs, np.max)
    s0 = np.where(s0 > 0, s0, 1.0)
    s0e = _expand(s0, k, gs)
    nent = 1 << bits

    if quantizer == "uniform":
        half = 1 << (bits - 1)
        table = (np.arange(nent) - half).astype(np.int8)[None, :]
        levels = nent - 1 if narrow else nent
        # Clipping pays off at low bit depths; at 6+ bits only mild clipping is ever chosen.
        ratios = np.linspace(0.35, 1.0, 14) if bits <= 5 else np.linspace(0.7, 1.0, 7)
        scale = _best_clip(wm, m, table, s0 / (half - 1), granularity, gs, 1 if narrow else 0,
                           ratios)
    elif quantizer == "binary":
        table = np.array([[-127, 127]], np.int8)
        scale = _group_reduce(np.abs(wm), granularity, gs, np.sum) / np.maximum(
            _group_reduce(m.astype(np.float64), granularity, gs, np.sum), 1.0) / 127.0
        levels = 2
    elif quantizer == "mulaw":
        lv = mulaw_inverse(np.linspace(-1.0, 1.0, nent), mu)[None, :]
        table, lscale, levels = _int8_table(lv, nent)
        scale = s0 * float(lscale.ravel()[0])
    else:  # lloyd_max
        u = wm / s0e
        wt = np.where(m, s0e * s0e, 0.0)
        lv, _ = lloyd_max_levels(u.reshape(1, -1), nent, wt.reshape(1, -1), tol)
        if codebook == "channel":
            # Rows start from the tensor's levels: Lloyd iterations never raise distortion,
            # so a row's table is never worse than the shared one (quantile init per row of a
            # peaked distribution often lands in a worse local optimum).
            lv, _ = lloyd_max_levels(u, nent, wt, tol, init=lv)
        table, lscale, levels = _int8_table(lv, nent)
        # Per-row tables carry their own level scale; fold it into that row's scales.
        scale = s0 * (lscale if lscale.shape[0] == n else float(lscale.ravel()[0]))

    lo = 1 if (quantizer == "uniform" and narrow) else 0
    codes = _assign(wm, table, scale, gs, lo)
    for _ in range(refine):
        q = dequantize(codes, table, np.ones_like(scale), gs).astype(np.float64)
        q = np.where(m, q, 0.0)
        num = _group_reduce(wm * q, granularity, gs, np.sum)
        den = _group_reduce(q * q, granularity, gs, np.sum)
        ok = (den > 0) & (num >= 0)
        scale = np.where(ok, num / np.where(ok, den, 1.0), scale)
        codes = _assign(wm, table, scale, gs, lo)
    if hessian is not None:
        codes = _gptq(wm, m, table, scale, gs, lo, np.asarray(hessian, np.float64), damp)
    codes = np.where(m, codes, 0).astype(np.uint8)
    return QuantizedWeight(codes=codes, codebook=table.astype(np.int8),
                           scale=scale.astype(np.float32), bits=bits, group_size=gs,
                           quantizer=quantizer, levels=int(levels),
                           mask=None if mask is None else m.copy())


def _gptq(wm, m, table, scale, gs, lo, hessian, damp) -> np.ndarray:
    from edgekit.compress.gptq import gptq_codes

    n, k = wm.shape
    if hessian.ndim != 3 or hessian.shape[1:] != (k, k) or n % hessian.shape[0]:
        raise ValueError(f"hessian of shape {hessian.shape} does not fit weight {(n, k)}")
    se = _expand(scale, k, gs)
    per = n // hessian.shape[0]
    codes = np.zeros((n, k), np.uint8)
    for g in range(hessian.shape[0]):
        r = slice(g * per, (g + 1) * per)
        tab = table if table.shape[0] == 1 else table[r]
        codes[r] = gptq_codes(wm[r], m[r], tab, np.ascontiguousarray(se[r]), lo, hessian[g],
                              damp)
    return codes


def _best_clip(wm, m, table, scale, granularity, gs, lo, ratios):
    """Per scale group, the clipping ratio of the max-|w| scale with the least squared error.

    The least-squares refinement alone is a local search that rarely leaves the max-|w|
    start, which for peaked (Laplacian-like) weights clips far too little.
    """
    best, best_err = scale, None
    for r in ratios:
        cand = scale * r
        q = dequantize(_assign(wm, table, cand, gs, lo), table, cand, gs)
        err = _group_reduce(np.where(m, (q - wm) ** 2, 0.0), granularity, gs, np.sum)
        if best_err is None:
            best, best_err = cand, err
        else:
            better = err < best_err
            best, best_err = np.where(better, cand, best), np.where(better, err, best_err)
    return best


def _assign(wm, table, scale, gs, lo) -> np.ndarray:
    """Codes = nearest codebook entry to w / scale (the table rows are sorted)."""
    n, k = wm.shape
    se = _expand(scale, k, gs)
    v = np.where(se > 0, wm / np.where(se > 0, se, 1.0), 0.0)
    half = table.shape[1] // 2
    if table.shape[0] == 1 and np.array_equal(table[0], np.arange(2 * half) - half):
        # Affine table: nearest entry is plain rounding, far cheaper than a search.
        return (np.clip(np.rint(v), lo - half, half - 1) + half).astype(np.uint8)
    codes = _nearest(v, table[:, lo:].astype(np.float64))
    return (codes.astype(np.int64) + lo).astype(np.uint8)


def _check_args(w, bits, quantizer, granularity, group_size, codebook, mu) -> None:
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"expected a non-empty 2-D weight, got shape {tuple(w.shape)}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weight contains NaN or Inf")
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; expected one of "
                         f"{', '.join(QUANTIZERS)}")
    if quantizer == "uniform" and bits < 2:
        raise ValueError("uniform needs bits >= 2 (its 1-bit grid is {-1, 0}); use 'binary'")
    if quantizer == "binary" and bits != 1:
        raise ValueError(f"binary is 1-bit, got bits={bits}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of "
                         f"{', '.join(GRANULARITIES)}")
    if granularity == "group":
        if not isinstance(group_size, (int, np.integer)) or group_size <= 0 or group_size % 64:
            raise ValueError(f"group_size must be a positive multiple of 64, got {group_size!r}")
    if codebook not in CODEBOOK_SCOPES:
        raise ValueError(f"unknown codebook scope {codebook!r}; expected tensor or channel")
    if not mu > 0:
        raise ValueError(f"mu must be > 0, got {mu!r}")
