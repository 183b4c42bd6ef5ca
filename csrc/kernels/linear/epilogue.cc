// Portable epilogues: see epilogue.h for the exact definitions.
#include "kernels/linear/epilogue.h"

#include <cstdint>
#include <limits>

namespace edgekit::kernels {
namespace {

// gemmlowp fixed-point primitives behind epilogue_q8.
int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min()) return std::numeric_limits<int32_t>::max();
  const int64_t ab = int64_t{a} * b;
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));  // C++ division truncates
}

int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t multiply_by_quantized_multiplier(int32_t x, int32_t mult, int shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  // TFLite computes x * (1 << left) in int32; saturate instead of relying on overflow.
  int64_t xl = int64_t{x} * (int64_t{1} << left);
  if (xl > std::numeric_limits<int32_t>::max()) xl = std::numeric_limits<int32_t>::max();
  if (xl < std::numeric_limits<int32_t>::min()) xl = std::numeric_limits<int32_t>::min();
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(static_cast<int32_t>(xl), mult), right);
}

}  // namespace

void epilogue_sum_groups(const PackedLinear& w, const int32_t* acc, int M, int32_t* out) {
  const size_t rows = static_cast<size_t>(M) * w.N;
  for (size_t i = 0; i < rows; ++i) {
    uint32_t s = 0;
    for (int g = 0; g < w.ngroups; ++g) s += static_cast<uint32_t>(acc[i * w.ngroups + g]);
    out[i] = static_cast<int32_t>(s);
  }
}

void epilogue_f32_rows(const PackedLinear& w, const int32_t* acc, int n0, int n1, float x_scale,
                       const float* bias, float* out) {
  if (w.ngroups == 1) {
    // One group: the same arithmetic as below (0.0f + ..., then * x_scale, then + bias) in a
    // branch-free loop the compiler vectorizes; -ffp-contract=off keeps it bit-exact.
    if (bias) {
      for (int n = n0; n < n1; ++n)
        out[n] = (0.0f + w.scales[n] * static_cast<float>(acc[n])) * x_scale + bias[n];
    } else {
      for (int n = n0; n < n1; ++n)
        out[n] = (0.0f + w.scales[n] * static_cast<float>(acc[n])) * x_scale;
    }
    return;
  }
  // Several groups: eight rows at a time, each lane summing its own groups in order (the
  // same arithmetic as the loop below), so eight independent add chains overlap instead of
  // one row's chain stalling on the previous add.
  const int G = w.ngroups;
  int n = n0;
  for (; n + 8 <= n1; n += 8) {
    float y[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const float* sc = w.scales + static_cast<size_t>(n) * G;
    const int32_t* a = acc + static_cast<size_t>(n) * G;
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < 8; ++j) y[j] += sc[j * G + g] * static_cast<float>(a[j * G + g]);
    for (int j = 0; j < 8; ++j) {
      float v = y[j] * x_scale;
      if (bias) v += bias[n + j];
      out[n + j] = v;
    }
  }
  for (; n < n1; ++n) {
    const float* sc = w.scales + static_cast<size_t>(n) * w.ngroups;
    const int32_t* a = acc + static_cast<size_t>(n) * w.ngroups;
    float y = 0.0f;
    for (int g = 0; g < w.ngroups; ++g) y += sc[g] * static_cast<float>(a[g]);
    y *= x_scale;
    if (bias) y += bias[n];
    out[n] = y;
  }
}

void epilogue_f32(const PackedLinear& w, const int32_t* acc, int M, float x_scale,
                  const float* bias, float* out) {
  const size_t row = static_cast<size_t>(w.N) * w.ngroups;
  for (int m = 0; m < M; ++m)
    epilogue_f32_rows(w, acc + m * row, 0, w.N, x_scale, bias, out + static_cast<size_t>(m) * w.N);
}

void epilogue_q8(const PackedLinear& w, const int32_t* acc, int M, const int32_t* mult,
                 const int32_t* shift, int32_t out_zp, const int32_t* bias, int8_t* out) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < w.N; ++n) {
      const size_t i = static_cast<size_t>(m) * w.N + n;
      uint32_t a = static_cast<uint32_t>(acc[i]);
      if (bias) a += static_cast<uint32_t>(bias[n]);
      // int64: a saturated product near INT32_MAX plus out_zp must clamp, not wrap.
      const int64_t v = int64_t{multiply_by_quantized_multiplier(static_cast<int32_t>(a), mult[n], shift[n])} + out_zp;
      out[i] = static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v));
    }
}

}  // namespace edgekit::kernels
