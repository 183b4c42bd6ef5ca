// Packed low-bit weight matrices: the layout of docs/format.md §1, as a validated,
// non-owning view. The reader never trusts a size, count or offset it was given.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgekit/status.h"

namespace edgekit {

constexpr int kBlockK = 64;           // codes per block (docs/format.md §1.1)
constexpr uint32_t kPackedVersion = 1;

enum PackedFlags : uint8_t {
  kFlagCodebookPerRow = 1u << 0,
  kFlagAffine = 1u << 1,
  kFlagSparse = 1u << 2,
  kFlagNM = 1u << 3,
};

struct PackedHeader {                 // 64 bytes, the serialized header
  char magic[4];                      // "EKPW"
  uint16_t version;
  uint8_t bits;
  uint8_t flags;
  uint32_t N, K, group_size;
  uint8_t nm_n, nm_m;
  uint16_t reserved;
  uint64_t codes_bytes, bitmap_bytes, offsets_bytes, codebook_bytes, scales_bytes;
};
static_assert(sizeof(PackedHeader) == 64, "PackedHeader must be 64 bytes");

// Planes of a b-bit code (docs/format.md §1.2).
struct PlaneSplit {
  int count;
  int width[3];
  int shift[3];
};
PlaneSplit plane_split(int bits);

// A validated view over packed weights. Pointers point into caller-owned memory.
struct PackedLinear {
  int32_t N = 0, K = 0, Kpad = 0, nblocks = 0;
  int bits = 0;
  PlaneSplit planes{};
  bool codebook_per_row = false;
  bool affine = false;
  bool sparse = false;
  int nm_n = 0, nm_m = 0;             // both 0 unless N:M
  int32_t group_size = 0, ngroups = 1;
  const uint8_t* codes = nullptr;     // dense: N*nblocks*8*bits bytes; sparse: compacted
  const uint64_t* bitmaps = nullptr;  // sparse: N*nblocks words
  const uint32_t* row_vblock = nullptr;  // sparse: N+1
  const int8_t* codebook = nullptr;   // (per_row ? N : 1) * 2^bits
  const float* scales = nullptr;      // N * ngroups
  std::vector<int32_t> wsum;          // derived: [n * ngroups + g] = sum_{k<K in g} w[n,k]
                                      // (codebook domain, masked weights count as 0)
  std::vector<int8_t> lut;            // derived: each table padded to lut_stride entries so
  int lut_stride = 16;                // 16-byte table loads never read past the codebook

  size_t block_bytes() const { return static_cast<size_t>(8) * bits; }
  const int8_t* table(int n) const { return codebook + (codebook_per_row ? n : 0) * (1 << bits); }
  const int8_t* padded_table(int n) const {
    return lut.data() + static_cast<size_t>(codebook_per_row ? n : 0) * lut_stride;
  }
  // Stored bytes as counted by docs/format.md §1.8.
  size_t stored_bytes() const;
};

// Validate the sections and build a view (computes wsum). Sections must stay alive.
Status make_packed_linear(const PackedHeader& h, const uint8_t* codes, size_t codes_len,
                          const uint64_t* bitmaps, size_t bitmaps_len,
                          const uint32_t* row_vblock, size_t offsets_len,
                          const int8_t* codebook, size_t codebook_len,
                          const float* scales, size_t scales_len, PackedLinear* out);

// Parse the serialized form (header + 64-aligned sections) from [buf, buf+len); the
// buffer must end exactly after the scales section.
Status parse_packed_linear(const uint8_t* buf, size_t len, PackedLinear* out);

// Byte offset of each section in the serialized form (codes, bitmaps, offsets, codebook,
// scales) and the total length; sizes come from the header. False if they overflow.
bool packed_section_offsets(const PackedHeader& h, uint64_t off[5], uint64_t* total);

}  // namespace edgekit
