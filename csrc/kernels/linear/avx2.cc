// Packed linear kernel, AVX2 (docs/kernels.md, "AVX2 and VBMI2 variants").
//
// Exactness: vpmaddubsw saturates to int16 (two u8*s8 products can exceed 32767), so it only
// ever multiplies affine codes c <= 127 by x (|pair sum| <= 32512, see codes_m1). Everything
// else (8-bit affine, codebook tables, sparse rows) uses int16 activations x - x_zp (in
// [-255, 255], zero-padded to Kpad) against sign-extended int16 weights: vpmaddwd pair sums
// (|.| <= 2 * 255 * 128) are exact in int32. int32 sums wrap modulo 2^32, like the reference.
//
// Weights are decoded per 64-code block on 32-byte registers straight from the bit-planes
// (docs/format.md §1.3); sparse rows decode their compacted stream and expand it in registers
// with pshufb controls indexed by the bitmap bytes. No dense weight buffer is ever written.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/linear/common.h"
#include "kernels/linear/linear.h"

namespace edgekit::kernels {
namespace {

enum class Lookup { kAffine, kTable16, kChain };

// kExpandHigh16[b]: pshufb control that sends the rank-r stored weight of bitmap byte b to
// the high byte of int16 lane (its bit position) and zeroes every other byte, so that one
// arithmetic shift turns the result into sign-extended int16 weights.
struct ExpandHigh16 {
  alignas(16) uint8_t ctrl[256][16];
};
constexpr ExpandHigh16 make_expand_high16() {
  ExpandHigh16 t{};
  for (int b = 0; b < 256; ++b) {
    int rank = 0;
    for (int pos = 0; pos < 8; ++pos) {
      t.ctrl[b][2 * pos] = 0x80;
      t.ctrl[b][2 * pos + 1] = ((b >> pos) & 1) ? static_cast<uint8_t>(rank++) : 0x80;
    }
  }
  return t;
}
constexpr ExpandHigh16 kExpandHigh16 = make_expand_high16();

inline __m256i loadu256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// One plane of width P of one block -> codes 0..31 (c0) and 32..63 (c1), byte per code.
template <int P>
inline void unpack_plane(const uint8_t* p, __m256i* c0, __m256i* c1) {
  if constexpr (P == 8) {
    *c0 = loadu256(p);
    *c1 = loadu256(p + 32);
  } else if constexpr (P == 4) {
    const __m256i m = _mm256_set1_epi8(0x0F);
    const __m256i v = loadu256(p);
    *c0 = _mm256_and_si256(v, m);
    *c1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
  } else if constexpr (P == 2) {
    // 16 bytes hold 4 segments of 16 codes; each 128-bit lane takes one segment.
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i m = _mm256_set1_epi8(0x03);
    *c0 = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(2, 2, 0, 0)), m);
    *c1 = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(6, 6, 4, 4)), m);
  } else {
    static_assert(P == 1, "plane widths are 8, 4, 2, 1");
    // 8 bytes hold 8 segments of 8 codes; each 64-bit lane takes one segment.
    int64_t q;
    std::memcpy(&q, p, 8);
    const __m256i v = _mm256_set1_epi64x(q);
    const __m256i m = _mm256_set1_epi8(0x01);
    *c0 = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(3, 2, 1, 0)), m);
    *c1 = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(7, 6, 5, 4)), m);
  }
}

// Shifting a masked plane left inside 16-bit lanes is safe: value < 2^p and shift + p <= 8, so
// no bit crosses into the neighbouring byte.
template <int P, int SHIFT>
inline void or_plane(const uint8_t* p, __m256i* c0, __m256i* c1) {
  __m256i d0, d1;
  unpack_plane<P>(p, &d0, &d1);
  *c0 = _mm256_or_si256(*c0, _mm256_slli_epi16(d0, SHIFT));
  *c1 = _mm256_or_si256(*c1, _mm256_slli_epi16(d1, SHIFT));
}

