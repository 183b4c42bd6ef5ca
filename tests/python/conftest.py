"""Suite-wide settings.

One intra-op thread for torch: on a 2-core CI machine the default thread pool oversubscribes
the cores and makes small-model tests an order of magnitude slower, for no gain in coverage.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch
except ImportError:  # torch is only needed by the model/compress tests
    torch = None
else:
    torch.set_num_threads(1)
