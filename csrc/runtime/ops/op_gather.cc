// gather (§2.6 code 55, numpy `take` along an axis) and nearest (code 58, the codec's hard
// scalar quantizer). gather is the one op whose eval can fail: indices are data.
#include <cmath>
#include <cstring>

#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

Status infer_gather(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "gather";
  Status st = check_counts(sig, op, 2, 2, 1, 0);
  if (!st.ok()) return st;
  const TensorInfo &tab = *sig.inputs[0], &idx = *sig.inputs[1];
  if (tab.dtype == DType::Packed) return fail(op, "table must not be packed");
  if (idx.dtype != DType::I64 && idx.dtype != DType::I32)
    return fail(op, std::string("indices must be i64 or i32, got ") + dtype_name(idx.dtype));
  int axis = 0;
  st = norm_axis(op, sig.ints[0], tab.rank, &axis);
  if (!st.ok()) return st;
  if (tab.rank - 1 + idx.rank > kMaxRank)
    return fail(op, "output rank " + std::to_string(tab.rank - 1 + idx.rank) + " exceeds " + std::to_string(kMaxRank));
  TensorInfo y;
  y.dtype = tab.dtype;
  y.rank = tab.rank - 1 + idx.rank;
  int r = 0;
  for (int d = 0; d < axis; ++d) y.dims[r++] = tab.dims[d];
  for (int d = 0; d < idx.rank; ++d) y.dims[r++] = idx.dims[d];
  for (int d = axis + 1; d < tab.rank; ++d) y.dims[r++] = tab.dims[d];
  outs->assign(1, y);
  return check_output(op, y);
}

template <class I>
Status gather_t(const OpContext& ctx) {
  const TensorInfo& tab = ctx.inputs[0]->info;
  const int axis = static_cast<int>(ctx.ints[0]);
  const int64_t outer = span(tab, 0, axis), V = tab.dims[axis];
  const size_t row = static_cast<size_t>(span(tab, axis + 1, tab.rank)) * dtype_size(tab.dtype);
  const int64_t n = ctx.inputs[1]->info.numel();
  const I* idx = static_cast<const I*>(ctx.inputs[1]->data);
  const auto* src = static_cast<const uint8_t*>(ctx.inputs[0]->data);
  auto* dst = static_cast<uint8_t*>(ctx.outputs[0]->data);
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= V)
      return fail("gather", "index " + std::to_string(static_cast<long long>(idx[i])) + " out of range [0, " +
                                std::to_string(V) + ")");
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < n; ++i, dst += row) std::memcpy(dst, src + (o * V + idx[i]) * row, row);
  return Status::Ok();
}

Status eval_gather(const OpContext& ctx) {
  return ctx.inputs[1]->info.dtype == DType::I64 ? gather_t<int64_t>(ctx) : gather_t<int32_t>(ctx);
}

Status infer_nearest(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "nearest";
  Status st = check_counts(sig, op, 2, 2, 0, 0);
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  if (st.ok()) st = check_input(sig, op, 1, "values", DType::F32, 1);
  if (!st.ok()) return st;
  outs->assign(1, *sig.inputs[0]);
  return Status::Ok();
}

Status eval_nearest(const OpContext& ctx) {
  const float* x = ctx.inputs[0]->cf();
  const float* v = ctx.inputs[1]->cf();
  const int64_t n = ctx.inputs[0]->info.numel(), L = ctx.inputs[1]->info.dims[0];
  float* y = ctx.outputs[0]->f();
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = 0;
    float bd = std::fabs(x[i] - v[0]);
    for (int64_t j = 1; j < L; ++j) {
      const float d = std::fabs(x[i] - v[j]);
      if (d < bd) bd = d, best = j;  // strict: ties keep the lower index
    }
    y[i] = v[best];
  }
  return Status::Ok();
}

}  // namespace

extern const OpDef op_gather = {55, "gather", infer_gather, no_scratch, nullptr, nullptr, eval_gather};
extern const OpDef op_nearest = {58, "nearest", infer_nearest, no_scratch, nullptr, nullptr, eval_nearest};

}  // namespace edgekit::runtime::ops