// All planes of one block (8*BITS bytes) -> b-bit codes; plane 0 holds the low bits.
template <int BITS>
inline void unpack_codes(const uint8_t* p, __m256i* c0, __m256i* c1) {
  using P = PlaneSpec<BITS>;
  unpack_plane<P::width(0)>(p, c0, c1);
  if constexpr (P::count > 1) or_plane<P::width(1), P::shift(1)>(p + P::offset(1), c0, c1);
  if constexpr (P::count > 2) or_plane<P::width(2), P::shift(2)>(p + P::offset(2), c0, c1);
}

template <int BITS, Lookup L>
constexpr int table_count() {
  return L == Lookup::kChain ? (1 << (BITS - 4)) : 1;
}

// Lookup tables as broadcast 16-entry pshufb tables; cb = PackedLinear::padded_table(n), so
// a table of fewer than 16 entries is zero-padded to 16. For chains table j holds
// T_j xor T_{j-1} (T_j = entries 16j..16j+15), restarting at j = 8: see lookup().
template <int BITS, Lookup L>
inline void build_tables(const int8_t* cb, __m256i* t) {
  if constexpr (L == Lookup::kTable16) {
    t[0] = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cb)));
  } else if constexpr (L == Lookup::kChain) {
    for (int j = 0; j < table_count<BITS, L>(); ++j) {
      __m128i tj = _mm_loadu_si128(reinterpret_cast<const __m128i*>(cb + 16 * j));
      if (j % 8 != 0) tj = _mm_xor_si128(tj, _mm_loadu_si128(reinterpret_cast<const __m128i*>(cb + 16 * (j - 1))));
      t[j] = _mm256_broadcastsi128_si256(tj);
    }
  } else {
    (void)cb;
    (void)t;
  }
}

// Codes (bytes < 2^BITS) -> int8 weights.
//
// Chain: for a code c < 128 in [16a, 16a+16), idx_j = c - 16j has bit 7 clear exactly for
// j <= a (pshufb then reads entry c & 15) and set for j > a (pshufb gives 0), so the xor of
// the delta tables over j = 0..a telescopes to T_a[c & 15]. 8-bit codes run the chain on
// c & 127 over T_0..T_7 and T_8..T_15 and pick by bit 7.
template <int BITS, Lookup L>
inline __m256i lookup(__m256i c, const __m256i* t) {
  if constexpr (L == Lookup::kAffine) {
    (void)t;
    return _mm256_sub_epi8(c, _mm256_set1_epi8(static_cast<char>(1 << (BITS - 1))));
  } else if constexpr (L == Lookup::kTable16) {
    return _mm256_shuffle_epi8(t[0], c);
  } else {
    constexpr int chain = std::min(8, 1 << (BITS - 4));
    const __m256i sixteen = _mm256_set1_epi8(16);
    __m256i idx = BITS == 8 ? _mm256_and_si256(c, _mm256_set1_epi8(0x7F)) : c;
    __m256i lo = _mm256_shuffle_epi8(t[0], idx);
    __m256i hi = BITS == 8 ? _mm256_shuffle_epi8(t[8], idx) : lo;
    for (int j = 1; j < chain; ++j) {
      idx = _mm256_sub_epi8(idx, sixteen);
      lo = _mm256_xor_si256(lo, _mm256_shuffle_epi8(t[j], idx));
      if constexpr (BITS == 8) hi = _mm256_xor_si256(hi, _mm256_shuffle_epi8(t[8 + j], idx));
    }
    if constexpr (BITS == 8) return _mm256_blendv_epi8(lo, hi, c);
    return lo;
  }
}

// 64 int8 weights (two registers, natural k order) -> four registers of 16 int16: the even
// then the odd k of each 32-k half (the order prepare_x gives dense activations). Shifts
// inside 16-bit lanes do the sign extension on the ALU ports, leaving the shuffle port to
// the table lookups (vpmovsxbw would need it twice per register).
inline void widen_even_odd(__m256i w0, __m256i w1, __m256i* w16) {
  w16[0] = _mm256_srai_epi16(_mm256_slli_epi16(w0, 8), 8);
  w16[1] = _mm256_srai_epi16(w0, 8);
  w16[2] = _mm256_srai_epi16(_mm256_slli_epi16(w1, 8), 8);
  w16[3] = _mm256_srai_epi16(w1, 8);
}

