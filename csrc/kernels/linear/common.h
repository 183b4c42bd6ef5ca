// Shared, ISA-neutral helpers for the linear kernel family. Header-only so that every
// per-ISA file (compiled with its own flags) can inline them.
//
// What it offers (ref.cc, the per-ISA files and format/packed.cc's load checks use these):
//   * PlaneSpec<BITS>      compile-time plane widths/shifts of docs/format.md §1.2
//   * scalar_code()        one code of a 64-code block, read straight from the layout (§1.3)
//   * decode_block_scalar  all 64 codes of a block in natural order (portable, slow path)
//   * group_blocks()       blocks per scale group
//   * sparse_row_codes()   where row n's compacted stream starts (§1.5)
#pragma once
#include <cstdint>
#include <cstring>

#include "format/packed.h"

namespace edgekit::kernels {
// Internal linkage on purpose: this header is included by files compiled with different ISA
// flags; with external linkage the linker could hand ref.cc an out-of-line copy compiled for
// AVX-512 (or the NEON file one compiled for dotprod) and crash on a CPU without it.
namespace {

template <int BITS>
struct PlaneSpec {
  static_assert(BITS >= 1 && BITS <= 8, "1..8 bits");
  // Widest plane first so that the common widths 4 and 8 need a single plane.
  static constexpr int count = BITS == 3 || BITS == 5 || BITS == 6 ? 2 : (BITS == 7 ? 3 : 1);
  static constexpr int width(int i) {
    constexpr int w[9][3] = {{0, 0, 0}, {1, 0, 0}, {2, 0, 0}, {2, 1, 0}, {4, 0, 0},
                             {4, 1, 0}, {4, 2, 0}, {4, 2, 1}, {8, 0, 0}};
    return w[BITS][i];
  }
  // Byte offset of plane i inside a block, and the bit position of its value in the code.
  static constexpr int offset(int i) { return i == 0 ? 0 : 8 * width(0) + (i == 2 ? 8 * width(1) : 0); }
  static constexpr int shift(int i) { return i == 0 ? 0 : width(0) + (i == 2 ? width(1) : 0); }
};

// Code j (0..63) of one block laid out as docs/format.md §1.3, for any bit width.
inline int scalar_code(const PlaneSplit& ps, const uint8_t* block, int j) {
  int code = 0, off = 0;
  for (int i = 0; i < ps.count; ++i) {
    const int p = ps.width[i];
    const int seg = j / (8 * p), byte = j % (8 * p);
    code |= ((block[off + byte] >> (seg * p)) & ((1 << p) - 1)) << ps.shift[i];
    off += 8 * p;
  }
  return code;
}

// Plane by plane (not code by code) because load-time checks decode whole matrices.
inline void decode_block_scalar(const PlaneSplit& ps, const uint8_t* block, uint8_t out[64]) {
  std::memset(out, 0, 64);
  for (int i = 0; i < ps.count; ++i) {
    const int p = ps.width[i], nb = 8 * p, mask = (1 << p) - 1, sh = ps.shift[i];
    for (int s = 0; s < 8 / p; ++s)
      for (int b = 0; b < nb; ++b)
        out[s * nb + b] |= static_cast<uint8_t>(((block[b] >> (s * p)) & mask) << sh);
    block += nb;
  }
}

// Blocks per scale group (the whole row when group_size is 0).
inline int group_blocks(const PackedLinear& w) {
  return w.group_size == 0 ? w.nblocks : w.group_size / kBlockK;
}

// Start of row n's compacted code stream (sparse layouts, §1.5).
inline const uint8_t* sparse_row_codes(const PackedLinear& w, int n) {
  return w.codes + static_cast<size_t>(w.row_vblock[n]) * w.block_bytes();
}

}  // namespace
}  // namespace edgekit::kernels
