// linear, AVX-512 BW + VNNI. Design, exactness arguments and measurements: docs/kernels.md.
//
// Paths, chosen per matrix:
//  * affine dense: vpdpbusd(acc, codes_u8, x_s8) straight on the decoded codes (no table
//    lookup), then acc - 2^(b-1) * sum_x[m,g] - x_zp * wsum[n,g]; single-plane widths
//    1/2/4 skip the decode shift too ("scaled segments").
//  * table dense / sparse: w = codebook[code] (vpshufb tables, or a subtract for affine
//    b >= 5), vpdpbusd(acc, x ^ 0x80, w), then acc - (128 + x_zp) * wsum[n,g]. Sparse blocks
//    are expanded in registers from the row's decoded compacted stream.
// vpdpbusd (not vpdpbusds) wraps modulo 2^32 like the reference, and u8 x s8 products
// summed in fours never saturate an int32 lane, so every path is exact.
// Rows are processed 4 at a time (8 for one affine activation row), activation rows up to
// 4 at a time, so each decoded block feeds up to 16 vpdpbusd.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/linear/common.h"
#include "kernels/linear/linear.h"

namespace edgekit::kernels {
namespace {

constexpr int NT = 4;

// Rotate counts for a broadcast plane of width W whose values go to bit `sh` of the code:
// qword q of the register holds segment q / W (docs/format.md §1.3).
template <int W, int SH>
struct SegCounts {
  alignas(64) static constexpr int64_t v[8] = {
      ((0 / W) * W - SH) & 63, ((1 / W) * W - SH) & 63, ((2 / W) * W - SH) & 63, ((3 / W) * W - SH) & 63,
      ((4 / W) * W - SH) & 63, ((5 / W) * W - SH) & 63, ((6 / W) * W - SH) & 63, ((7 / W) * W - SH) & 63};
};

template <int W>
inline __m512i bcast_plane(const uint8_t* p) {
  if constexpr (W == 8) {
    return _mm512_loadu_si512(p);
  } else if constexpr (W == 4) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else if constexpr (W == 2) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    int64_t v;
    std::memcpy(&v, p, 8);
    return _mm512_set1_epi64(v);
  }
}

// The 64 codes of one block in natural order, one byte each.
template <int BITS>
inline __m512i decode_codes(const uint8_t* blk) {
  using P = PlaneSpec<BITS>;
  constexpr int w0 = P::width(0);
  __m512i c;
  if constexpr (w0 == 8) {
    c = _mm512_loadu_si512(blk);
  } else {
    const __m512i cnt = _mm512_load_si512(SegCounts<w0, 0>::v);
    c = _mm512_and_si512(_mm512_srlv_epi64(bcast_plane<w0>(blk), cnt), _mm512_set1_epi8((1 << w0) - 1));
  }
  if constexpr (P::count > 1) {
    constexpr int w1 = P::width(1), s1 = P::shift(1);
    const __m512i v = _mm512_rorv_epi64(bcast_plane<w1>(blk + P::offset(1)), _mm512_load_si512(SegCounts<w1, s1>::v));
    c = _mm512_ternarylogic_epi32(c, v, _mm512_set1_epi8(static_cast<char>(((1 << w1) - 1) << s1)), 0xF8);  // c | (v & m)
  }
  if constexpr (P::count > 2) {
    constexpr int w2 = P::width(2), s2 = P::shift(2);
    const __m512i v = _mm512_rorv_epi64(bcast_plane<w2>(blk + P::offset(2)), _mm512_load_si512(SegCounts<w2, s2>::v));
    c = _mm512_ternarylogic_epi32(c, v, _mm512_set1_epi8(static_cast<char>(((1 << w2) - 1) << s2)), 0xF8);
  }
  return c;
}

// acc += dot4(u8 a, s8 b) per dword, in place. Inline asm because GCC 12 otherwise copies
// every loop-carried accumulator twice per iteration (the builtin's tied operand), which
// made the M = 1 loop front-end bound.
inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "vm"(b));
}

