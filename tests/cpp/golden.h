// Golden vectors written by Python (tests/golden): the C++ reader and every variant must
// reproduce the Python-computed accumulators from the Python-written bytes, and the test
// packer must write the same bytes from the same logical inputs.
#pragma once
#include <string>
#include <vector>

#include "check.h"

namespace edgekit::test {

// tests/golden of the source tree this binary was built from ("" when not known).
std::string default_golden_dir();

// Checks every golden vector in `dir`; a missing directory is reported and skipped (devices
// get the binary without the source tree).
void check_golden(const std::string& dir, const std::vector<VariantEntry>& variants, Tally& t);

}  // namespace edgekit::test