// Walks one dense row block by block.
template <int BITS, Lookup L>
struct DenseRow {
  __m256i t[table_count<BITS, L>()];
  const uint8_t* p;

  static size_t buf_bytes(const PackedLinear&) { return 0; }
  void init(const PackedLinear& w, int n, uint8_t*) {
    build_tables<BITS, L>(w.padded_table(n), t);
    p = w.codes + static_cast<size_t>(n) * w.nblocks * (8 * BITS);
  }
  // Next block as int16 weights; false when the block is all zero (never for dense).
  bool next(__m256i* w16) {
    __m256i c0, c1;
    unpack_codes<BITS>(p, &c0, &c1);
    p += 8 * BITS;
    widen_even_odd(lookup<BITS, L>(c0, t), lookup<BITS, L>(c1, t), w16);
    return true;
  }
};

constexpr int kRows = 2;  // weight rows per pass at M == 1 (share the x loads); 2 beat 1, 3, 4, 6, 8 here
constexpr int kSparseReadPad = 96;   // SparseRow::next reads up to 48 + 8 + 16 bytes past its position

// Bytes of the decode buffer one sparse row needs: every virtual block plus the over-read
// of SparseRow::next().
inline size_t sparse_row_buf_bytes(const PackedLinear& w) { return static_cast<size_t>(w.Kpad) + kSparseReadPad; }

// Walks one sparse row. init() decodes the row's compacted stream (its stored weights only,
// in k order; never a dense expansion) into `buf`; next() expands each dense block from it in
// registers, 16 weights (two bitmap bytes, one per 128-bit lane) per pshufb. Decoding the
// stream up front rather than through a sliding window keeps next() free of refill branches
// and measured ~10-15 % faster at 1x1024x4096, 50 % sparse.
template <int BITS, Lookup L>
struct SparseRow {
  const uint64_t* bm;
  const uint8_t* buf;
  int pos;

  static size_t buf_bytes(const PackedLinear& w) { return sparse_row_buf_bytes(w); }

  void init(const PackedLinear& w, int n, uint8_t* rowbuf) {
    __m256i t[table_count<BITS, L>()];
    build_tables<BITS, L>(w.padded_table(n), t);
    const uint8_t* v = sparse_row_codes(w, n);
    const uint8_t* vend = sparse_row_codes(w, n + 1);
    uint8_t* dst = rowbuf;
    for (; v < vend; v += 8 * BITS, dst += 64) {
      __m256i c0, c1;
      unpack_codes<BITS>(v, &c0, &c1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), lookup<BITS, L>(c0, t));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32), lookup<BITS, L>(c1, t));
    }
    std::memset(dst, 0, kSparseReadPad);  // read but never selected by a bitmap
    bm = w.bitmaps + static_cast<size_t>(n) * w.nblocks;
    buf = rowbuf;
    pos = 0;
  }

  bool next(__m256i* w16) {
    const uint64_t m = *bm++;
    if (m == 0) return false;
    const uint8_t* src = buf + pos;
    for (int q = 0; q < 4; ++q) {
      const unsigned b0 = (m >> (16 * q)) & 0xFF, b1 = (m >> (16 * q + 8)) & 0xFF;
      const __m256i v = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(src + _mm_popcnt_u32(b0)),
                                            reinterpret_cast<const __m128i*>(src));
      const __m256i ctrl = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(kExpandHigh16.ctrl[b1]),
                                               reinterpret_cast<const __m128i*>(kExpandHigh16.ctrl[b0]));
      // Each weight lands in the high byte of its int16 lane; the arithmetic shift sign-extends.
      w16[q] = _mm256_srai_epi16(_mm256_shuffle_epi8(v, ctrl), 8);
      src += _mm_popcnt_u32((m >> (16 * q)) & 0xFFFF);
    }
    pos = static_cast<int>(src - buf);
    return true;
  }
};

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// sum over one block of x16[k] * w16[k], as 8 int32 partial sums.
inline __m256i dot_block(const int16_t* x, const __m256i* w16) {
  const __m256i p0 = _mm256_madd_epi16(loadu256(x), w16[0]);
  const __m256i p1 = _mm256_madd_epi16(loadu256(x + 16), w16[1]);
  const __m256i p2 = _mm256_madd_epi16(loadu256(x + 32), w16[2]);
  const __m256i p3 = _mm256_madd_epi16(loadu256(x + 48), w16[3]);
  return _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3));
}