// Codebook lookup of decoded codes for one row (table = padded_table(n)).
template <int BITS>
inline __m512i lookup(__m512i c, const int8_t* table, bool affine) {
  if constexpr (BITS <= 4) {
    (void)affine;
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table))), c);
  } else {
    if (affine) return _mm512_sub_epi8(c, _mm512_set1_epi8(static_cast<char>(1 << (BITS - 1))));
    // 16-entry lookups on the low nibble, each one merged where the high bits select it.
    const __m512i lo = _mm512_and_si512(c, _mm512_set1_epi8(0x0F));
    const __m512i hi = _mm512_and_si512(c, _mm512_set1_epi8(static_cast<char>(0xF0)));
    __m512i w = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table))), lo);
    for (int j = 1; j < (1 << (BITS - 4)); ++j) {
      const __mmask64 k = _mm512_cmpeq_epi8_mask(hi, _mm512_set1_epi8(static_cast<char>(j << 4)));
      const __m512i t = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table + 16 * j)));
      w = _mm512_mask_shuffle_epi8(w, k, t, lo);
    }
    return w;
  }
}

// Prepared activations, carved out of the caller's scratch.
struct Prep {
  int Kpad;
  uint8_t* xu;  // (M, Kpad): x ^ 0x80, zero padding (contributes 0 to any dot product)
  int8_t* xs;   // (M, Kpad): x, zero padding
  int32_t* sx;  // (M, ngroups): sum of x over the group (affine path correction)
  int8_t* sw;   // sparse: NT rows x (Kpad + 64) decoded compacted weights of one row tile
};

size_t align64(size_t v) { return (v + 63) & ~size_t{63}; }

size_t avx512_scratch(const PackedLinear& w, int M) {
  return 2 * align64(static_cast<size_t>(M) * w.Kpad) + align64(static_cast<size_t>(M) * w.ngroups * 4) +
         (w.sparse ? static_cast<size_t>(NT) * (w.Kpad + 64) : 0) + 64;
}

Prep prepare(const PackedLinear& w, const int8_t* x, int M, void* scratch) {
  auto* base = static_cast<uint8_t*>(scratch);
  const size_t xbytes = align64(static_cast<size_t>(M) * w.Kpad);
  Prep p{w.Kpad, base, reinterpret_cast<int8_t*>(base + xbytes),
         reinterpret_cast<int32_t*>(base + 2 * xbytes),
         reinterpret_cast<int8_t*>(base + 2 * xbytes + align64(static_cast<size_t>(M) * w.ngroups * 4))};
  const int gb = group_blocks(w);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80)), ones = _mm512_set1_epi8(1);
  for (int m = 0; m < M; ++m) {
    const int8_t* xr = x + static_cast<size_t>(m) * w.K;
    uint8_t* xu = p.xu + static_cast<size_t>(m) * w.Kpad;
    int8_t* xs = p.xs + static_cast<size_t>(m) * w.Kpad;
    for (int g = 0; g < w.ngroups; ++g) {
      __m512i s = _mm512_setzero_si512();
      for (int b = g * gb; b < std::min((g + 1) * gb, w.nblocks); ++b) {
        const int valid = std::min(64, w.K - 64 * b);
        const __mmask64 k = valid == 64 ? ~__mmask64{0} : (__mmask64{1} << valid) - 1;
        const __m512i v = _mm512_maskz_loadu_epi8(k, xr + 64 * b);
        _mm512_store_si512(xs + 64 * b, v);
        _mm512_store_si512(xu + 64 * b, _mm512_maskz_mov_epi8(k, _mm512_xor_si512(v, flip)));
        s = _mm512_dpbusd_epi32(s, ones, v);
      }
      p.sx[m * w.ngroups + g] = _mm512_reduce_add_epi32(s);
    }
  }
  return p;
}

