// The table of compiled linear variants and the choice among them. Order is preference:
// the last supported entry is the default. EDGEKIT_ISA=<isa> overrides the default; an ISA
// that is not compiled in or not supported by this CPU is an error, never a silent fallback.
#pragma once
#include <string>
#include <vector>

#include "edgekit/status.h"
#include "kernels/linear/linear.h"

namespace edgekit::dispatch {

const std::vector<const kernels::LinearVariant*>& compiled_linear_variants();
bool isa_supported(const std::string& isa);  // by this CPU (ref always)
std::vector<const kernels::LinearVariant*> available_linear_variants();
// Exactly `isa`, or an error saying whether it is unknown, not compiled or unsupported.
Status find_linear_variant(const std::string& isa, const kernels::LinearVariant** out);
// EDGEKIT_ISA if set (validated as above), else the best available variant.
Status default_linear_variant(const kernels::LinearVariant** out);

// Runs a variant over all rows: scratch must hold variant.scratch_bytes(w, M) bytes.
void linear_accumulate(const kernels::LinearVariant& v, const PackedLinear& w, const int8_t* x,
                       int M, int32_t x_zp, int32_t* acc, void* scratch);

}  // namespace edgekit::dispatch
