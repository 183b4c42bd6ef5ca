// Test-only packer: writes the serialized packed-linear form of docs/format.md §1 from a
// logical description (codes, mask, codebook, scales). It is written from the spec, not from
// the Python writer, so that comparing the two (tests/golden) checks the spec and both codes.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace edgekit::test {

// A logical packed matrix: what the user means, before any layout decision.
struct LogicalWeights {
  int N = 0, K = 0, bits = 0;
  std::vector<uint8_t> codes;     // N*K codes in [0, 2^bits)
  std::vector<uint8_t> mask;      // N*K (1 = stored); empty = dense
  int nm_n = 0, nm_m = 0;         // N:M guarantee (mask must satisfy it)
  bool per_row = false;
  std::vector<int8_t> codebook;   // (per_row ? N : 1) * 2^bits
  int group_size = 0;             // 0 or a multiple of 64
  std::vector<float> scales;      // N * ngroups

  int ngroups() const { return group_size > 0 ? (K + group_size - 1) / group_size : 1; }
  bool sparse() const { return !mask.empty(); }
  bool stored(int n, int k) const { return mask.empty() || mask[static_cast<size_t>(n) * K + k]; }
  int8_t weight(int n, int k) const;  // codebook value, 0 where not stored
  bool affine() const;                // every table is c - 2^(bits-1)
};

// Header + sections, each section at a multiple of 64 from the start (docs/format.md §1.9).
std::vector<uint8_t> pack(const LogicalWeights& w);

// The inverse of pack(), also written from the spec (independent of csrc/format): the
// logical matrix stored in `bytes`. Codes of weights that are not stored come back as 0.
// For trusted test files only; returns false with a reason on malformed input.
bool unpack(const std::vector<uint8_t>& bytes, LogicalWeights* out, std::string* error);

// int32 accumulators by the definition in linear.h, computed in int64 straight from the
// logical matrix (no layout involved): the oracle the reference itself is checked against.
std::vector<int32_t> oracle_accumulate(const LogicalWeights& w, const int8_t* x, int M,
                                       int32_t x_zp);

}  // namespace edgekit::test
