// Packed linear kernel, AVX-512 with VBMI/VBMI2 (docs/kernels.md, "AVX2 and VBMI2 variants").
//
// Kept deliberately plain: it was compiled but never executed on the machine it was written
// on (no VBMI/VBMI2 there), so clarity beats speed. What it adds over the VNNI variant:
//   * zero-weight expansion with vpexpandb (maskz_expandloadu: the bitmap word is the mask),
//   * codebook lookups with vpermb (b <= 6) and vpermi2b (b = 7, and both halves of b = 8).
// Exactness as in avx2.cc: activations as int16 (x - x_zp, zero-padded), weights sign-extended
// to int16, vpdpwssd adds pairs of products to int32 lanes without saturation.

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/linear/common.h"
#include "kernels/linear/linear.h"

namespace edgekit::kernels {
namespace {

// The 8W bytes of a plane of width W < 8, in every qword of a register.
template <int W>
inline __m512i broadcast_plane(const uint8_t* p) {
  if constexpr (W == 4) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else if constexpr (W == 2) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    int64_t q;
    std::memcpy(&q, p, 8);
    return _mm512_set1_epi64(q);
  }
}

// Qword q holds codes 8q..8q+7, i.e. segment 8q / (8W) = q / W, found at bit (q / W) * W.
template <int W>
inline __m512i segment_shifts() {
  return _mm512_set_epi64(7 / W * W, 6 / W * W, 5 / W * W, 4 / W * W, 3 / W * W, 2 / W * W, 1 / W * W, 0);
}

// One plane of width W of one block -> its 64 values in code order (docs/format.md §1.3):
// the 8W plane bytes are broadcast and qword q is shifted by the bit offset of its segment.
template <int W>
inline __m512i unpack_plane(const uint8_t* p) {
  if constexpr (W == 8) {
    return _mm512_loadu_si512(p);
  } else {
    return _mm512_and_si512(_mm512_srlv_epi64(broadcast_plane<W>(p), segment_shifts<W>()),
                            _mm512_set1_epi8((1 << W) - 1));
  }
}

// Planes combined; a masked value shifted inside its 16-bit lane never reaches the next byte.
template <int BITS>
inline __m512i unpack_codes(const uint8_t* blk) {
  using P = PlaneSpec<BITS>;
  __m512i c = unpack_plane<P::width(0)>(blk);
  if constexpr (P::count > 1)
    c = _mm512_or_si512(c, _mm512_slli_epi16(unpack_plane<P::width(1)>(blk + P::offset(1)), P::shift(1)));
  if constexpr (P::count > 2)
    c = _mm512_or_si512(c, _mm512_slli_epi16(unpack_plane<P::width(2)>(blk + P::offset(2)), P::shift(2)));
  return c;
}

// Codebook of one row in four 64-entry registers (entries past 2^BITS are zero, never read).
struct Table {
  __m512i t[4];
  void load(const int8_t* cb, int bits) {
    alignas(64) int8_t buf[256] = {0};
    std::memcpy(buf, cb, size_t{1} << bits);
    for (int i = 0; i < 4; ++i) t[i] = _mm512_load_si512(buf + 64 * i);
  }
};

template <int BITS>
inline __m512i lookup(__m512i c, const Table& tb, bool affine) {
  if (affine) return _mm512_sub_epi8(c, _mm512_set1_epi8(static_cast<char>(1 << (BITS - 1))));
  if constexpr (BITS <= 6) {
    return _mm512_permutexvar_epi8(c, tb.t[0]);  // vpermb: index = low 6 bits
  } else if constexpr (BITS == 7) {
    return _mm512_permutex2var_epi8(tb.t[0], c, tb.t[1]);  // vpermi2b: index = low 7 bits
  } else {
    const __m512i lo = _mm512_permutex2var_epi8(tb.t[0], c, tb.t[1]);
    const __m512i hi = _mm512_permutex2var_epi8(tb.t[2], c, tb.t[3]);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), lo, hi);  // bit 7 picks the half
  }
}

template <int BITS>
struct DenseRow {
  Table tb;
  bool affine;
  const uint8_t* p;
  void init(const PackedLinear& w, int n) {
    affine = w.affine;
    if (!affine) tb.load(w.table(n), BITS);
    p = w.codes + static_cast<size_t>(n) * w.nblocks * w.block_bytes();
  }
  bool next(__m512i* wv) {
    *wv = lookup<BITS>(unpack_codes<BITS>(p), tb, affine);
    p += 8 * BITS;
    return true;
  }
};

// The compacted stream is decoded one virtual block at a time into a window holding the
// current and the next virtual block; vpexpandb then reads the popcount(bitmap) next stored
// weights from it and places them at the bitmap's set positions (zero elsewhere).
template <int BITS>
struct SparseRow {
  Table tb;
  bool affine;
  alignas(64) int8_t win[128];
  const uint64_t* bm;
  const uint8_t* vnext;
  const uint8_t* vend;
  int pos;

