"""Int8 accelerator simulator (docs/sim.md): bit-exact functional runs through the runtime's
reference kernels plus a deterministic per-layer cost model driven by a device profile."""
