#include "check.h"

#include <cstring>
#include <sstream>

namespace edgekit::test {

bool run_variant(const kernels::LinearVariant& v, const PackedLinear& w, const int8_t* x, int M,
                 int32_t x_zp, int n0, int n1, std::vector<int32_t>& acc) {
  constexpr size_t kGuard = 64;
  constexpr uint8_t kPoison = 0xA5;
  const size_t need = v.scratch_bytes(w, M);
  std::vector<uint8_t> scratch(need + kGuard, kPoison);
  v.accumulate(w, x, M, x_zp, acc.data(), n0, n1, scratch.data());
  for (size_t i = need; i < scratch.size(); ++i)
    if (scratch[i] != kPoison) return false;
  return true;
}

std::string first_mismatch(const std::vector<int32_t>& want, const std::vector<int32_t>& got,
                           int N, int ngroups) {
  if (want.size() != got.size()) return "size " + std::to_string(got.size()) + " != " + std::to_string(want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == got[i]) continue;
    const size_t per_m = static_cast<size_t>(N) * ngroups;
    std::ostringstream s;
    s << "first mismatch at m=" << i / per_m << " n=" << (i % per_m) / ngroups
      << " g=" << i % ngroups << ": want " << want[i] << ", got " << got[i];
    return s.str();
  }
  return "";
}

}  // namespace edgekit::test
