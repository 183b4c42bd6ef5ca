// Block decoding shared by the two aarch64 variants (neon.cc, neondot.cc).
//
// Everything here sits in an anonymous namespace on purpose: each ISA file is compiled with
// its own -march, and an inline function with external linkage would be merged by the linker
// into ONE copy — possibly the armv8.2+dotprod one — which then runs (and SIGILLs) on a
// Cortex-A72 through linear_neon. Internal linkage gives every file its own copy.
//
// A variant supplies a "MAC policy" (see run_linear below); this header turns packed blocks
// (docs/format.md §1.2-1.5) into four int8x16 registers of weights in natural k order and
// walks rows, blocks and groups.
#pragma once
#include <arm_neon.h>

#include <cstdint>

#include "kernels/linear/linear.h"

namespace edgekit::kernels {
namespace {

// Widths of the planes of a b-bit code, widest first (docs/format.md §1.2).
template <int B> struct Planes;
template <> struct Planes<1> { static constexpr int w0 = 1, w1 = 0, w2 = 0; };
template <> struct Planes<2> { static constexpr int w0 = 2, w1 = 0, w2 = 0; };
template <> struct Planes<3> { static constexpr int w0 = 2, w1 = 1, w2 = 0; };
template <> struct Planes<4> { static constexpr int w0 = 4, w1 = 0, w2 = 0; };
template <> struct Planes<5> { static constexpr int w0 = 4, w1 = 1, w2 = 0; };
template <> struct Planes<6> { static constexpr int w0 = 4, w1 = 2, w2 = 0; };
template <> struct Planes<7> { static constexpr int w0 = 4, w1 = 2, w2 = 1; };
template <> struct Planes<8> { static constexpr int w0 = 8, w1 = 0, w2 = 0; };

// One plane of width P (8P bytes) -> 64 plane values in code order. The strided-segment
// layout (§1.3) means segment s is bits [sP, sP+P) of every byte, so each 16-code register
// is one shift and one AND of a loaded register; no shuffles.
template <int P>
inline void load_plane(const uint8_t* src, uint8x16_t out[4]) {
  if constexpr (P == 8) {
    for (int i = 0; i < 4; ++i) out[i] = vld1q_u8(src + 16 * i);
  } else if constexpr (P == 4) {
    const uint8x16_t lo = vld1q_u8(src), hi = vld1q_u8(src + 16), m = vdupq_n_u8(0x0F);
    out[0] = vandq_u8(lo, m);
    out[1] = vandq_u8(hi, m);
    out[2] = vshrq_n_u8(lo, 4);
    out[3] = vshrq_n_u8(hi, 4);
  } else if constexpr (P == 2) {
    const uint8x16_t v = vld1q_u8(src), m = vdupq_n_u8(0x03);
    out[0] = vandq_u8(v, m);
    out[1] = vandq_u8(vshrq_n_u8(v, 2), m);
    out[2] = vandq_u8(vshrq_n_u8(v, 4), m);
    out[3] = vshrq_n_u8(v, 6);
  } else {
    static_assert(P == 1, "plane width must be 1, 2, 4 or 8");
    // 8 bytes; bit s of byte i is code i + 8s. Register r holds segments 2r and 2r+1, so
    // the low half shifts right by 2r and the high half by 2r+1 (ushl with negative counts).
    const uint8x8_t d = vld1_u8(src);
    const uint8x16_t q = vcombine_u8(d, d), one = vdupq_n_u8(1);
    for (int r = 0; r < 4; ++r) {
      const int8x16_t sh = vcombine_s8(vdup_n_s8(static_cast<int8_t>(-2 * r)),
                                       vdup_n_s8(static_cast<int8_t>(-2 * r - 1)));
      out[r] = vandq_u8(vshlq_u8(q, sh), one);
    }
  }
}

// 64 b-bit codes of one block: planes OR-ed together, the first plane holding the low bits.
template <int B>
inline void decode_codes(const uint8_t* blk, uint8x16_t c[4]) {
  using P = Planes<B>;
  load_plane<P::w0>(blk, c);
  if constexpr (P::w1 != 0) {
    uint8x16_t t[4];
    load_plane<P::w1>(blk + 8 * P::w0, t);
    for (int i = 0; i < 4; ++i) c[i] = vorrq_u8(c[i], vshlq_n_u8(t[i], P::w0));
  }
  if constexpr (P::w2 != 0) {
    uint8x16_t t[4];
    load_plane<P::w2>(blk + 8 * (P::w0 + P::w1), t);
    for (int i = 0; i < 4; ++i) c[i] = vorrq_u8(c[i], vshlq_n_u8(t[i], P::w0 + P::w1));
  }
}

// A row's codebook held in registers: up to 256 int8 entries as four 64-byte tbl tables.
struct Codebook {
  int8x16x4_t t[4];
};

// `table` must be readable for max(16, 2^B) bytes: PackedLinear::padded_table() pads the
// stored 2^B-entry tables so that a 16-byte load never reads past the codebook.
template <int B>
inline Codebook load_codebook(const int8_t* table) {
  constexpr int kRegs = (1 << B) < 16 ? 1 : (1 << B) / 16;  // registers the lookups read
  Codebook cb;
  for (int r = 0; r < 16; ++r)
    cb.t[r / 4].val[r % 4] = r < kRegs ? vld1q_s8(table + 16 * r) : vdupq_n_s8(0);
  return cb;
}

// codes -> int8 weights. Affine tables are code - 2^(B-1) (exact in uint8 wrap-around, then
// reinterpreted); other tables are looked up with tbl (16/32/64 entries in one instruction,
// 128/256 as chains of tbx, which leaves lanes whose index is out of its range untouched).
template <int B, bool Affine>
inline int8x16_t to_weight(const Codebook& cb, uint8x16_t c) {
  if constexpr (Affine) {
    return vreinterpretq_s8_u8(vsubq_u8(c, vdupq_n_u8(static_cast<uint8_t>(1u << (B - 1)))));
  } else if constexpr (B <= 4) {
    return vqtbl1q_s8(cb.t[0].val[0], c);
  } else if constexpr (B == 5) {
    const int8x16x2_t t2 = {{cb.t[0].val[0], cb.t[0].val[1]}};
    return vqtbl2q_s8(t2, c);
  } else {
    int8x16_t r = vqtbl4q_s8(cb.t[0], c);
    const uint8x16_t step = vdupq_n_u8(64);
    for (int q = 1; q < (1 << B) / 64; ++q) {
      c = vsubq_u8(c, step);
      r = vqtbx4q_s8(r, cb.t[q], c);
    }
    return r;
  }
}

template <int B, bool Affine>
inline void decode_block(const uint8_t* blk, const Codebook& cb, int8x16_t w[4]) {
  uint8x16_t c[4];
  decode_codes<B>(blk, c);
  for (int i = 0; i < 4; ++i) w[i] = to_weight<B, Affine>(cb, c[i]);
}

// kPrefix[b][j] = number of set bits of byte b below bit j: where lane j of an 8-lane chunk
// finds its value among the chunk's stored (compacted) weights.
struct PrefixTable {
  uint8_t v[256][8];
  constexpr PrefixTable() : v() {
    for (int b = 0; b < 256; ++b) {
      int c = 0;
      for (int j = 0; j < 8; ++j) {
        v[b][j] = static_cast<uint8_t>(c);
        c += (b >> j) & 1;
      }
    }
  }
};
constexpr PrefixTable kPrefix{};

// Sparse rows (§1.5): a window of two decoded virtual blocks (128 compacted weights in eight
// registers) slides along the row's compacted stream; each dense block takes popcount(mask)
// weights from position `pos` and scatters them to their lanes with tbl/tbx. Lanes whose
// mask bit is clear get index 0xFF, which tbl turns into 0 — no dense buffer is ever built.
// N:M rows take the same path: their fixed counts would only save the popcounts, which are
// a few scalar instructions per 16 lanes next to the two 64-byte table lookups.
template <int B, bool Affine>
struct SparseRow {
  const uint8_t* stream;
  int nvb, next_vb;        // virtual blocks in the row; next one to decode
  int pos = 0;             // offset of the next unconsumed weight in win[0..3]
  int8x16x4_t win[2];
  const Codebook* cb;

