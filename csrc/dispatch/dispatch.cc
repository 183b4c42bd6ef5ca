#include "dispatch/dispatch.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "dispatch/cpu.h"

namespace edgekit::dispatch {

const std::vector<const kernels::LinearVariant*>& compiled_linear_variants() {
  static const std::vector<const kernels::LinearVariant*> v = {
      &kernels::linear_ref,
#if defined(EDGEKIT_HAVE_AVX2)
      &kernels::linear_avx2,
#endif
#if defined(EDGEKIT_HAVE_AVX512)
      &kernels::linear_avx512,
#endif
#if defined(EDGEKIT_HAVE_AVX512VBMI2)
      &kernels::linear_avx512vbmi2,
#endif
#if defined(EDGEKIT_HAVE_NEON)
      &kernels::linear_neon,
#endif
#if defined(EDGEKIT_HAVE_NEONDOT)
      &kernels::linear_neondot,
#endif
  };
  return v;
}

bool isa_supported(const std::string& isa) {
  const CpuFeatures& f = cpu_features();
  if (isa == "ref") return true;
  if (isa == "avx2") return f.avx2;
  if (isa == "avx512") return f.avx512;
  if (isa == "avx512vbmi2") return f.avx512vbmi2;
  if (isa == "neon") return f.neon;
  if (isa == "neondot") return f.neondot;
  return false;
}

std::vector<const kernels::LinearVariant*> available_linear_variants() {
  std::vector<const kernels::LinearVariant*> out;
  for (const auto* v : compiled_linear_variants())
    if (isa_supported(v->isa)) out.push_back(v);
  return out;
}

Status find_linear_variant(const std::string& isa, const kernels::LinearVariant** out) {
  static const char* known[] = {"ref", "avx2", "avx512", "avx512vbmi2", "neon", "neondot"};
  bool is_known = false;
  for (const char* k : known) is_known |= isa == k;
  if (!is_known)
    return Status::Invalid("unknown ISA '" + isa + "' (expected one of ref, avx2, avx512, avx512vbmi2, neon, neondot)");
  for (const auto* v : compiled_linear_variants()) {
    if (isa != v->isa) continue;
    if (!isa_supported(isa)) return Status::Invalid("ISA '" + isa + "' is compiled in but this CPU does not support it");
    *out = v;
    return Status::Ok();
  }
  return Status::Invalid("ISA '" + isa + "' is not compiled into this build");
}

Status default_linear_variant(const kernels::LinearVariant** out) {
  const char* env = std::getenv("EDGEKIT_ISA");
  if (env && *env) {
    Status st = find_linear_variant(env, out);
    if (!st.ok()) return Status::Invalid("EDGEKIT_ISA: " + st.message());
    return st;
  }
  // The last supported variant in compiled order; ref (first) is always supported.
  const auto& compiled = compiled_linear_variants();
  *out = *std::find_if(compiled.rbegin(), compiled.rend(),
                       [](const kernels::LinearVariant* v) { return isa_supported(v->isa); });
  return Status::Ok();
}

void linear_accumulate(const kernels::LinearVariant& v, const PackedLinear& w, const int8_t* x,
                       int M, int32_t x_zp, int32_t* acc, void* scratch) {
  // One thread for now; the n0/n1 split of LinearVariant is where rows get shared out.
  v.accumulate(w, x, M, x_zp, acc, 0, w.N, scratch);
}

}  // namespace edgekit::dispatch
