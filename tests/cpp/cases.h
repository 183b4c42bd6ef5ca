// Edge-case generator for the linear kernel tests: each Case is one (weights, activations)
// problem, described so that a failure message says exactly what was run.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "packer.h"

namespace edgekit::test {

enum class Sparsity { kDense, kBitmap, kNM };
enum class XPattern { kRandom, kAllMin, kAllMax, kAlternate };
enum class Table { kAffine, kRandom, kExtremes };

struct Case {
  int M = 1, N = 1, K = 1, bits = 8;
  Sparsity sparsity = Sparsity::kDense;
  double density = 1.0;       // bitmap: probability a weight is stored
  int nm_n = 0, nm_m = 0;
  Table table = Table::kRandom;
  bool per_row = false;
  int group_size = 0;
  int32_t x_zp = 0;
  XPattern x = XPattern::kRandom;
  bool zero_row = false;      // row 0 is all zero (masked out, or codes of a zero entry)
  uint64_t seed = 0;

  std::string describe() const;
};

// The deterministic sweep over the edge cases of the test plan (bits x K x sparsity, M and N
// sweeps, extreme codebooks and activations) plus `extra` random cases.
std::vector<Case> make_cases(uint64_t seed, int extra);

// Materialize a case: the logical weights and the (M, K) activations.
LogicalWeights make_weights(const Case& c);
std::vector<int8_t> make_activations(const Case& c);

}  // namespace edgekit::test
