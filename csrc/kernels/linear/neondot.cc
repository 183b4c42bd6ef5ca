// linear, ARMv8.2 NEON with the dot-product extension (sdot; Cortex-A55/A76 class, Android).
//
// x - x_zp spans [-255, 255] and does not fit int8, so sdot runs on the raw int8 x and the
// zero point is corrected per (row, group) afterwards:
//
//   sum_k (x[m,k] - x_zp) * w[n,k]  =  sum_k x[m,k] * w[n,k]  -  x_zp * sum_k w[n,k]
//
// with both sums over the same k < K of group g. sdot computes each 4-term int8 dot product
// exactly in int32 (no saturation), so the first sum is exact; the second is PackedLinear's
// wsum[n, g], derived exactly at load time (masked weights count 0). The identity holds in
// the integers, and int32 wrap-around is arithmetic mod 2^32 on both sides, so the result
// equals linear_ref's accumulator bit for bit.
//
// Padding: dense blocks decode padding codes (k >= K) to table[0], which need not be 0. The
// activations are zero there (scratch copy), which removes them from the first sum; wsum
// never includes them.
#include <cstring>

#include "kernels/linear/neon_common.h"

namespace edgekit::kernels {
namespace {

struct DotMac {
  const PackedLinear* w;
  const int8_t* xs;   // M x Kpad copy of x, zero past K
  int M, ngroups;
  int32_t x_zp;
  int32x4_t* part;    // M partial sums of x * w
  int32_t* acc;

  void begin_row(int) {
    for (int m = 0; m < M; ++m) part[m] = vdupq_n_s32(0);
  }
  void block(const int8x16_t wv[4], int blk) {
    const int8_t* xb = xs + static_cast<size_t>(blk) * kBlockK;
    const size_t kpad = static_cast<size_t>(w->Kpad);
    for (int m = 0; m < M; ++m) {
      const int8_t* xp = xb + m * kpad;
      int32x4_t a0 = part[m], a1 = vdupq_n_s32(0);
      a0 = vdotq_s32(a0, wv[0], vld1q_s8(xp));
      a1 = vdotq_s32(a1, wv[1], vld1q_s8(xp + 16));
      a0 = vdotq_s32(a0, wv[2], vld1q_s8(xp + 32));
      a1 = vdotq_s32(a1, wv[3], vld1q_s8(xp + 48));
      part[m] = vaddq_s32(a0, a1);
    }
  }
  void end_group(int n, int g) {
    const size_t N = static_cast<size_t>(w->N);
    const int32_t ws = w->wsum[static_cast<size_t>(n) * ngroups + g];
    // Unsigned arithmetic: the mod-2^32 identity above, without signed-overflow UB.
    const uint32_t corr = static_cast<uint32_t>(x_zp) * static_cast<uint32_t>(ws);
    for (int m = 0; m < M; ++m) {
      const uint32_t dot = static_cast<uint32_t>(vaddvq_s32(part[m]));
      acc[(m * N + n) * ngroups + g] = static_cast<int32_t>(dot - corr);
      part[m] = vdupq_n_s32(0);
    }
  }
};

size_t neondot_scratch_bytes(const PackedLinear& w, int M) {
  const size_t m = static_cast<size_t>(M > 0 ? M : 0);
  return 64 + align64(m * w.Kpad) + align64(m * sizeof(int32x4_t));
}

void neondot_accumulate(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp,
                        int32_t* acc, int n0, int n1, void* scratch) {
  if (M <= 0 || n0 >= n1) return;
  char* s = align64(scratch);
  int8_t* xs = reinterpret_cast<int8_t*>(s);
  int32x4_t* part =
      reinterpret_cast<int32x4_t*>(s + align64(static_cast<size_t>(M) * w.Kpad));
  for (int m = 0; m < M; ++m) {
    int8_t* dst = xs + static_cast<size_t>(m) * w.Kpad;
    std::memcpy(dst, x + static_cast<size_t>(m) * w.K, static_cast<size_t>(w.K));
    std::memset(dst + w.K, 0, static_cast<size_t>(w.Kpad - w.K));
  }
  DotMac mac{&w, xs, M, w.ngroups, x_zp, part, acc};
  walk(w, n0, n1, mac);
}

}  // namespace

extern const LinearVariant linear_neondot = {
    "neondot",
    "linear_qs8_qc1to8w_1x64__neondot",
    neondot_scratch_bytes,
    neondot_accumulate,
};

}  // namespace edgekit::kernels