// M == 1: R rows per pass share each load of x; accumulators stay in registers.
template <class Row, int R>
void rows_m1(const PackedLinear& w, const int16_t* xs, int32_t* acc, int n, uint8_t* bufs) {
  Row rows[R];
  for (int r = 0; r < R; ++r) rows[r].init(w, n + r, bufs + r * Row::buf_bytes(w));
  const int gb = group_blocks(w);
  for (int g = 0; g < w.ngroups; ++g) {
    __m256i a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm256_setzero_si256();
    const int b1 = std::min(w.nblocks, (g + 1) * gb);
    for (int b = g * gb; b < b1; ++b) {
      const int16_t* xb = xs + static_cast<size_t>(b) * kBlockK;
      const __m256i x0 = loadu256(xb), x1 = loadu256(xb + 16);
      const __m256i x2 = loadu256(xb + 32), x3 = loadu256(xb + 48);
      for (int r = 0; r < R; ++r) {
        __m256i w16[4];
        if (!rows[r].next(w16)) continue;
        const __m256i p01 = _mm256_add_epi32(_mm256_madd_epi16(x0, w16[0]), _mm256_madd_epi16(x1, w16[1]));
        const __m256i p23 = _mm256_add_epi32(_mm256_madd_epi16(x2, w16[2]), _mm256_madd_epi16(x3, w16[3]));
        a[r] = _mm256_add_epi32(a[r], _mm256_add_epi32(p01, p23));
      }
    }
    for (int r = 0; r < R; ++r) acc[static_cast<size_t>(n + r) * w.ngroups + g] = hsum(a[r]);
  }
}

constexpr int kMChunk = 16;  // activation rows sharing one decoded block (accumulators on stack)

// M > 1: each block is decoded once and used for every activation row of the chunk.
template <class Row>
void rows_mm(const PackedLinear& w, const int16_t* xs, int M, int32_t* acc, int n0, int n1, uint8_t* buf) {
  const int gb = group_blocks(w);
  const size_t N = static_cast<size_t>(w.N);
  __m256i am[kMChunk];
  for (int m0 = 0; m0 < M; m0 += kMChunk) {
    const int mc = std::min(kMChunk, M - m0);
    for (int n = n0; n < n1; ++n) {
      Row row;
      row.init(w, n, buf);
      for (int g = 0; g < w.ngroups; ++g) {
        for (int m = 0; m < mc; ++m) am[m] = _mm256_setzero_si256();
        const int b1 = std::min(w.nblocks, (g + 1) * gb);
        for (int b = g * gb; b < b1; ++b) {
          __m256i w16[4];
          if (!row.next(w16)) continue;
          const int16_t* xb = xs + (static_cast<size_t>(b) * M + m0) * kBlockK;
          for (int m = 0; m < mc; ++m, xb += kBlockK) am[m] = _mm256_add_epi32(am[m], dot_block(xb, w16));
        }
        for (int m = 0; m < mc; ++m) acc[((m0 + m) * N + n) * w.ngroups + g] = hsum(am[m]);
      }
    }
  }
}

