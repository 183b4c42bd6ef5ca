"""Activation calibration: int8 input ranges for quantized layers (min-max, percentile, MSE).

An `ActObserver` sees a layer's inputs during calibration forwards (registered as a forward
pre-hook by the pipeline) and picks the range [lo, hi] that `QuantLayer.set_activation_range`
turns into an asymmetric int8 scale / zero point:

* ``minmax``      the observed extremes;
* ``percentile``  the `percentile`-th / (100 - percentile)-th percentiles (clips outliers);
* ``mse``         the range, among shrinkings of the min-max range, whose int8 fake-quant
  has the least squared error on the observed values.

Percentile and MSE work on a bounded, evenly strided sample of the values (at most
`max_samples` per call) so calibration memory does not grow with the data.
"""

from __future__ import annotations

import numpy as np
import torch

ACT_METHODS = ("minmax", "percentile", "mse")


class ActObserver:
    """Collects one layer's input statistics and computes its int8 range."""

    def __init__(self, method: str = "minmax", percentile: float = 99.99,
                 max_samples: int = 1 << 18):
        if method not in ACT_METHODS:
            raise ValueError(f"unknown activation calibration {method!r}; expected one of "
                             f"{', '.join(ACT_METHODS)}")
        if not 50.0 < float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
        self.method = method
        self.percentile = float(percentile)
        self.max_samples = max_samples
        self.lo, self.hi = np.inf, -np.inf
        self.samples: list[np.ndarray] = []

    def update(self, x: torch.Tensor) -> None:
        """Record one input tensor."""
        v = x.detach().float().reshape(-1)
        if v.numel() == 0:
            return
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        if self.method != "minmax":
            step = max(1, v.numel() // self.max_samples)
            self.samples.append(v[::step].numpy().copy())

    def range(self) -> tuple[float, float]:
        """The chosen [lo, hi] (raises ValueError when nothing was observed)."""
        if not np.isfinite(self.lo):
            raise ValueError("activation calibration saw no input for this layer")
        if self.method == "minmax":
            return self.lo, self.hi
        v = np.concatenate(self.samples).astype(np.float64)
        if self.method == "percentile":
            return (float(np.percentile(v, 100.0 - self.percentile)),
                    float(np.percentile(v, self.percentile)))
        return _mse_range(v, self.lo, self.hi)


def int8_grid(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 scale and zero point for [lo, hi] (widened to contain 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-12)
    return scale, int(np.clip(np.round(-128.0 - lo / scale), -128, 127))


def fake_quant_np(v: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """Round onto the int8 grid and back, like torch.fake_quantize_per_tensor_affine."""
    return (np.clip(np.round(v / scale) + zp, -128, 127) - zp) * scale


def _mse_range(v: np.ndarray, lo: float, hi: float, steps: int = 64) -> tuple[float, float]:
    """Shrink [lo, hi] towards 0 by a common factor; keep the factor with least error."""
    best, best_err = (lo, hi), np.inf
    for r in np.linspace(1.0, 0.2, steps):
        s, zp = int8_grid(lo * r, hi * r)
        err = float(np.mean((fake_quant_np(v, s, zp) - v) ** 2))
        if err < best_err:
            best, best_err = (lo * r, hi * r), err
    return best