// Horizontal sums of four accumulators at once: [sum(a0), sum(a1), sum(a2), sum(a3)].
inline __m128i reduce4(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
  const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
  const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
  const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
  const __m256i v = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64(u, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

// acc[m, n .. n+3] = sums - (hs + k * wsum[n .. n+3]) for one group and a full tile, where
// the 4 outputs of an activation row are contiguous: vector corrections and one store
// instead of 4 scalar index computations (GCC reloads w.N/w.ngroups after every int32
// store, since they may alias acc), which cost about as much as a K = 1024 row tile.
inline void store_corrected4(int32_t* dst, __m128i sums, const int32_t* wsum, int32_t hs, int32_t k) {
  const __m128i ws = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wsum));
  const __m128i corr = _mm_add_epi32(_mm_set1_epi32(hs), _mm_mullo_epi32(ws, _mm_set1_epi32(k)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_sub_epi32(sums, corr));
}


// Scaled segments (affine, single plane of width W < 8): the broadcast plane is only
// ANDed with (2^W - 1) << sW in the qwords of segment s, so each byte holds code * 2^(sW)
// and no shift is spent per block. Dword lane d then accumulates 2^(sW) times its true
// sum, s = d / (2W); one arithmetic shift per lane per group undoes it. Exact while a lane
// cannot overflow: |lane| <= 4 * 255 * 128 per block, so at most kMaxScaledBlocks blocks.
constexpr int kMaxScaledBlocks = 16384;
template <int W>
struct ScaledSeg {
  alignas(64) static constexpr uint64_t mask[8] = {
      0x0101010101010101ull * ((((1u << W) - 1) << ((0 / W) * W)) & 0xFF), 0x0101010101010101ull * ((((1u << W) - 1) << ((1 / W) * W)) & 0xFF),
      0x0101010101010101ull * ((((1u << W) - 1) << ((2 / W) * W)) & 0xFF), 0x0101010101010101ull * ((((1u << W) - 1) << ((3 / W) * W)) & 0xFF),
      0x0101010101010101ull * ((((1u << W) - 1) << ((4 / W) * W)) & 0xFF), 0x0101010101010101ull * ((((1u << W) - 1) << ((5 / W) * W)) & 0xFF),
      0x0101010101010101ull * ((((1u << W) - 1) << ((6 / W) * W)) & 0xFF), 0x0101010101010101ull * ((((1u << W) - 1) << ((7 / W) * W)) & 0xFF)};
  alignas(64) static constexpr int32_t shift[16] = {
      (0 / (2 * W)) * W, (1 / (2 * W)) * W, (2 / (2 * W)) * W, (3 / (2 * W)) * W, (4 / (2 * W)) * W, (5 / (2 * W)) * W,
      (6 / (2 * W)) * W, (7 / (2 * W)) * W, (8 / (2 * W)) * W, (9 / (2 * W)) * W, (10 / (2 * W)) * W, (11 / (2 * W)) * W,
      (12 / (2 * W)) * W, (13 / (2 * W)) * W, (14 / (2 * W)) * W, (15 / (2 * W)) * W};
};

template <int MT, int R = NT>
inline void zero_acc(__m512i (&a)[MT][R]) {
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m)
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) a[m][i] = _mm512_setzero_si512();
}

template <int MT, int R = NT>
inline void add_acc(__m512i (&a)[MT][R], const __m512i (&b)[MT][R]) {
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m)
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) a[m][i] = _mm512_add_epi32(a[m][i], b[m][i]);
}