// ---- Dense affine weights with b <= 7: dot products on the codes themselves -------------
//
// With w = c - h (h = 2^(b-1)) and codes c <= 127, vpmaddubsw(c, x) cannot saturate: a pair
// sum is at most 2 * 127 * 128 = 32512 in magnitude. Per row and group
//   sum (x - zp)(c - h) = sum x*c - h * sum x - zp * sum c + zp * h * K_g   (mod 2^32, as ref)
// where K_g counts the positions k < K of the group (padding has x = 0 and c = 0). This halves
// the multiply work of the int16 path, which dense affine b = 8 and all tables still use.
struct CodesX {
  const int8_t* x8;   // (M, Kpad): x, zero padded
  const int32_t* sx;  // (M, ngroups): sum of x over the group
};

// Fits in the int16 activation area of scratch_bytes: M*Kpad + 4*M*ngroups <= 2*M*Kpad.
CodesX prepare_codes_x(const PackedLinear& w, const int8_t* x, int M, uint8_t* base) {
  auto* x8 = reinterpret_cast<int8_t*>(base);
  auto* sx = reinterpret_cast<int32_t*>(base + static_cast<size_t>(M) * w.Kpad);
  const int gk = group_blocks(w) * kBlockK;
  for (int m = 0; m < M; ++m) {
    int32_t* s = sx + static_cast<size_t>(m) * w.ngroups;
    for (int g = 0; g < w.ngroups; ++g) s[g] = 0;
    for (int k = 0; k < w.Kpad; ++k) {
      const int8_t v = k < w.K ? x[static_cast<size_t>(m) * w.K + k] : 0;
      x8[(static_cast<size_t>(k / kBlockK) * M + m) * kBlockK + k % kBlockK] = v;
      s[k / gk] += v;
    }
  }
  return {x8, sx};
}

template <int BITS>
inline __m256i dot_codes(__m256i c0, __m256i c1, __m256i x0, __m256i x1) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i p0 = _mm256_maddubs_epi16(c0, x0), p1 = _mm256_maddubs_epi16(c1, x1);
  // For c <= 63 two pair sums still fit int16 (2 * 2 * 63 * 128 = 32256).
  if constexpr (BITS <= 6) return _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones);
  return _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones));
}

// sum of the 64 codes as 4 uint64 partial sums (c0 + c1 <= 254 fits a byte).
inline __m256i sum_codes(__m256i c0, __m256i c1) {
  return _mm256_sad_epu8(_mm256_add_epi8(c0, c1), _mm256_setzero_si256());
}

inline uint32_t hsum64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return static_cast<uint32_t>(_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1));
}

template <int BITS>
inline int32_t codes_result(__m256i dot, __m256i csum, int32_t sum_x, int32_t kg, int32_t x_zp) {
  constexpr uint32_t h = 1u << (BITS - 1);
  const uint32_t zp = static_cast<uint32_t>(x_zp);
  const uint32_t v = static_cast<uint32_t>(hsum(dot)) - h * static_cast<uint32_t>(sum_x) - zp * hsum64(csum) +
                     zp * h * static_cast<uint32_t>(kg);
  return static_cast<int32_t>(v);
}

inline int group_k(const PackedLinear& w, int g) {
  const int gk = group_blocks(w) * kBlockK;
  return std::min(w.K, (g + 1) * gk) - g * gk;
}

template <int BITS, int R>
void codes_m1(const PackedLinear& w, const CodesX& cx, int32_t x_zp, int32_t* acc, int n) {
  const uint8_t* p[R];
  for (int r = 0; r < R; ++r) p[r] = w.codes + static_cast<size_t>(n + r) * w.nblocks * (8 * BITS);
  const int gb = group_blocks(w);
  for (int g = 0; g < w.ngroups; ++g) {
    __m256i a[R], cs[R];
    for (int r = 0; r < R; ++r) a[r] = cs[r] = _mm256_setzero_si256();
    const int b1 = std::min(w.nblocks, (g + 1) * gb);
    for (int b = g * gb; b < b1; ++b) {
      const __m256i x0 = loadu256(cx.x8 + b * kBlockK), x1 = loadu256(cx.x8 + b * kBlockK + 32);
      for (int r = 0; r < R; ++r) {
        __m256i c0, c1;
        unpack_codes<BITS>(p[r], &c0, &c1);
        p[r] += 8 * BITS;
        a[r] = _mm256_add_epi32(a[r], dot_codes<BITS>(c0, c1, x0, x1));
        cs[r] = _mm256_add_epi64(cs[r], sum_codes(c0, c1));
      }
    }
    for (int r = 0; r < R; ++r)
      acc[static_cast<size_t>(n + r) * w.ngroups + g] = codes_result<BITS>(a[r], cs[r], cx.sx[g], group_k(w, g), x_zp);
  }
}

