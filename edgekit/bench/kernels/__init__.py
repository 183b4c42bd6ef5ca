"""`edgekit bench-kernels`: packed linear kernels vs onnxruntime, LiteRT and torch.

Modules: `cases` (shapes, shared random data, integer reference), `timing`, one module per
implementation (`edgekit_impl`, `ort_matmulinteger`, `ort_matmulnbits`, `litert_fc`,
`torch_fp32`), `runner` (grid, checks, records) and `table` (ratios, targets, output).
"""
