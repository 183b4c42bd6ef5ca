// Portable reference for the linear family: one code at a time, read straight from the
// packed layout with scalar_code(), accumulated in 64 bits. Slow on purpose: it is the
// definition every SIMD variant is compared against (tolerance 0).
#include <cstdint>

#include "kernels/linear/common.h"
#include "kernels/linear/linear.h"

namespace edgekit::kernels {
namespace {

size_t ref_scratch(const PackedLinear&, int) { return 0; }

// Row n's weights for block b in natural order; masked (not stored) weights are 0.
void row_block_weights(const PackedLinear& w, int n, int b, int64_t* stream_pos, int32_t out[64]) {
  const int8_t* t = w.table(n);
  if (!w.sparse) {
    const uint8_t* blk = w.codes + (static_cast<size_t>(n) * w.nblocks + b) * w.block_bytes();
    for (int j = 0; j < 64; ++j) out[j] = t[scalar_code(w.planes, blk, j)];
    return;
  }
  const uint8_t* stream = sparse_row_codes(w, n);
  const uint64_t bm = w.bitmaps[static_cast<size_t>(n) * w.nblocks + b];
  for (int j = 0; j < 64; ++j) {
    out[j] = 0;
    if (!((bm >> j) & 1)) continue;
    const int64_t p = (*stream_pos)++;
    out[j] = t[scalar_code(w.planes, stream + (p / 64) * w.block_bytes(), static_cast<int>(p % 64))];
  }
}

void ref_accumulate(const PackedLinear& w, const int8_t* x, int M, int32_t x_zp, int32_t* acc,
                    int n0, int n1, void*) {
  const int gb = group_blocks(w);
  int32_t wb[64];
  for (int n = n0; n < n1; ++n) {
    for (int m = 0; m < M; ++m)
      for (int g = 0; g < w.ngroups; ++g) acc[(static_cast<size_t>(m) * w.N + n) * w.ngroups + g] = 0;
    int64_t pos = 0;
    for (int b = 0; b < w.nblocks; ++b) {
      row_block_weights(w, n, b, &pos, wb);
      const int g = b / gb;
      for (int m = 0; m < M; ++m) {
        int64_t s = 0;
        for (int j = 0; j < 64 && 64 * b + j < w.K; ++j)
          s += (int64_t{x[static_cast<size_t>(m) * w.K + 64 * b + j]} - x_zp) * wb[j];
        int32_t& a = acc[(static_cast<size_t>(m) * w.N + n) * w.ngroups + g];
        // int32 results are defined modulo 2^32, like the SIMD accumulators.
        a = static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(s));
      }
    }
  }
}

}  // namespace

extern const LinearVariant linear_ref = {"ref", "linear_qs8_qc1to8w_1x1__scalar", ref_scratch,
                                         ref_accumulate};

}  // namespace edgekit::kernels
