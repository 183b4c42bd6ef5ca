// Epilogues of the linear family, shared by every variant (so integer and float outputs are
// bit-exact across ISAs once the accumulators are). Inputs are the variant's accumulators
// acc[(m * N + n) * ngroups + g].
#pragma once
#include <cstdint>

#include "format/packed.h"

namespace edgekit::kernels {

// out[m, n] = sum_g acc[m, n, g]  (modulo 2^32).
void epilogue_sum_groups(const PackedLinear& w, const int32_t* acc, int M, int32_t* out);

// out[m, n] = x_scale * (sum_g scale[n, g] * float(acc[m, n, g])) + bias[n], evaluated in
// float32 in exactly this order (bias may be null).
void epilogue_f32(const PackedLinear& w, const int32_t* acc, int M, float x_scale,
                  const float* bias, float* out);

// epilogue_f32 for one activation row (acc and out point at that row) and weight rows
// [n0, n1) only — the same arithmetic, so a caller splitting rows gets identical results.
void epilogue_f32_rows(const PackedLinear& w, const int32_t* acc, int n0, int n1, float x_scale,
                       const float* bias, float* out);

// TFLite/gemmlowp per-channel requantization of a single-group accumulator:
// out = clamp(MultiplyByQuantizedMultiplier(acc + bias[n], mult[n], shift[n]) + out_zp).
// shift > 0 is a left shift; acc + bias wraps modulo 2^32 like an int32 add in TFLite.
void epilogue_q8(const PackedLinear& w, const int32_t* acc, int M, const int32_t* mult,
                 const int32_t* shift, int32_t out_zp, const int32_t* bias, int8_t* out);

}  // namespace edgekit::kernels