template <int BITS>
void codes_mm(const PackedLinear& w, const CodesX& cx, int M, int32_t x_zp, int32_t* acc, int n0, int n1) {
  const int gb = group_blocks(w);
  __m256i am[kMChunk];
  for (int m0 = 0; m0 < M; m0 += kMChunk) {
    const int mc = std::min(kMChunk, M - m0);
    for (int n = n0; n < n1; ++n) {
      const uint8_t* p = w.codes + static_cast<size_t>(n) * w.nblocks * (8 * BITS);
      for (int g = 0; g < w.ngroups; ++g) {
        __m256i cs = _mm256_setzero_si256();
        for (int m = 0; m < mc; ++m) am[m] = _mm256_setzero_si256();
        for (int b = g * gb; b < std::min(w.nblocks, (g + 1) * gb); ++b, p += 8 * BITS) {
          __m256i c0, c1;
          unpack_codes<BITS>(p, &c0, &c1);
          cs = _mm256_add_epi64(cs, sum_codes(c0, c1));
          const int8_t* xb = cx.x8 + (static_cast<size_t>(b) * M + m0) * kBlockK;
          for (int m = 0; m < mc; ++m, xb += kBlockK)
            am[m] = _mm256_add_epi32(am[m], dot_codes<BITS>(c0, c1, loadu256(xb), loadu256(xb + 32)));
        }
        for (int m = 0; m < mc; ++m)
          acc[(static_cast<size_t>(m0 + m) * w.N + n) * w.ngroups + g] =
              codes_result<BITS>(am[m], cs, cx.sx[static_cast<size_t>(m0 + m) * w.ngroups + g], group_k(w, g), x_zp);
      }
    }
  }
}

template <int BITS>
void run_codes(const PackedLinear& w, const CodesX& cx, int M, int32_t x_zp, int32_t* acc, int n0, int n1) {
  if (M > 1) {
    codes_mm<BITS>(w, cx, M, x_zp, acc, n0, n1);
    return;
  }
  int n = n0;
  for (; n + kRows <= n1; n += kRows) codes_m1<BITS, kRows>(w, cx, x_zp, acc, n);
  for (; n < n1; ++n) codes_m1<BITS, 1>(w, cx, x_zp, acc, n);
}

// ---- Everything else: int16 activations x sign-extended int16 weights -------------------

template <int BITS, Lookup L, bool SPARSE>
void run(const PackedLinear& w, const int16_t* xs, int M, int32_t* acc, int n0, int n1, uint8_t* bufs) {
  using Row = std::conditional_t<SPARSE, SparseRow<BITS, L>, DenseRow<BITS, L>>;
  if (M > 1) {
    rows_mm<Row>(w, xs, M, acc, n0, n1, bufs);
    return;
  }
  int n = n0;
  for (; n + kRows <= n1; n += kRows) rows_m1<Row, kRows>(w, xs, acc, n, bufs);
  for (; n < n1; ++n) rows_m1<Row, 1>(w, xs, acc, n, bufs);
}

template <int BITS, bool SPARSE>
void run_bits(const PackedLinear& w, const int16_t* xs, int M, int32_t* acc, int n0, int n1, uint8_t* bufs) {
  if (w.affine) {
    if constexpr (SPARSE || BITS == 8) run<BITS, Lookup::kAffine, SPARSE>(w, xs, M, acc, n0, n1, bufs);
  } else if constexpr (BITS <= 4) {
    run<BITS, Lookup::kTable16, SPARSE>(w, xs, M, acc, n0, n1, bufs);
  } else {
    run<BITS, Lookup::kChain, SPARSE>(w, xs, M, acc, n0, n1, bufs);
  }
}

