// The runner's view of dispatch (csrc/dispatch): which variants exist, which this CPU can
// run, and which one dispatch selects.
#pragma once
#include <string>
#include <vector>

#include "check.h"

namespace edgekit::test {

// Every compiled linear variant (the reference first), flagged with CPU support.
std::vector<VariantEntry> linear_variants();

// The variant dispatch selects for this CPU, honouring EDGEKIT_ISA; false and an error text
// when dispatch refuses.
bool dispatch_linear(const kernels::LinearVariant** out, std::string* error);

// Detected CPU features, one line.
std::string cpu_description();

}  // namespace edgekit::test
