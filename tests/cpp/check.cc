#include "check.h"

#include <cstdint>
#include <cstring>
#include <sstream>

namespace edgekit::test {

bool run_variant(const kernels::LinearVariant& v, const PackedLinear& w, const int8_t* x, int M,
                 int32_t x_zp, int n0, int n1, std::vector<int32_t>& acc) {
  constexpr size_t kGuard = 64;
  constexpr uint8_t kPoison = 0xA5;
  const size_t need = v.scratch_bytes(w, M);
  // 64-byte aligned like the bindings' scratch (csrc/bindings): x86 variants rely on it.
  std::vector<uint8_t> buf(need + kGuard + 64, kPoison);
  const size_t lead = (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
  uint8_t* scratch = buf.data() + lead;
  v.accumulate(w, x, M, x_zp, acc.data(), n0, n1, scratch);
  for (size_t i = 0; i < lead; ++i)
    if (buf[i] != kPoison) return false;
  for (size_t i = lead + need; i < buf.size(); ++i)
    if (buf[i] != kPoison) return false;
  return true;
}

std::string first_mismatch(const std::vector<int32_t>& want, const std::vector<int32_t>& got,
                           int N, int ngroups) {
  if (want.size() != got.size())
    return "size " + std::to_string(got.size()) + " != " + std::to_string(want.size());
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