// Dense rows [n, n + R) (clamped to n1 - 1; duplicates are computed but not stored) for
// activation rows [m0, m0 + MT). MODE: 0 table lookup, 1 affine, 2 affine scaled segments.
// R = 8 rows for a single activation row halves the per-tile setup and reductions, which
// were ~40% of the time at K = 1024 (16 blocks per row). FULL: n + R <= n1 is known, so rows
// need no clamping and, with one group, the corrections are one vector op per 8 rows.
template <int BITS, int MT, int MODE, int R = NT, bool FULL = false>
void dense_tile(const PackedLinear& w, const Prep& p, int m0, int32_t x_zp, int32_t* acc, int n, int n1) {
  constexpr int W = PlaneSpec<BITS>::width(0);
  static_assert(MODE != 2 || (PlaneSpec<BITS>::count == 1 && W < 8), "scaled segments need one plane");
  static_assert(!FULL || (R == 8 && MT == 1 && MODE != 0), "the vector correction is for 8-row affine tiles");
  int rows[R];
  const uint8_t* rp[R];
  const int8_t* tab[R];
  const size_t row_bytes = static_cast<size_t>(w.nblocks) * w.block_bytes();
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    rows[i] = FULL ? n + i : std::min(n + i, n1 - 1);
    rp[i] = w.codes + static_cast<size_t>(rows[i]) * row_bytes;
    tab[i] = w.padded_table(rows[i]);
  }
  const int gb = group_blocks(w);
  constexpr uint32_t half = 1u << (BITS - 1);
  const size_t pf = static_cast<size_t>(R) * w.nblocks * w.block_bytes();
  constexpr int kBlocksPerLine = 64 % (8 * BITS) == 0 ? 64 / (8 * BITS) : 1;
  __m512i segmask = _mm512_setzero_si512(), segshift = _mm512_setzero_si512();
  if constexpr (MODE == 2) {
    segmask = _mm512_load_si512(ScaledSeg<W>::mask);
    segshift = _mm512_load_si512(ScaledSeg<W>::shift);
  }
  using Acc = __m512i[MT][R];
  // One block: decode NT rows once, feed MT activation rows.
  auto step = [&](int b, Acc& a) __attribute__((always_inline)) {
    __m512i wv[R];
    // The next row tile, one tile's worth of time ahead: rows of a tile share a 4 KiB
    // page, which defeats the hardware stream detector.
    if (b % kBlocksPerLine == 0) {
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) _mm_prefetch(reinterpret_cast<const char*>(rp[i] + pf + b * (8 * BITS)), _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const uint8_t* blk = rp[i] + b * (8 * BITS);
      if constexpr (MODE == 2) {
        wv[i] = _mm512_and_si512(bcast_plane<W>(blk), segmask);
      } else {
        const __m512i c = decode_codes<BITS>(blk);
        wv[i] = MODE == 1 ? c : lookup<BITS>(c, tab[i], w.affine);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) {
      const size_t xo = static_cast<size_t>(m0 + m) * p.Kpad + 64 * b;
      if constexpr (MODE != 0) {
        const __m512i xv = _mm512_load_si512(p.xs + xo);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) dpbusd(a[m][i], wv[i], xv);
      } else {
        const __m512i xv = _mm512_load_si512(p.xu + xo);
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) dpbusd(a[m][i], xv, wv[i]);
      }
    }
  };
  for (int g = 0; g < w.ngroups; ++g) {
    Acc a, a2;
    zero_acc<MT, R>(a);
    zero_acc<MT, R>(a2);
    const int b1 = std::min((g + 1) * gb, w.nblocks);
    int b = g * gb;
    // With one activation row there are only NT accumulator chains; a second set for odd
    // blocks keeps vpdpbusd latency (5 cycles) off the critical path.
    if constexpr (MT == 1)
      for (; b + 1 < b1; b += 2) {
        step(b, a);
        step(b + 1, a2);
      }
    for (; b < b1; ++b) step(b, a);
    if constexpr (MT == 1) add_acc<MT, R>(a, a2);
    if constexpr (FULL) {
      if (w.ngroups == 1) {
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) a[0][i] = MODE == 2 ? _mm512_srav_epi32(a[0][i], segshift) : a[0][i];
        const __m256i sum = _mm256_inserti128_si256(_mm256_castsi128_si256(reduce4(a[0][0], a[0][1], a[0][2], a[0][3])),
                                                    reduce4(a[0][4], a[0][5], a[0][6], a[0][7]), 1);
        const __m256i ws = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.wsum.data() + n));
        const __m256i corr = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(half * static_cast<uint32_t>(p.sx[m0]))),
                                              _mm256_mullo_epi32(ws, _mm256_set1_epi32(x_zp)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + static_cast<size_t>(m0) * w.N + n), _mm256_sub_epi32(sum, corr));
        continue;
      }
    }
    if (w.ngroups == 1 && n + R <= n1) {
#pragma GCC unroll 8
      for (int m = 0; m < MT; ++m) {
        if constexpr (MODE == 2) {
#pragma GCC unroll 8
          for (int i = 0; i < R; ++i) a[m][i] = _mm512_srav_epi32(a[m][i], segshift);
        }
        const int32_t hs = MODE != 0 ? static_cast<int32_t>(half * static_cast<uint32_t>(p.sx[m0 + m])) : 0;
        int32_t* dst = acc + static_cast<size_t>(m0 + m) * w.N + n;
#pragma GCC unroll 2
        for (int q = 0; q < R; q += 4)
          store_corrected4(dst + q, reduce4(a[m][q], a[m][q + 1], a[m][q + 2], a[m][q + 3]), w.wsum.data() + n + q, hs,
                           MODE != 0 ? x_zp : 128 + x_zp);
      }
      continue;
    }
    uint32_t ws[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) ws[i] = static_cast<uint32_t>(w.wsum[static_cast<size_t>(rows[i]) * w.ngroups + g]);
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) {
      if constexpr (MODE == 2) {
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) a[m][i] = _mm512_srav_epi32(a[m][i], segshift);
      }
      alignas(16) uint32_t sum[R];
