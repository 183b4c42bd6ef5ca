// linear, ARMv8.0 NEON (Raspberry Pi 4 / Cortex-A72: no sdot).
//
// Exactness: activations are prepared once per call as int16 x - x_zp (in [-255, 255]) with
// zero padding past K; weights are widened to int16; smlal/smlal2 multiply int16 x int16
// into int32 lanes. Every product |x - x_zp| * |w| <= 255 * 128 fits, nothing saturates, and
// the int32 sums are the reference's sums in a different order (integer addition is
// associative), so the accumulators equal linear_ref bit for bit.
//
// Loop order: each block of a row is decoded once (neon_common.h) and then multiplied with
// all M activation rows; per-row int32x4 partial sums live in scratch between blocks. Decode
// work is therefore independent of M, which matters for M = 1 (streaming) and M = T (batch).
#include "kernels/linear/neon_common.h"

namespace edgekit::kernels {
namespace {

struct NeonMac {
  const PackedLinear* w;
  const int16_t* xs;  // M x Kpad, x - x_zp, zero past K
  int M, ngroups;
  int32x4_t* part;    // M partial sums
  int32_t* acc;

  void begin_row(int) {
    for (int m = 0; m < M; ++m) part[m] = vdupq_n_s32(0);
  }
  void block(const int8x16_t wv[4], int blk) {
    int16x8_t w16[8];
    for (int i = 0; i < 4; ++i) {
      w16[2 * i] = vmovl_s8(vget_low_s8(wv[i]));
      w16[2 * i + 1] = vmovl_high_s8(wv[i]);
    }
    const size_t kpad = static_cast<size_t>(w->Kpad);
    const int16_t* xb = xs + static_cast<size_t>(blk) * kBlockK;
    for (int m = 0; m < M; ++m) {
      const int16_t* xp = xb + m * kpad;
      // Two chains so consecutive smlal do not wait on each other.
      int32x4_t a0 = part[m], a1 = vdupq_n_s32(0);
      for (int j = 0; j < 8; ++j) {
        const int16x8_t xv = vld1q_s16(xp + 8 * j);
        a0 = vmlal_s16(a0, vget_low_s16(w16[j]), vget_low_s16(xv));
        a1 = vmlal_high_s16(a1, w16[j], xv);
      }
      part[m] = vaddq_s32(a0, a1);
    }
  }
  void end_group(int n, int g) {
    const size_t N = static_cast<size_t>(w->N);
    for (int m = 0; m < M; ++m) {
      acc[(m * N + n) * ngroups + g] = vaddvq_s32(part[m]);
      part[m] = vdupq_n_s32(0);
    }
  }
};

size_t neon_scratch_bytes(const PackedLinear& w, int M) {
  const size_t m = static_cast<size_t>(M > 0 ? M : 0);
  return 64 + align64(m * w.Kpad * sizeof(int16_t)) + align64(m * sizeof(int32x4_t));
}

void neon_accumulate(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp, int32_t* acc,
                     int n0, int n1, void* scratch) {
  if (M <= 0 || n0 >= n1) return;
  char* s = align64(scratch);
  int16_t* xs = reinterpret_cast<int16_t*>(s);
  int32x4_t* part = reinterpret_cast<int32x4_t*>(
      s + align64(static_cast<size_t>(M) * w.Kpad * sizeof(int16_t)));
  const int16x8_t zp = vdupq_n_s16(static_cast<int16_t>(x_zp));
  for (int m = 0; m < M; ++m) {
    const int8_t* xr = x + static_cast<size_t>(m) * w.K;
    int16_t* dst = xs + static_cast<size_t>(m) * w.Kpad;
    int k = 0;
    for (; k + 8 <= w.K; k += 8) vst1q_s16(dst + k, vsubq_s16(vmovl_s8(vld1_s8(xr + k)), zp));
    for (; k < w.K; ++k) dst[k] = static_cast<int16_t>(xr[k] - x_zp);
    // Padding codes decode to table[0], which need not be 0: a zero activation cancels them.
    for (; k < w.Kpad; ++k) dst[k] = 0;
  }
  NeonMac mac{&w, xs, M, w.ngroups, part, acc};
  walk(w, n0, n1, mac);
}

}  // namespace

extern const LinearVariant linear_neon = {
    "neon",
    "linear_qs8_qc1to8w_1x64__neon",
    neon_scratch_bytes,
    neon_accumulate,
};

}  // namespace edgekit::kernels
