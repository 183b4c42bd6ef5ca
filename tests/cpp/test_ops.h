// Harness of the op tests (test_ops*.cc): builds tensors, runs one OpDef through
// infer -> scratch_bytes -> eval exactly as the executor does, with scratch between guard
// bytes, and compares with straightforward loops.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "check.h"
#include "format/packed.h"
#include "packer.h"
#include "runtime/op.h"

namespace edgekit::test {

using runtime::DType;
using runtime::TensorInfo;

// A tensor with owned storage (8-byte aligned); packed ones also keep their parsed view.
struct Ten {
  TensorInfo info;
  std::vector<uint64_t> store;
  size_t bytes = 0;
  std::shared_ptr<PackedLinear> packed;

  void* data() { return store.data(); }
  float* f() { return reinterpret_cast<float*>(store.data()); }
  template <class T>
  T* as() { return reinterpret_cast<T*>(store.data()); }
  int64_t numel() const { return info.numel(); }
};

Ten make_ten(DType dt, std::initializer_list<int64_t> dims);
Ten make_ten(DType dt, const std::vector<int64_t>& dims);
// Uniform random floats in [lo, hi).
Ten rand_f32(std::initializer_list<int64_t> dims, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
Ten packed_ten(const LogicalWeights& lw);  // serialize with the test packer, parse with csrc/format

struct OpRun {
  Status infer, eval;
  std::vector<Ten> outs;
  bool scratch_ok = true;  // no write outside [scratch, scratch + scratch_bytes)
  size_t scratch_bytes = 0;
};

// One op call: inputs (nullptr = absent optional operand), attributes, kernel variant and
// thread count (> 1 runs a real ThreadPool). `sized_exactly` false hides the parsed packed
// weights from scratch_bytes (OpSignature::input_prepared), which must then over-estimate.
OpRun run_op(int code, const std::vector<Ten*>& ins, const std::vector<int64_t>& ints,
             const std::vector<float>& floats, const kernels::LinearVariant* v = nullptr,
             int threads = 1, bool sized_exactly = true);

// "" when equal within |a-b| <= atol + rtol*|b| (exact when both are 0), else where not.
std::string compare(const float* got, const float* want, int64_t n, float atol = 0.0f, float rtol = 0.0f);

// Checks registered by each test_ops*.cc; `variants` are the linear variants this CPU runs.
void check_qops(Tally& t, const std::vector<VariantEntry>& variants);
void check_float_ops(Tally& t);
void check_shape_ops(Tally& t);

// All op tests (called by test_main.cc).
void check_ops(Tally& t, const std::vector<VariantEntry>& variants);

}  // namespace edgekit::test
