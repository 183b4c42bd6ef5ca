// Reader/validator for packed linear weights (docs/format.md §1). Every count, size and
// offset is checked before it is used, in 64-bit arithmetic, so hostile input yields a
// Status and never an out-of-bounds read.
#include "format/packed.h"

#include <cstring>
#include <string>

#include "kernels/linear/common.h"

namespace edgekit {
namespace {

constexpr uint32_t kMaxDim = 1u << 30;  // keeps every derived size far from overflow

Status bad(const std::string& what) { return Status::Invalid("packed weights: " + what); }

uint64_t align64(uint64_t v) { return (v + 63) & ~uint64_t{63}; }

int popcount64(uint64_t v) { return __builtin_popcountll(v); }

bool is_affine_table(const int8_t* t, int bits) {
  const int half = 1 << (bits - 1);
  for (int c = 0; c < (1 << bits); ++c)
    if (t[c] != c - half) return false;
  return true;
}

struct Expected {
  uint64_t nblocks, ngroups, codes_dense, bitmap, offsets, codebook, scales;
};

Status check_header(const PackedHeader& h, Expected* e) {
  if (std::memcmp(h.magic, "EKPW", 4) != 0) return bad("bad magic (expected \"EKPW\")");
  if (h.version != kPackedVersion) return bad("unsupported version " + std::to_string(h.version));
  if (h.bits < 1 || h.bits > 8) return bad("bits must be 1..8, got " + std::to_string(h.bits));
  if (h.flags & ~0x0Fu) return bad("unknown flag bits " + std::to_string(h.flags));
  if (h.N < 1 || h.N > kMaxDim) return bad("N out of range: " + std::to_string(h.N));
  if (h.K < 1 || h.K > kMaxDim) return bad("K out of range: " + std::to_string(h.K));
  if (h.group_size % kBlockK != 0 || h.group_size > kMaxDim)
    return bad("group_size must be 0 or a multiple of 64, got " + std::to_string(h.group_size));
  if (h.reserved != 0) return bad("reserved field must be 0");
  const bool sparse = h.flags & kFlagSparse, nm = h.flags & kFlagNM;
  if (nm) {
    if (!sparse) return bad("N:M flag requires the sparse flag");
    if (h.nm_m < 1 || h.nm_n < 1 || h.nm_n > h.nm_m || 64 % h.nm_m != 0 || h.K % h.nm_m != 0)
      return bad("invalid N:M " + std::to_string(h.nm_n) + ":" + std::to_string(h.nm_m));
  } else if (h.nm_n != 0 || h.nm_m != 0) {
    return bad("nm_n/nm_m must be 0 without the N:M flag");
  }
  e->nblocks = (uint64_t{h.K} + kBlockK - 1) / kBlockK;
  e->ngroups = h.group_size == 0 ? 1 : (uint64_t{h.K} + h.group_size - 1) / h.group_size;
  e->codes_dense = uint64_t{h.N} * e->nblocks * 8 * h.bits;
  e->bitmap = sparse ? uint64_t{h.N} * e->nblocks * 8 : 0;
  e->offsets = sparse ? (uint64_t{h.N} + 1) * 4 : 0;
  e->codebook = ((h.flags & kFlagCodebookPerRow) ? uint64_t{h.N} : 1) << h.bits;
  e->scales = uint64_t{h.N} * e->ngroups * 4;
  if (!sparse && h.codes_bytes != e->codes_dense)
    return bad("codes_bytes " + std::to_string(h.codes_bytes) + " != " + std::to_string(e->codes_dense));
  if (sparse && (h.codes_bytes % (8 * h.bits) != 0 || h.codes_bytes > e->codes_dense))
    return bad("sparse codes_bytes " + std::to_string(h.codes_bytes) + " is not a whole number of blocks within the dense size");
  if (h.bitmap_bytes != e->bitmap) return bad("bitmap_bytes does not match N and K");
  if (h.offsets_bytes != e->offsets) return bad("offsets_bytes does not match N");
  if (h.codebook_bytes != e->codebook) return bad("codebook_bytes does not match bits and flags");
  if (h.scales_bytes != e->scales) return bad("scales_bytes does not match N, K and group_size");
  return Status::Ok();
}

// Sparse sections: row offsets consistent with bitmap popcounts, no padding bits, N:M counts.
Status check_sparse(const PackedLinear& w, uint64_t codes_bytes) {
  if (w.row_vblock[0] != 0) return bad("row offsets must start at 0");
  const int pad_bits = w.Kpad - w.K;
  const uint64_t pad_mask = pad_bits ? ~uint64_t{0} << (64 - pad_bits) : 0;
  for (int n = 0; n < w.N; ++n) {
    const uint64_t* bm = w.bitmaps + static_cast<size_t>(n) * w.nblocks;
    uint64_t nnz = 0;
    for (int b = 0; b < w.nblocks; ++b) {
      uint64_t v;
      std::memcpy(&v, bm + b, 8);
      nnz += popcount64(v);
      if (w.nm_m) {
        const uint64_t gmask = w.nm_m == 64 ? ~uint64_t{0} : (uint64_t{1} << w.nm_m) - 1;
        const int valid = b == w.nblocks - 1 ? 64 - pad_bits : 64;
        for (int j = 0; j < valid; j += w.nm_m)
          if (popcount64((v >> j) & gmask) != w.nm_n)
            return bad("row " + std::to_string(n) + " violates " + std::to_string(w.nm_n) + ":" +
                       std::to_string(w.nm_m) + " at k=" + std::to_string(64 * b + j));
      }
    }
    if (w.bitmaps[static_cast<size_t>(n) * w.nblocks + w.nblocks - 1] & pad_mask)
      return bad("bitmap bits set beyond K in row " + std::to_string(n));
    const uint64_t lo = w.row_vblock[n], hi = w.row_vblock[n + 1];
    if (hi < lo || hi - lo != (nnz + 63) / 64)
      return bad("row offsets disagree with bitmap popcounts at row " + std::to_string(n));
  }
  if (uint64_t{w.row_vblock[w.N]} * w.block_bytes() != codes_bytes)
    return bad("row offsets disagree with codes_bytes");
  return Status::Ok();
}

// wsum[n, g] = sum of the (stored) weights of row n in group g, over k < K.
// Derives wsum and checks that padding codes are 0 (docs/format.md §1.1, §1.5): kernels may
// multiply padding codes with zero activations, but some (e.g. AVX2's affine path) also sum
// codes over whole blocks, so a non-zero padding code would change their results.
// Sums wrap modulo 2^32 like every accumulator (unsigned: no signed-overflow UB).
Status compute_wsum(PackedLinear& w) {
  const int gb = kernels::group_blocks(w);
  std::vector<uint32_t> sums(static_cast<size_t>(w.N) * w.ngroups, 0);
  uint8_t codes[64];
  for (int n = 0; n < w.N; ++n) {
    const int8_t* t = w.table(n);
    uint32_t* ws = sums.data() + static_cast<size_t>(n) * w.ngroups;
    if (!w.sparse) {
      const uint8_t* row = w.codes + static_cast<size_t>(n) * w.nblocks * w.block_bytes();
      for (int b = 0; b < w.nblocks; ++b) {
        kernels::decode_block_scalar(w.planes, row + b * w.block_bytes(), codes);
        const int valid = b == w.nblocks - 1 ? w.K - 64 * b : 64;
        for (int j = 0; j < valid; ++j) ws[b / gb] += static_cast<uint32_t>(t[codes[j]]);
        for (int j = valid; j < 64; ++j)
          if (codes[j]) return bad("row " + std::to_string(n) + ": padding code at k=" +
                                   std::to_string(64 * b + j) + " is not 0");
      }
      continue;
    }
    const uint8_t* stream = kernels::sparse_row_codes(w, n);
    int64_t pos = 0, decoded_vb = -1;
    for (int b = 0; b < w.nblocks; ++b) {
      uint64_t bm = w.bitmaps[static_cast<size_t>(n) * w.nblocks + b];
      for (; bm; bm &= bm - 1, ++pos) {
        if (pos / 64 != decoded_vb) {
          decoded_vb = pos / 64;
          kernels::decode_block_scalar(w.planes, stream + decoded_vb * w.block_bytes(), codes);
        }
        ws[b / gb] += static_cast<uint32_t>(t[codes[pos % 64]]);
      }
    }
    if (pos % 64) {  // the rest of the row's last virtual block is padding
      if (pos / 64 != decoded_vb)
        kernels::decode_block_scalar(w.planes, stream + (pos / 64) * w.block_bytes(), codes);
      for (int j = static_cast<int>(pos % 64); j < 64; ++j)
        if (codes[j]) return bad("row " + std::to_string(n) + ": padding code " + std::to_string(j) +
                                 " of the last compacted block is not 0");
    }
  }
  w.wsum.assign(sums.size(), 0);
  for (size_t i = 0; i < sums.size(); ++i) w.wsum[i] = static_cast<int32_t>(sums[i]);
  return Status::Ok();
}

}  // namespace

PlaneSplit plane_split(int bits) {
  static const int widths[9][3] = {{0, 0, 0}, {1, 0, 0}, {2, 0, 0}, {2, 1, 0}, {4, 0, 0},
                                   {4, 1, 0}, {4, 2, 0}, {4, 2, 1}, {8, 0, 0}};
  PlaneSplit ps{};
  if (bits < 1 || bits > 8) return ps;
  int shift = 0;
  for (int i = 0; i < 3 && widths[bits][i]; ++i) {
    ps.width[i] = widths[bits][i];
    ps.shift[i] = shift;
    shift += widths[bits][i];
    ps.count = i + 1;
  }
  return ps;
}

size_t PackedLinear::stored_bytes() const {
  size_t codes_b = sparse ? static_cast<size_t>(row_vblock[N]) * block_bytes()
                          : static_cast<size_t>(N) * nblocks * block_bytes();
  size_t b = codes_b + static_cast<size_t>(codebook_per_row ? N : 1) * (1u << bits) +
             static_cast<size_t>(N) * ngroups * 4;
  if (sparse) b += static_cast<size_t>(N) * nblocks * 8 + (static_cast<size_t>(N) + 1) * 4;
  return b;
}

Status make_packed_linear(const PackedHeader& h, const uint8_t* codes, size_t codes_len,
                          const uint64_t* bitmaps, size_t bitmaps_len,
                          const uint32_t* row_vblock, size_t offsets_len,
                          const int8_t* codebook, size_t codebook_len,
                          const float* scales, size_t scales_len, PackedLinear* out) {
  Expected e{};
  Status st = check_header(h, &e);
  if (!st.ok()) return st;
  if (codes_len != h.codes_bytes) return bad("codes section is " + std::to_string(codes_len) + " bytes, header says " + std::to_string(h.codes_bytes));
  if (bitmaps_len != h.bitmap_bytes) return bad("bitmap section size does not match the header");
  if (offsets_len != h.offsets_bytes) return bad("offsets section size does not match the header");
  if (codebook_len != h.codebook_bytes) return bad("codebook section size does not match the header");
  if (scales_len != h.scales_bytes) return bad("scales section size does not match the header");
  if ((h.codes_bytes && !codes) || (h.bitmap_bytes && !bitmaps) || (h.offsets_bytes && !row_vblock) || !codebook || !scales)
    return bad("missing section");
  if ((reinterpret_cast<uintptr_t>(bitmaps) % 8) || (reinterpret_cast<uintptr_t>(row_vblock) % 4) ||
      (reinterpret_cast<uintptr_t>(scales) % 4))
    return bad("sections are not aligned to their element size");

  PackedLinear w;
  w.N = static_cast<int32_t>(h.N);
  w.K = static_cast<int32_t>(h.K);
  w.nblocks = static_cast<int32_t>(e.nblocks);
  w.Kpad = w.nblocks * kBlockK;
  w.bits = h.bits;
  w.planes = plane_split(h.bits);
  w.codebook_per_row = h.flags & kFlagCodebookPerRow;
  w.affine = h.flags & kFlagAffine;
  w.sparse = h.flags & kFlagSparse;
  w.nm_n = h.nm_n;
  w.nm_m = h.nm_m;
  w.group_size = static_cast<int32_t>(h.group_size);
  w.ngroups = static_cast<int32_t>(e.ngroups);
  w.codes = codes;
  w.bitmaps = bitmaps;
  w.row_vblock = row_vblock;
  w.codebook = codebook;
  w.scales = scales;

  const int ntables = w.codebook_per_row ? w.N : 1;
  bool all_affine = true;
  for (int i = 0; i < ntables && all_affine; ++i)
    all_affine = is_affine_table(codebook + (static_cast<size_t>(i) << w.bits), w.bits);
  if (all_affine != w.affine)
    return bad(w.affine ? "affine flag set but the codebook is not c - 2^(b-1)"
                        : "codebook is affine but the affine flag is not set");
  if (w.sparse) {
    st = check_sparse(w, h.codes_bytes);
    if (!st.ok()) return st;
  }
  const int tlen = 1 << w.bits;
  w.lut_stride = tlen < 16 ? 16 : tlen;
  w.lut.assign(static_cast<size_t>(ntables) * w.lut_stride, 0);
  for (int i = 0; i < ntables; ++i)
    std::memcpy(w.lut.data() + static_cast<size_t>(i) * w.lut_stride, codebook + (static_cast<size_t>(i) << w.bits), tlen);
  st = compute_wsum(w);
  if (!st.ok()) return st;
  *out = std::move(w);
  return Status::Ok();
}

bool packed_section_offsets(const PackedHeader& h, uint64_t off[5], uint64_t* total) {
  const uint64_t sizes[5] = {h.codes_bytes, h.bitmap_bytes, h.offsets_bytes, h.codebook_bytes, h.scales_bytes};
  uint64_t pos = sizeof(PackedHeader);
  for (int i = 0; i < 5; ++i) {
    if (sizes[i] > (uint64_t{1} << 48)) return false;
    off[i] = align64(pos);
    pos = off[i] + sizes[i];
  }
  *total = pos;
  return true;
}

Status parse_packed_linear(const uint8_t* buf, size_t len, PackedLinear* out) {
  if (!buf || len < sizeof(PackedHeader))
    return bad("buffer of " + std::to_string(len) + " bytes is shorter than the 64-byte header");
  if (reinterpret_cast<uintptr_t>(buf) % 8) return bad("buffer must be 8-byte aligned");
  PackedHeader h;
  std::memcpy(&h, buf, sizeof h);
  Expected e{};
  Status st = check_header(h, &e);
  if (!st.ok()) return st;
  uint64_t off[5], total = 0;
  if (!packed_section_offsets(h, off, &total)) return bad("section sizes overflow");
  if (total != len)
    return bad("buffer is " + std::to_string(len) + " bytes, the header implies " + std::to_string(total));
  return make_packed_linear(
      h, buf + off[0], h.codes_bytes, reinterpret_cast<const uint64_t*>(buf + off[1]), h.bitmap_bytes,
      reinterpret_cast<const uint32_t*>(buf + off[2]), h.offsets_bytes,
      reinterpret_cast<const int8_t*>(buf + off[3]), h.codebook_bytes,
      reinterpret_cast<const float*>(buf + off[4]), h.scales_bytes, out);
}

}  // namespace edgekit
