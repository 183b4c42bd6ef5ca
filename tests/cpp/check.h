// Shared bookkeeping of ek-test: counting checks and printing the first mismatch of each.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/linear/linear.h"

namespace edgekit::test {

struct Tally {
  int passed = 0, failed = 0;
  int printed = 0;            // failure reports shown (capped, the count is not)
  std::map<std::string, std::pair<int, int>> by_variant;  // name -> (passed, failed)
  void pass() { ++passed; }
  void fail(const std::string& msg) {
    ++failed;
    if (printed++ < 40) std::printf("FAIL %s\n", msg.c_str());
  }
  // The same, also counted for one variant so the summary shows what each one was run on.
  void pass(const std::string& variant) {
    pass();
    ++by_variant[variant].first;
  }
  void fail(const std::string& variant, const std::string& msg) {
    fail(msg);
    ++by_variant[variant].second;
  }
};

// A variant the binary was compiled with, and whether this CPU can run it.
struct VariantEntry {
  const kernels::LinearVariant* v;
  bool supported;
};

// Runs `v` on rows [n0, n1) into `acc` (which keeps its other entries), with a 64-byte
// aligned scratch between guard bytes; returns false if the variant wrote outside it.
bool run_variant(const kernels::LinearVariant& v, const PackedLinear& w, const int8_t* x, int M,
                 int32_t x_zp, int n0, int n1, std::vector<int32_t>& acc);

// "" if got == want, else where the first difference is: (m, n, g), want and got.
std::string first_mismatch(const std::vector<int32_t>& want, const std::vector<int32_t>& got,
                           int N, int ngroups);

}  // namespace edgekit::test
