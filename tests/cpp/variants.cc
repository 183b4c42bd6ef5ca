#include "variants.h"

#include "dispatch/cpu.h"
#include "dispatch/dispatch.h"

namespace edgekit::test {

std::vector<VariantEntry> linear_variants() {
  std::vector<VariantEntry> out;
  for (const kernels::LinearVariant* v : dispatch::compiled_linear_variants())
    out.push_back({v, dispatch::isa_supported(v->isa)});
  return out;
}

bool dispatch_linear(const kernels::LinearVariant** out, std::string* error) {
  const Status st = dispatch::default_linear_variant(out);
  if (!st.ok()) *error = st.message();
  return st.ok();
}

std::string cpu_description() {
  const dispatch::CpuFeatures& f = dispatch::cpu_features();
  std::string s;
  const std::pair<const char*, bool> flags[] = {{"avx2", f.avx2},       {"avx512", f.avx512},
                                                {"avx512vbmi2", f.avx512vbmi2},
                                                {"neon", f.neon},       {"neondot", f.neondot}};
  for (const auto& [name, on] : flags)
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  return s.empty() ? "(no SIMD extension detected)" : s;
}

}  // namespace edgekit::test