  SparseRow(const uint8_t* s, int nvblocks, const Codebook& codebook)
      : stream(s), nvb(nvblocks), next_vb(0), cb(&codebook) {
    fill(win[0]);
    fill(win[1]);
  }
  void fill(int8x16x4_t& dst) {
    if (next_vb < nvb) {
      decode_block<B, Affine>(stream + static_cast<size_t>(next_vb) * 8 * B, *cb, dst.val);
    } else {  // past the row's end: never indexed, keep the registers defined
      for (int i = 0; i < 4; ++i) dst.val[i] = vdupq_n_s8(0);
    }
    ++next_vb;
  }

  // Expand the next dense block, whose mask is `bits`, into w[4]. `bits` must be non-zero.
  void expand(uint64_t bits, int8x16_t w[4]) {
    static const uint8_t kLaneBit[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                         1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t lane_bit = vld1q_u8(kLaneBit), hi_half = vdupq_n_u8(64);
    int base = pos;
    for (int r = 0; r < 4; ++r) {
      const unsigned lo = static_cast<unsigned>(bits >> (16 * r)) & 0xFF;
      const unsigned hi = static_cast<unsigned>(bits >> (16 * r + 8)) & 0xFF;
      const int nlo = __builtin_popcount(lo);
      const uint8x8_t lo8 = vdup_n_u8(static_cast<uint8_t>(lo));
      const uint8x8_t hi8 = vdup_n_u8(static_cast<uint8_t>(hi));
      const uint8x16_t pre = vcombine_u8(
          vld1_u8(kPrefix.v[lo]),
          vadd_u8(vld1_u8(kPrefix.v[hi]), vdup_n_u8(static_cast<uint8_t>(nlo))));
      const uint8x16_t stored = vtstq_u8(vcombine_u8(lo8, hi8), lane_bit);
      // base + prefix <= 63 + 63 < 128: always inside the two-block window.
      uint8x16_t idx = vaddq_u8(pre, vdupq_n_u8(static_cast<uint8_t>(base)));
      idx = vorrq_u8(idx, vmvnq_u8(stored));
      const int8x16_t first = vqtbl4q_s8(win[0], idx);
      w[r] = vqtbx4q_s8(first, win[1], vsubq_u8(idx, hi_half));
      base += nlo + __builtin_popcount(hi);
    }
    pos = base;
    if (pos >= 64) {  // the first window block is used up: slide by one virtual block
      win[0] = win[1];
      fill(win[1]);
      pos -= 64;
    }
  }
};

// Walks rows [n0, n1) and their blocks, decoding each block once and handing it to the MAC
// policy, which owns the activations and accumulators:
//   mac.begin_row(n)            before a row
//   mac.block(w, blk)           w = 64 weights of block blk (padding lanes may be non-zero
//                               for dense rows: codes 0 decode to table[0])
//   mac.end_group(n, g)         after the last block of group g of row n
// Sparse blocks with an empty mask are skipped: they contribute nothing.
template <int B, bool Affine, bool Sparse, class Mac>
void walk_rows(const PackedLinear& w, int n0, int n1, Mac& mac) {
  const int blocks_per_group = w.group_size > 0 ? w.group_size / kBlockK : w.nblocks;
  const size_t bb = w.block_bytes();
  Codebook cb{};
  if constexpr (!Affine) {
    if (!w.codebook_per_row) cb = load_codebook<B>(w.padded_table(0));
  }
  for (int n = n0; n < n1; ++n) {
    if constexpr (!Affine) {
      if (w.codebook_per_row) cb = load_codebook<B>(w.padded_table(n));
    }
    mac.begin_row(n);
    if constexpr (Sparse) {
      const uint32_t v0 = w.row_vblock[n];
      SparseRow<B, Affine> row(w.codes + static_cast<size_t>(v0) * bb,
                               static_cast<int>(w.row_vblock[n + 1] - v0), cb);
      const uint64_t* masks = w.bitmaps + static_cast<size_t>(n) * w.nblocks;
      for (int blk = 0; blk < w.nblocks; ++blk) {
        if (masks[blk] != 0) {
          int8x16_t wv[4];
          row.expand(masks[blk], wv);
          mac.block(wv, blk);
        }
        if ((blk + 1) % blocks_per_group == 0 || blk + 1 == w.nblocks)
          mac.end_group(n, blk / blocks_per_group);
      }
    } else {
      const uint8_t* rowp = w.codes + static_cast<size_t>(n) * w.nblocks * bb;
      for (int blk = 0; blk < w.nblocks; ++blk) {
        int8x16_t wv[4];
        decode_block<B, Affine>(rowp + blk * bb, cb, wv);
        mac.block(wv, blk);
        if ((blk + 1) % blocks_per_group == 0 || blk + 1 == w.nblocks)
          mac.end_group(n, blk / blocks_per_group);
      }
    }
  }
}

// Runtime (bits, affine, sparse) -> one of the 32 compiled walkers.
template <int B, class Mac>
void walk_bits(const PackedLinear& w, int n0, int n1, Mac& mac) {
  if (w.affine) {
    if (w.sparse) walk_rows<B, true, true>(w, n0, n1, mac);
    else walk_rows<B, true, false>(w, n0, n1, mac);
  } else {
    if (w.sparse) walk_rows<B, false, true>(w, n0, n1, mac);
    else walk_rows<B, false, false>(w, n0, n1, mac);
  }
}

template <class Mac>
void walk(const PackedLinear& w, int n0, int n1, Mac& mac) {
  switch (w.bits) {
    case 1: walk_bits<1>(w, n0, n1, mac); break;
    case 2: walk_bits<2>(w, n0, n1, mac); break;
    case 3: walk_bits<3>(w, n0, n1, mac); break;
    case 4: walk_bits<4>(w, n0, n1, mac); break;
    case 5: walk_bits<5>(w, n0, n1, mac); break;
    case 6: walk_bits<6>(w, n0, n1, mac); break;
    case 7: walk_bits<7>(w, n0, n1, mac); break;
    case 8: walk_bits<8>(w, n0, n1, mac); break;
    default: break;  // unreachable: the reader only accepts 1..8
  }
}

// Scratch helpers: carve 64-byte aligned regions out of the caller's scratch.
inline size_t align64(size_t n) { return (n + 63) & ~static_cast<size_t>(63); }
inline char* align64(void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<char*>((u + 63) & ~static_cast<uintptr_t>(63));
}

}  // namespace
}  // namespace edgekit::kernels