#pragma GCC unroll 2
      for (int q = 0; q < R; q += 4)
        _mm_store_si128(reinterpret_cast<__m128i*>(sum + q), reduce4(a[m][q], a[m][q + 1], a[m][q + 2], a[m][q + 3]));
      const uint32_t sx = static_cast<uint32_t>(p.sx[(m0 + m) * w.ngroups + g]);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        if (i > 0 && n + i >= n1) break;
        const uint32_t corr = MODE != 0 ? half * sx + static_cast<uint32_t>(x_zp) * ws[i]
                                        : static_cast<uint32_t>(128 + x_zp) * ws[i];
        acc[(static_cast<size_t>(m0 + m) * w.N + rows[i]) * w.ngroups + g] = static_cast<int32_t>(sum[i] - corr);
      }
    }
  }
}

// Sparse rows. Each row's compacted stream (its stored weights only, in k order) is
// decoded and looked up once per row tile into scratch. Each 64-position block is then
// expanded in registers: lane l loads the 16 stored weights starting at the rank of its
// first position (scalar popcounts), and one vpshufb scatters them with controls computed
// from the bitmap word in registers (expand_ctrl). docs/kernels.md has the derivation.
struct SparseRow {
  const int8_t* buf;  // decoded compacted weights of the row (+ 64 readable bytes)
  int64_t t;          // stream position of the next stored weight
};

template <int BITS>
void decode_row_stream(const PackedLinear& w, int n, int8_t* dst) {
  const uint8_t* stream = sparse_row_codes(w, n);
  const int64_t nvb = static_cast<int64_t>(w.row_vblock[n + 1]) - w.row_vblock[n];
  const int8_t* table = w.padded_table(n);
  for (int64_t vb = 0; vb < nvb; ++vb)
    _mm512_storeu_si512(dst + 64 * vb, lookup<BITS>(decode_codes<BITS>(stream + vb * (8 * BITS)), table, w.affine));
}

// vpshufb control that moves byte 7 of each lane's low qword to all 8 bytes of its high
// qword (and zero to the low qword): the count carried from positions 0-7 to 8-15.
struct LaneCarry {
  alignas(64) static constexpr int8_t idx[64] = {
      -128, -128, -128, -128, -128, -128, -128, -128, 7, 7, 7, 7, 7, 7, 7, 7,
      -128, -128, -128, -128, -128, -128, -128, -128, 7, 7, 7, 7, 7, 7, 7, 7,
      -128, -128, -128, -128, -128, -128, -128, -128, 7, 7, 7, 7, 7, 7, 7, 7,
      -128, -128, -128, -128, -128, -128, -128, -128, 7, 7, 7, 7, 7, 7, 7, 7};
};

// vpshufb controls for one bitmap word, computed in registers: byte j of lane l is the rank
// of position 16l + j among the lane's stored positions (its index in the lane's 16 loaded
// weights), or 0x80 (pshufb writes 0) where nothing is stored. The ranks are prefix sums
// of the 0/1 bytes of the mask: three qword shift-adds sum within each 8 positions (sums
// <= 8, so bytes never carry), one vpshufb adds the low qword's total to the high one.
// This replaced 8 scalar kExpandCtrl8 loads + inserts per block (docs/kernels.md).
inline __m512i expand_ctrl(uint64_t bm) {
  const __mmask64 k = _cvtu64_mask64(bm);
  const __m512i one = _mm512_set1_epi8(1);
  __m512i s = _mm512_maskz_mov_epi8(k, one);
  s = _mm512_add_epi8(s, _mm512_slli_epi64(s, 8));
  s = _mm512_add_epi8(s, _mm512_slli_epi64(s, 16));
  s = _mm512_add_epi8(s, _mm512_slli_epi64(s, 32));
  s = _mm512_add_epi8(s, _mm512_shuffle_epi8(s, _mm512_load_si512(LaneCarry::idx)));
  return _mm512_mask_sub_epi8(_mm512_set1_epi8(static_cast<char>(0x80)), k, s, one);
}

