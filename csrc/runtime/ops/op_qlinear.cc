// qlinear (§2.6 code 1): y = dequant(W · q(x)) + bias with int8 activations and the packed
// weight, through the session's linear kernel and the shared float epilogue.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/linear/epilogue.h"
#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

constexpr const char* kOp = "qlinear";

Status infer(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  Status st = check_counts(sig, kOp, 3, 3, 2, 1, {2});
  if (st.ok()) st = check_input(sig, kOp, 0, "x", DType::F32, -1);
  if (st.ok()) st = check_input(sig, kOp, 1, "W", DType::Packed, 2);
  if (st.ok()) st = check_qparams(sig, kOp, 0, 0);
  if (!st.ok()) return st;
  const TensorInfo& x = *sig.inputs[0];
  const TensorInfo& w = *sig.inputs[1];
  if (x.rank < 1) return fail(kOp, "x must have rank >= 1");
  if (x.dims[x.rank - 1] != w.dims[1])
    return fail(kOp, "x " + shape_str(x) + " has K = " + std::to_string(x.dims[x.rank - 1]) +
                         " but W " + shape_str(w) + " expects K = " + std::to_string(w.dims[1]));
  st = check_bias(sig, kOp, 2, w.dims[0], "bias");
  if (!st.ok()) return st;
  if (x.numel() / w.dims[1] > INT32_MAX) return fail(kOp, "more than 2^31 - 1 rows");  // the kernels' M is an int
  TensorInfo y = x;
  y.dims[y.rank - 1] = w.dims[0];
  outs->assign(1, y);
  return check_output(kOp, y);
}

// Scratch layout, shared by scratch_bytes (base null: sizes only) and eval.
struct Layout {
  int8_t* xq;
  int32_t* acc;
  float* row_scale;
  QGemm g;
  size_t bytes;
};

Layout layout(void* base, const PackedLinear& w, int M, const kernels::LinearVariant* v, int threads) {
  Carver c(base);
  Layout l;
  l.xq = c.take<int8_t>(static_cast<size_t>(M) * w.K);
  l.acc = c.take<int32_t>(static_cast<size_t>(M) * w.N * w.ngroups);
  l.row_scale = c.take<float>(M);
  l.g = carve_qgemm(c, w, v, threads, M);
  l.g.w = &w;
  l.bytes = c.used();
  return l;
}

size_t scratch(const OpSignature& sig, const std::vector<TensorInfo>&, const kernels::LinearVariant* v,
               int threads) {
  const TensorInfo& x = *sig.inputs[0];
  const int M = static_cast<int>(x.numel() / x.dims[x.rank - 1]);
  return layout(nullptr, packed_for_sizing(sig, 1), M, v, threads).bytes;
}

Status eval(const OpContext& ctx) {
  const auto& w = *static_cast<const PackedLinear*>(ctx.inputs[1]->prepared);
  const TensorRef& x = *ctx.inputs[0];
  const int K = w.K, N = w.N;
  const int M = static_cast<int>(x.info.numel() / K);
  const Layout l = layout(ctx.scratch, w, M, ctx.linear, ctx.threads);
  const float* bias = ctx.inputs[2] ? ctx.inputs[2]->cf() : nullptr;
  float* y = ctx.outputs[0]->f();
  if (ctx.ints[0] == 0) {
    const float xs = ctx.floats[0];
    const int32_t zp = static_cast<int32_t>(ctx.ints[1]);
    quantize_static(x.cf(), static_cast<int64_t>(M) * K, xs, zp, l.xq);
    qgemm_run(ctx, l.g, l.xq, 0, M, zp, l.acc, 1, N);
    kernels::epilogue_f32(w, l.acc, M, xs, bias, y);
    return Status::Ok();
  }
  for (int m = 0; m < M; ++m) {
    const float* xr = x.cf() + static_cast<size_t>(m) * K;
    float amax = 0.0f;
    for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    l.row_scale[m] = dynamic_scale(amax);
    quantize_static(xr, K, l.row_scale[m], 0, l.xq + static_cast<size_t>(m) * K);
  }
  qgemm_run(ctx, l.g, l.xq, 0, M, 0, l.acc, 1, N);
  const size_t row = static_cast<size_t>(N) * w.ngroups;
  for (int m = 0; m < M; ++m)
    kernels::epilogue_f32(w, l.acc + m * row, 1, l.row_scale[m], bias, y + static_cast<size_t>(m) * N);
  return Status::Ok();
}

}  // namespace

extern const OpDef op_qlinear = {1, kOp, infer, scratch, nullptr, nullptr, eval};

}  // namespace edgekit::runtime::ops