template <bool SPARSE>
void run_sparsity(const PackedLinear& w, const int16_t* xs, int M, int32_t* acc, int n0, int n1, uint8_t* bufs) {
  switch (w.bits) {
    case 1: run_bits<1, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
    case 2: run_bits<2, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
    case 3: run_bits<3, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
    case 4: run_bits<4, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
    case 5: run_bits<5, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
    case 6: run_bits<6, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
    case 7: run_bits<7, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
    default: run_bits<8, SPARSE>(w, xs, M, acc, n0, n1, bufs); break;
  }
}

constexpr size_t align32(size_t v) { return (v + 31) & ~size_t{31}; }

// Scratch: prepared activations, then (sparse) one decoded-stream buffer per row of a pass.
size_t scratch_bytes(const PackedLinear& w, int M) {
  const size_t bufs = w.sparse ? kRows * sparse_row_buf_bytes(w) : 0;
  return 32 + align32(static_cast<size_t>(M) * w.Kpad * sizeof(int16_t)) + bufs;
}

// x - x_zp as int16, zero-padded to Kpad so padding codes contribute nothing. Dense rows
// want each 32-k half as its even k then its odd k (widen_even_odd); sparse rows expand to
// natural order.
void prepare_x(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp, int16_t* xs) {
  for (int m = 0; m < M; ++m) {
    const int8_t* xr = x + static_cast<size_t>(m) * w.K;
    for (int k = 0; k < w.Kpad; ++k) {
      const int j = k % kBlockK;
      const int at = w.sparse ? j : (j & ~31) | ((j & 1) << 4) | ((j & 31) >> 1);
      xs[(static_cast<size_t>(k / kBlockK) * M + m) * kBlockK + at] = static_cast<int16_t>(k < w.K ? xr[k] - x_zp : 0);
    }
  }
}

void accumulate(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp, int32_t* acc, int n0,
                int n1, void* scratch) {
  if (M <= 0 || n0 >= n1) return;
  auto* base = reinterpret_cast<uint8_t*>(align32(reinterpret_cast<uintptr_t>(scratch)));
  auto* xs = reinterpret_cast<int16_t*>(base);
  uint8_t* bufs = base + align32(static_cast<size_t>(M) * w.Kpad * sizeof(int16_t));
  if (!w.sparse && w.affine && w.bits <= 7) {
    const CodesX cx = prepare_codes_x(w, x, M, base);
    switch (w.bits) {
      case 1: run_codes<1>(w, cx, M, x_zp, acc, n0, n1); break;
      case 2: run_codes<2>(w, cx, M, x_zp, acc, n0, n1); break;
      case 3: run_codes<3>(w, cx, M, x_zp, acc, n0, n1); break;
      case 4: run_codes<4>(w, cx, M, x_zp, acc, n0, n1); break;
      case 5: run_codes<5>(w, cx, M, x_zp, acc, n0, n1); break;
      case 6: run_codes<6>(w, cx, M, x_zp, acc, n0, n1); break;
      default: run_codes<7>(w, cx, M, x_zp, acc, n0, n1); break;
    }
    return;
  }
  prepare_x(w, x, M, x_zp, xs);
  if (w.sparse) {
    run_sparsity<true>(w, xs, M, acc, n0, n1, bufs);
  } else {
    run_sparsity<false>(w, xs, M, acc, n0, n1, bufs);
  }
}

}  // namespace

// extern: external linkage even where linear.h did not declare it (EDGEKIT_HAVE_AVX2 unset).
extern const LinearVariant linear_avx2 = {"avx2", "linear_qs8_qc1to8w_2x64__avx2", scratch_bytes, accumulate};

}  // namespace edgekit::kernels
