"""CSP: sparsification via compressed sensing during training (METHODS.md §5).

    csp = CSP(model, sparsity=0.5, begin=0, end=300, every=25)
    train(model, ..., callbacks=[csp])

Edgekit formulation. Every `every` steps (the schedule of `gradual.cubic_sparsity`, so CSP and
gradual magnitude pruning are compared at equal sparsity on the same steps), each weight
matrix W is replaced by the result of `iters` ISTA iterations on

    min_Ŵ ||W - Ŵ||²_F + α ||Ŵ||₁,    Ŵ ← soft(Ŵ - 2η(Ŵ - W), ηα),  Ŵ₀ = W,

with α set per row (scope "row") or per tensor so that the problem's minimiser, soft(W, α/2),
has exactly the scheduled sparsity s(t) (α/2 = the s(t)-quantile of |W|). The support of the
last iterate, completed or cut to exactly floor(s(t)·K) zeros by |Ŵ| (ties by |W|), becomes
the mask; with `shrink` the surviving weights keep the iterate's values (the sparsity-inducing
step), otherwise their old values. Training then continues on the masked weights (the
compression-error-reduction step).

What this is, stated plainly: with the identity sensing operator written in METHODS §5 the
minimiser's support is the magnitude support, so the masks CSP picks at a given step are those
magnitude pruning would pick from the same weights. What differs is the trajectory: each CSP
update soft-thresholds the survivors by up to α/2, an L1 shrinkage applied inside training that
moves more weights towards zero before the next, sparser, step. `eta` < 0.5 makes the
iterations matter (η = 0.5 reaches the minimiser in one); `iters` and `eta` are the knobs to
align with the paper once its exact step is known.
"""

from __future__ import annotations

import numpy as np

from edgekit.compress.prune.gradual import GradualPruner


def soft_threshold(x: np.ndarray, t) -> np.ndarray:
    """sign(x) · max(|x| - t, 0)."""
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def ista(w: np.ndarray, alpha, iters: int, eta: float) -> np.ndarray:
    """`iters` ISTA iterations on ||W - Ŵ||² + α||Ŵ||₁ from Ŵ₀ = W (α scalar or per row)."""
    x = w.astype(np.float64)
    for _ in range(iters):
        x = soft_threshold(x - 2.0 * eta * (x - w), eta * alpha)
    return x


def csp_alpha(w: np.ndarray, sparsity: float, scope: str = "row"):
    """α such that soft(W, α/2) has the target sparsity: 2 × the s-quantile of |W|."""
    a = np.abs(w.astype(np.float64))
    if scope == "tensor":
        flat = np.sort(a.ravel())
        drop = int(np.floor(sparsity * flat.size))
        return 2.0 * (flat[drop - 1] if drop else 0.0)
    rows = np.sort(a, axis=1)
    drop = int(np.floor(sparsity * a.shape[1]))
    return 2.0 * (rows[:, drop - 1:drop] if drop else np.zeros((a.shape[0], 1)))


def exact_support(x: np.ndarray, w: np.ndarray, sparsity: float, scope: str) -> np.ndarray:
    """Mask keeping the largest |x| (ties by |w|) with exactly floor(s·K) (or s·N·K) zeros."""
    key = np.abs(x) + 1e-12 * np.abs(w) / (1.0 + np.abs(w).max())
    if scope == "tensor":
        flat = np.ones(x.size, bool)
        drop = int(np.floor(sparsity * x.size))
        if drop:
            flat[np.argsort(key.ravel(), kind="stable")[:drop]] = False
        return flat.reshape(x.shape)
    mask = np.ones(x.shape, bool)
    drop = int(np.floor(sparsity * x.shape[1]))
    if drop:
        np.put_along_axis(mask, np.argsort(key, axis=1, kind="stable")[:, :drop], False, 1)
    return mask


class CSP(GradualPruner):
    """Compressed-sensing pruning (see module docstring). Knobs beyond the schedule:
    `iters` (ISTA iterations per update, default 5), `eta` (step, default 0.25), `shrink`."""

    def __init__(self, model, sparsity: float, begin: int = 0, end: int = 1000,
                 every: int = 50, scope: str = "row", iters: int = 5, eta: float = 0.25,
                 shrink: bool = True, **kw):
        from edgekit.compress.qat.common import check_knob

        super().__init__(model, sparsity, begin, end, every, scope, **kw)
        self.iters = int(check_knob("iters", iters, 1, integer=True))
        self.eta = float(check_knob("eta", eta, 1e-6, 0.5))
        self.shrink = bool(shrink)

    def new_mask(self, target, sparsity: float) -> np.ndarray:
        w = target.w2d()
        x = ista(w, csp_alpha(w, sparsity, self.scope), self.iters, self.eta)
        mask = exact_support(x, w, sparsity, self.scope)
        if self.shrink:
            target.write_2d(np.where(mask, x, 0.0).astype(np.float32))
        return mask