template <bool FIXED>
inline __m512i sparse_block(SparseRow& r, uint64_t bm, int per8) {
  if (!FIXED && bm == 0) return _mm512_setzero_si512();
  int o1, o2, o3, total;
  if constexpr (FIXED) {  // N:M with m <= 8: every bitmap byte holds 8n/m bits
    o1 = 2 * per8, o2 = 4 * per8, o3 = 6 * per8, total = 8 * per8;
  } else {
    o1 = __builtin_popcountll(bm & 0xFFFFull);
    o2 = __builtin_popcountll(bm & 0xFFFFFFFFull);
    o3 = __builtin_popcountll(bm & 0xFFFFFFFFFFFFull);
    total = __builtin_popcountll(bm);
  }
  const int8_t* src = r.buf + r.t;
  __m512i s = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  s = _mm512_inserti32x4(s, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + o1)), 1);
  s = _mm512_inserti32x4(s, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + o2)), 2);
  s = _mm512_inserti32x4(s, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + o3)), 3);
  r.t += total;
  return _mm512_shuffle_epi8(s, expand_ctrl(bm));
}

template <int BITS, int MT, bool FIXED>
void sparse_tile(const PackedLinear& w, const Prep& p, int m0, int32_t x_zp, int32_t* acc, int n, int n1) {
  int rows[NT];
  SparseRow sr[NT];
  const int per8 = FIXED ? 8 * w.nm_n / w.nm_m : 0;
#pragma GCC unroll 4
  for (int i = 0; i < NT; ++i) {
    rows[i] = std::min(n + i, n1 - 1);
    int8_t* buf = p.sw + static_cast<size_t>(i) * (p.Kpad + 64);
    // Decoded once per row tile: the first activation chunk (m0 == 0) fills the buffer.
    if (m0 == 0) decode_row_stream<BITS>(w, rows[i], buf);
    sr[i] = SparseRow{buf, 0};
  }
  const int gb = group_blocks(w);
  using Acc = __m512i[MT][NT];
  auto step = [&](int b, Acc& a) __attribute__((always_inline)) {
    __m512i wv[NT];
#pragma GCC unroll 4
    for (int i = 0; i < NT; ++i)
      wv[i] = sparse_block<FIXED>(sr[i], w.bitmaps[static_cast<size_t>(rows[i]) * w.nblocks + b], per8);
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) {
      const __m512i xv = _mm512_load_si512(p.xu + static_cast<size_t>(m0 + m) * p.Kpad + 64 * b);
#pragma GCC unroll 4
      for (int i = 0; i < NT; ++i) dpbusd(a[m][i], xv, wv[i]);
    }
  };
  for (int g = 0; g < w.ngroups; ++g) {
    Acc a;
    zero_acc<MT>(a);
    const int b1 = std::min((g + 1) * gb, w.nblocks);
    for (int b = g * gb; b < b1; ++b) step(b, a);
    if (w.ngroups == 1 && n + NT <= n1) {
#pragma GCC unroll 4
      for (int m = 0; m < MT; ++m)
        store_corrected4(acc + static_cast<size_t>(m0 + m) * w.N + n, reduce4(a[m][0], a[m][1], a[m][2], a[m][3]),
                         w.wsum.data() + n, 0, 128 + x_zp);
      continue;
    }
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) {
      alignas(16) uint32_t sum[NT];
      _mm_store_si128(reinterpret_cast<__m128i*>(sum), reduce4(a[m][0], a[m][1], a[m][2], a[m][3]));
#pragma GCC unroll 4
      for (int i = 0; i < NT; ++i) {
        if (i > 0 && n + i >= n1) break;
        const uint32_t ws = static_cast<uint32_t>(w.wsum[static_cast<size_t>(rows[i]) * w.ngroups + g]);
        acc[(static_cast<size_t>(m0 + m) * w.N + rows[i]) * w.ngroups + g] =
            static_cast<int32_t>(sum[i] - static_cast<uint32_t>(128 + x_zp) * ws);
      }
    }
  }
}