  void decode_into(int8_t* dst) {
    if (vnext < vend) {
      _mm512_store_si512(dst, lookup<BITS>(unpack_codes<BITS>(vnext), tb, affine));
      vnext += 8 * BITS;
    } else {
      std::memset(dst, 0, 64);  // past the row's end: never selected
    }
  }
  void init(const PackedLinear& w, int n) {
    affine = w.affine;
    if (!affine) tb.load(w.table(n), BITS);
    bm = w.bitmaps + static_cast<size_t>(n) * w.nblocks;
    vnext = sparse_row_codes(w, n);
    vend = sparse_row_codes(w, n + 1);
    decode_into(win);
    decode_into(win + 64);
    pos = 0;
  }
  bool next(__m512i* wv) {
    const uint64_t m = *bm++;
    if (m == 0) return false;
    *wv = _mm512_maskz_expandloadu_epi8(m, win + pos);  // reads popcount(m) bytes, pos < 64
    pos += static_cast<int>(_mm_popcnt_u64(m));
    if (pos >= 64) {
      _mm512_store_si512(win, _mm512_load_si512(win + 64));
      decode_into(win + 64);
      pos -= 64;
    }
    return true;
  }
};

constexpr int kMChunk = 16;  // activation rows fed by one decoded block

template <int BITS, bool SPARSE>
void run(const PackedLinear& w, const int16_t* xs, int M, int32_t* acc, int n0, int n1) {
  using Row = std::conditional_t<SPARSE, SparseRow<BITS>, DenseRow<BITS>>;
  const int gb = group_blocks(w);
  __m512i am[kMChunk];
  for (int m0 = 0; m0 < M; m0 += kMChunk) {
    const int mc = std::min(kMChunk, M - m0);
    for (int n = n0; n < n1; ++n) {
      Row row;
      row.init(w, n);
      for (int g = 0; g < w.ngroups; ++g) {
        for (int m = 0; m < mc; ++m) am[m] = _mm512_setzero_si512();
        for (int b = g * gb; b < std::min(w.nblocks, (g + 1) * gb); ++b) {
          __m512i wv;
          if (!row.next(&wv)) continue;
          const __m512i w0 = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(wv));
          const __m512i w1 = _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(wv, 1));
          const int16_t* xb = xs + static_cast<size_t>(m0) * w.Kpad + static_cast<size_t>(b) * kBlockK;
          for (int m = 0; m < mc; ++m, xb += w.Kpad) {
            am[m] = _mm512_dpwssd_epi32(am[m], _mm512_loadu_si512(xb), w0);
            am[m] = _mm512_dpwssd_epi32(am[m], _mm512_loadu_si512(xb + 32), w1);
          }
        }
        for (int m = 0; m < mc; ++m)
          acc[(static_cast<size_t>(m0 + m) * w.N + n) * w.ngroups + g] = _mm512_reduce_add_epi32(am[m]);
      }
    }
  }
}

template <bool SPARSE>
void run_bits(const PackedLinear& w, const int16_t* xs, int M, int32_t* acc, int n0, int n1) {
  switch (w.bits) {
    case 1: run<1, SPARSE>(w, xs, M, acc, n0, n1); break;
    case 2: run<2, SPARSE>(w, xs, M, acc, n0, n1); break;
    case 3: run<3, SPARSE>(w, xs, M, acc, n0, n1); break;
    case 4: run<4, SPARSE>(w, xs, M, acc, n0, n1); break;
    case 5: run<5, SPARSE>(w, xs, M, acc, n0, n1); break;
    case 6: run<6, SPARSE>(w, xs, M, acc, n0, n1); break;
    case 7: run<7, SPARSE>(w, xs, M, acc, n0, n1); break;
    default: run<8, SPARSE>(w, xs, M, acc, n0, n1); break;
  }
}

size_t scratch_bytes(const PackedLinear& w, int M) {
  return static_cast<size_t>(M) * w.Kpad * sizeof(int16_t) + 64;
}

void accumulate(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp, int32_t* acc, int n0,
                int n1, void* scratch) {
  if (M <= 0 || n0 >= n1) return;
  auto base = reinterpret_cast<uintptr_t>(scratch);
  auto* xs = reinterpret_cast<int16_t*>((base + 63) & ~static_cast<uintptr_t>(63));
  for (int m = 0; m < M; ++m) {
    const int8_t* xr = x + static_cast<size_t>(m) * w.K;
    int16_t* dst = xs + static_cast<size_t>(m) * w.Kpad;
    for (int k = 0; k < w.K; ++k) dst[k] = static_cast<int16_t>(xr[k] - x_zp);
    for (int k = w.K; k < w.Kpad; ++k) dst[k] = 0;  // padding codes contribute nothing
  }
  if (w.sparse) {
    run_bits<true>(w, xs, M, acc, n0, n1);
  } else {
    run_bits<false>(w, xs, M, acc, n0, n1);
  }
}

}  // namespace

// extern: external linkage even where linear.h did not declare it.
extern const LinearVariant linear_avx512vbmi2 = {"avx512vbmi2", "linear_qs8_qc1to8w_1x64__avx512vbmi2",
                                                 scratch_bytes, accumulate};

}  // namespace edgekit::kernels
