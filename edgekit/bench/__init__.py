"""Benchmarks: kernel-level comparisons against peer runtimes (`edgekit.bench.kernels`)."""