template <int BITS, int MT>
void run_tile(const PackedLinear& w, const Prep& p, int m0, int32_t x_zp, int32_t* acc, int n, int n1) {
  constexpr bool single_plane = PlaneSpec<BITS>::count == 1 && BITS < 8;
  if constexpr (single_plane) {
    if (!w.sparse && w.affine && group_blocks(w) <= kMaxScaledBlocks)
      return dense_tile<BITS, MT, 2>(w, p, m0, x_zp, acc, n, n1);
  }
  if (!w.sparse && w.affine)
    dense_tile<BITS, MT, 1>(w, p, m0, x_zp, acc, n, n1);
  else if (!w.sparse)
    dense_tile<BITS, MT, 0>(w, p, m0, x_zp, acc, n, n1);
  else if (w.nm_m != 0 && w.nm_m <= 8)
    sparse_tile<BITS, MT, true>(w, p, m0, x_zp, acc, n, n1);
  else
    sparse_tile<BITS, MT, false>(w, p, m0, x_zp, acc, n, n1);
}

// Row tiles outermost: a tile's packed rows (a few KiB) stay in L1 while every chunk of
// activation rows passes over them, so weights stream from memory once per call.
template <int BITS>
void run_bits(const PackedLinear& w, const Prep& p, int M, int32_t x_zp, int32_t* acc, int n0, int n1) {
  // One activation row, affine: 8-row tiles (the table path would spill its registers).
  if (M == 1 && !w.sparse && w.affine) {
    const bool scaled = PlaneSpec<BITS>::count == 1 && BITS < 8 && group_blocks(w) <= kMaxScaledBlocks;
    constexpr int kScaled = PlaneSpec<BITS>::count == 1 && BITS < 8 ? 2 : 1;
    int n = n0;
    for (; n + 2 * NT <= n1; n += 2 * NT) {
      if (scaled)
        dense_tile<BITS, 1, kScaled, 2 * NT, true>(w, p, 0, x_zp, acc, n, n1);
      else
        dense_tile<BITS, 1, 1, 2 * NT, true>(w, p, 0, x_zp, acc, n, n1);
    }
    if (n < n1) {
      if (scaled)
        dense_tile<BITS, 1, kScaled, 2 * NT>(w, p, 0, x_zp, acc, n, n1);
      else
        dense_tile<BITS, 1, 1, 2 * NT>(w, p, 0, x_zp, acc, n, n1);
    }
    return;
  }
  for (int n = n0; n < n1; n += NT) {
    int m = 0;
    for (; m + 4 <= M; m += 4) run_tile<BITS, 4>(w, p, m, x_zp, acc, n, n1);
    if (M - m >= 2) {
      run_tile<BITS, 2>(w, p, m, x_zp, acc, n, n1);
      m += 2;
    }
    if (m < M) run_tile<BITS, 1>(w, p, m, x_zp, acc, n, n1);
  }
}

void avx512_accumulate(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp, int32_t* acc, int n0,
                       int n1, void* scratch) {
  if (M <= 0 || n0 >= n1) return;
  const Prep p = prepare(w, x, M, scratch);
  switch (w.bits) {
    case 1: return run_bits<1>(w, p, M, x_zp, acc, n0, n1);
    case 2: return run_bits<2>(w, p, M, x_zp, acc, n0, n1);
    case 3: return run_bits<3>(w, p, M, x_zp, acc, n0, n1);
    case 4: return run_bits<4>(w, p, M, x_zp, acc, n0, n1);
    case 5: return run_bits<5>(w, p, M, x_zp, acc, n0, n1);
    case 6: return run_bits<6>(w, p, M, x_zp, acc, n0, n1);
    case 7: return run_bits<7>(w, p, M, x_zp, acc, n0, n1);
    default: return run_bits<8>(w, p, M, x_zp, acc, n0, n1);
  }
}

}  // namespace

extern const LinearVariant linear_avx512 = {"avx512", "linear_qs8_qc1to8w_4x64__avx512vnni", avx512_scratch,
                                            avx512_accumulate};

}  // namespace edgekit::kernels
