"""Compression: codebook quantizers, activation calibration, pruning, recipes, reports.

    from edgekit.compress import compress, load_recipe, report, print_report
    small = compress(model, "int4", calib=batches)     # a compressed deep copy
    print_report(report(small, model, calib=batches))
    layer.packed_args()                                 # kwargs for edgekit.kernels.pack

See docs/compression.md.
"""

from edgekit.compress.calibrate import ACT_METHODS, ActObserver
from edgekit.compress.layers import (QUANTIZABLE, QuantConv1d, QuantConvTranspose1d, QuantLayer,
                                     QuantLinear, QuantLSTM, QuantMatrix)
from edgekit.compress.pipeline import compress, quantize_module
from edgekit.compress.prune import PRUNERS, magnitude_mask, nm_mask, wanda_mask
from edgekit.compress.quantizers import (GRANULARITIES, QUANTIZERS, QuantizedWeight, dequantize,
                                         quantize)
from edgekit.compress.recipe import (LayerSpec, Recipe, RecipeError, builtin_recipes,
                                     load_recipe, parse_recipe)
from edgekit.compress.report import print_report, report, snr_db
from edgekit.compress.storage import packed_nbytes

__all__ = [
    "ACT_METHODS", "ActObserver", "GRANULARITIES", "LayerSpec", "PRUNERS", "QUANTIZABLE",
    "QUANTIZERS", "QuantConv1d", "QuantConvTranspose1d", "QuantLSTM", "QuantLayer",
    "QuantLinear", "QuantMatrix", "QuantizedWeight", "Recipe", "RecipeError",
    "builtin_recipes", "compress", "dequantize", "load_recipe", "magnitude_mask", "nm_mask",
    "packed_nbytes", "parse_recipe", "print_report", "quantize", "quantize_module", "report",
    "snr_db", "wanda_mask",
]
