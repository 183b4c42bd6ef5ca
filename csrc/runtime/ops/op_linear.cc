// linear (§2.6 code 2) and matmul (code 12): float32 GEMMs for layers kept in float.
#include <algorithm>

#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

Status infer_linear(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "linear";
  Status st = check_counts(sig, op, 3, 3, 0, 0, {2});
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  if (st.ok()) st = check_input(sig, op, 1, "W", DType::F32, 2);
  if (!st.ok()) return st;
  const TensorInfo &x = *sig.inputs[0], &w = *sig.inputs[1];
  if (x.rank < 1 || x.dims[x.rank - 1] != w.dims[1])
    return fail(op, "x " + shape_str(x) + " does not end in K = " + std::to_string(w.dims[1]) + " of W " +
                        shape_str(w));
  st = check_bias(sig, op, 2, w.dims[0], "bias");
  if (!st.ok()) return st;
  TensorInfo y = x;
  y.dims[y.rank - 1] = w.dims[0];
  outs->assign(1, y);
  return check_output(op, y);
}

Status eval_linear(const OpContext& ctx) {
  const TensorInfo& wi = ctx.inputs[1]->info;
  const int64_t N = wi.dims[0], K = wi.dims[1], M = ctx.inputs[0]->info.numel() / K;
  const float *x = ctx.inputs[0]->cf(), *w = ctx.inputs[1]->cf();
  const float* b = ctx.inputs[2] ? ctx.inputs[2]->cf() : nullptr;
  float* y = ctx.outputs[0]->f();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) y[m * N + n] = dot8(x + m * K, w + n * K, K) + (b ? b[n] : 0.0f);
  return Status::Ok();
}

Status infer_matmul(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "matmul";
  Status st = check_counts(sig, op, 2, 2, 0, 0);
  if (st.ok()) st = check_input(sig, op, 0, "a", DType::F32, -1);
  if (st.ok()) st = check_input(sig, op, 1, "b", DType::F32, -1);
  if (!st.ok()) return st;
  const TensorInfo &a = *sig.inputs[0], &b = *sig.inputs[1];
  if (a.rank < 2 || b.rank < 2) return fail(op, "a " + shape_str(a) + " and b " + shape_str(b) + " need rank >= 2");
  if (a.dims[a.rank - 1] != b.dims[b.rank - 2])
    return fail(op, "a " + shape_str(a) + " and b " + shape_str(b) + " disagree on K");
  TensorInfo ba = a, bb = b, lead;
  ba.rank -= 2, bb.rank -= 2;
  st = broadcast_shape(op, ba, bb, DType::F32, &lead);
  if (!st.ok()) return st;
  TensorInfo y = lead;
  y.rank = lead.rank + 2;
  y.dims[lead.rank] = a.dims[a.rank - 2];
  y.dims[lead.rank + 1] = b.dims[b.rank - 1];
  outs->assign(1, y);
  return check_output(op, y);
}

Status eval_matmul(const OpContext& ctx) {
  const TensorInfo &a = ctx.inputs[0]->info, &b = ctx.inputs[1]->info, &yi = ctx.outputs[0]->info;
  const int64_t M = a.dims[a.rank - 2], K = a.dims[a.rank - 1], N = b.dims[b.rank - 1];
  // Broadcast over the leading dims: one "element" of each operand is a whole matrix.
  TensorInfo la = a, lb = b, ly = yi;
  la.rank -= 2, lb.rank -= 2, ly.rank -= 2;
  const TensorInfo* ins[2] = {&la, &lb};
  const Broadcaster bc(ly, ins, 2);
  const float *pa = ctx.inputs[0]->cf(), *pb = ctx.inputs[1]->cf();
  float* py = ctx.outputs[0]->f();
  bc.for_each_row([&](int64_t out, const int64_t* off, int64_t len, const int64_t* inner) {
    for (int64_t e = 0; e < len; ++e) {
      const float* A = pa + (off[0] + e * inner[0]) * M * K;
      const float* B = pb + (off[1] + e * inner[1]) * K * N;
      float* Y = py + (out + e) * M * N;
      for (int64_t m = 0; m < M; ++m) {
        float* yr = Y + m * N;
        std::fill(yr, yr + N, 0.0f);
        for (int64_t k = 0; k < K; ++k) {  // rows of B stream contiguously
          const float av = A[m * K + k];
          const float* br = B + k * N;
          for (int64_t n = 0; n < N; ++n) yr[n] += av * br[n];
        }
      }
    }
  });
  return Status::Ok();
}

}  // namespace

extern const OpDef op_linear = {2, "linear", infer_linear, no_scratch, nullptr, nullptr, eval_linear};
extern const OpDef op_matmul = {12, "matmul", infer_matmul, no_scratch, nullptr, nullptr, eval_matmul};

}  // namespace edgekit::runtime::ops
