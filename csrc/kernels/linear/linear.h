// Kernel family "linear": int8 activations x packed 1..8-bit weights -> int32.
//
// Each ISA file (ref.cc, avx2.cc, avx512.cc, avx512vbmi2.cc, neon.cc, neondot.cc) defines one
// LinearVariant. A variant only produces int32 accumulators per (m, n, group); the epilogues
// (sum of groups, float output, requantization to int8) are portable code shared by all
// variants (epilogue.cc), so every variant is bit-exact with the reference by construction
// there and tests compare the accumulators.
#pragma once
#include <cstddef>
#include <cstdint>

#include "format/packed.h"

namespace edgekit::kernels {

struct LinearVariant {
  const char* isa;    // "ref", "avx2", "avx512", "avx512vbmi2", "neon", "neondot"
  const char* name;   // full kernel name per csrc/kernels/README.md
  // Bytes of scratch the variant needs for M activation rows (prepared activations, etc.).
  size_t (*scratch_bytes)(const PackedLinear& w, int M);
  // acc[(m * N + n) * ngroups + g] = sum_{k in group g} (x[m,k] - x_zp) * w[n,k]
  // for rows n in [n0, n1) only; x is (M, K) row-major int8; x_zp in [-128, 127].
  void (*accumulate)(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp,
                     int32_t* acc, int n0, int n1, void* scratch);
};

// Defined in each ISA file; declared for the dispatch table.
extern const LinearVariant linear_ref;
#if defined(EDGEKIT_HAVE_AVX2)
extern const LinearVariant linear_avx2;
#endif
#if defined(EDGEKIT_HAVE_AVX512)
extern const LinearVariant linear_avx512;
#endif
#if defined(EDGEKIT_HAVE_AVX512VBMI2)
extern const LinearVariant linear_avx512vbmi2;
#endif
#if defined(EDGEKIT_HAVE_NEON)
extern const LinearVariant linear_neon;
#endif
#if defined(EDGEKIT_HAVE_NEONDOT)
extern const LinearVariant linear_neondot;
#endif

}  // namespace edgekit::kernels
