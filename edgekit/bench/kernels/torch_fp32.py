"""Peer: torch.nn.functional.linear in fp32 on one thread (the unquantized baseline)."""

from __future__ import annotations

import numpy as np

from edgekit.bench.kernels.cases import Case
from edgekit.bench.kernels.peer import Options, Prepared, close_check

NAME = "torch_fp32"
BITS = (32,)
# fp32 sums of up to 4096 products of |x|,|w| <= 128 round above 2^24; the relative error of
# such sums stays near 1e-7, a layout mistake gives ~1.
REL_TOL = 1e-5


def missing() -> str | None:
    """Why torch cannot run here, or None."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "needs torch (not installed)"
    return None


def prepare(case: Case, opts: Options) -> Prepared:
    """fp32 copies of the integer data; each timed call is one F.linear in inference mode."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    x = torch.from_numpy(case.x.astype(np.float32))
    w = torch.from_numpy(case.w.astype(np.float32))
    last: list = [None]

    def call() -> None:
        with torch.inference_mode():
            last[0] = F.linear(x, w)

    return Prepared(call=call, output=lambda: last[0].numpy().copy(),
                    weight_bytes=4 * case.N * case.K, extra={"threads": torch.get_num_threads()})


def check(y: np.ndarray, case: Case, extra: dict | None = None) -> str | None:
    """Close to the exact integer product (fp32 rounding only)."""
    return close_check(y, case, REL_TOL)
