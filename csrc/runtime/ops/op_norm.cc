// layer_norm (§2.6 code 10), softmax (11) and reduce_mean (59): reductions along one axis.
#include <algorithm>
#include <cmath>

#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

Status infer_layer_norm(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "layer_norm";
  Status st = check_counts(sig, op, 3, 3, 0, 1, {1, 2});
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  if (!st.ok()) return st;
  const TensorInfo& x = *sig.inputs[0];
  if (x.rank < 1) return fail(op, "x must have rank >= 1");
  const int64_t D = x.dims[x.rank - 1];
  st = check_bias(sig, op, 1, D, "gamma");
  if (st.ok()) st = check_bias(sig, op, 2, D, "beta");
  if (!st.ok()) return st;
  if (!(std::isfinite(sig.floats[0]) && sig.floats[0] > 0.0f))
    return fail(op, "eps must be finite and > 0, got " + std::to_string(sig.floats[0]));
  outs->assign(1, x);
  return Status::Ok();
}

// torch's order: mean, biased variance of (x - mean), rstd = 1/sqrt(var + eps),
// y = (x - mean) * rstd * gamma + beta.
// sum of x[i] (sq false) or of (x[i] - mean)^2 in double (sq true), in four partial sums.
double sum4(const float* x, int64_t n, float mean, bool sq) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  if (sq) {
    for (; i + 4 <= n; i += 4)
      for (int j = 0; j < 4; ++j) s[j] += double(x[i + j] - mean) * double(x[i + j] - mean);
  } else {
    for (; i + 4 <= n; i += 4)
      for (int j = 0; j < 4; ++j) s[j] += x[i + j];
  }
  double r = (s[0] + s[1]) + (s[2] + s[3]);
  for (; i < n; ++i) r += sq ? double(x[i] - mean) * double(x[i] - mean) : double(x[i]);
  return r;
}

Status eval_layer_norm(const OpContext& ctx) {
  const TensorInfo& xi = ctx.inputs[0]->info;
  const int64_t D = xi.dims[xi.rank - 1], rows = xi.numel() / D;
  const float* gamma = ctx.inputs[1] ? ctx.inputs[1]->cf() : nullptr;
  const float* beta = ctx.inputs[2] ? ctx.inputs[2]->cf() : nullptr;
  const float eps = ctx.floats[0];
  const float* x = ctx.inputs[0]->cf();
  float* y = ctx.outputs[0]->f();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    float* yr = y + r * D;
    // double: rows of thousands of values keep float32-exact means. Four partial sums break
    // the add-latency chain (and let the compiler pair them in vector registers); a double
    // sum of float32 values is exact or off by a double ulp, so the float mean is unchanged.
    const float mean = static_cast<float>(sum4(xr, D, 0.0f, false) / D);
    const float rstd = 1.0f / std::sqrt(static_cast<float>(sum4(xr, D, mean, true) / D) + eps);
    if (gamma && beta) {
      for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
    } else {
      for (int64_t i = 0; i < D; ++i) {
        float v = (xr[i] - mean) * rstd;
        if (gamma) v *= gamma[i];
        if (beta) v += beta[i];
        yr[i] = v;
      }
    }
  }
  return Status::Ok();
}

Status infer_softmax(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "softmax";
  Status st = check_counts(sig, op, 1, 1, 1, 0);
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  int axis = 0;
  if (st.ok()) st = norm_axis(op, sig.ints[0], sig.inputs[0]->rank, &axis);
  if (!st.ok()) return st;
  outs->assign(1, *sig.inputs[0]);
  return Status::Ok();
}

Status eval_softmax(const OpContext& ctx) {
  const TensorInfo& xi = ctx.inputs[0]->info;
  const int axis = static_cast<int>(ctx.ints[0]);
  const int64_t outer = span(xi, 0, axis), L = xi.dims[axis], inner = span(xi, axis + 1, xi.rank);
  const float* x = ctx.inputs[0]->cf();
  float* y = ctx.outputs[0]->f();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) {
      const float* xs = x + o * L * inner + in;
      float* ys = y + o * L * inner + in;
      float mx = -INFINITY;
      for (int64_t i = 0; i < L; ++i) mx = std::max(mx, xs[i * inner]);
      float sum = 0.0f;
      for (int64_t i = 0; i < L; ++i) {
        // A row of -inf (fully masked) would give nan either way; subtracting -inf is avoided.
        const float e = std::exp(mx == -INFINITY ? xs[i * inner] : xs[i * inner] - mx);
        ys[i * inner] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
      for (int64_t i = 0; i < L; ++i) ys[i * inner] *= inv;
    }
  return Status::Ok();
}

Status infer_reduce_mean(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "reduce_mean";
  Status st = check_counts(sig, op, 1, 1, 2, 0);
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  int axis = 0;
  if (st.ok()) st = norm_axis(op, sig.ints[0], sig.inputs[0]->rank, &axis);
  if (st.ok()) st = check_range(op, "keepdim", sig.ints[1], 0, 1);
  if (!st.ok()) return st;
  TensorInfo y = *sig.inputs[0];
  if (sig.ints[1]) {
    y.dims[axis] = 1;
  } else {
    for (int i = axis; i + 1 < y.rank; ++i) y.dims[i] = y.dims[i + 1];
    y.dims[--y.rank] = 0;
  }
  outs->assign(1, y);
  return Status::Ok();
}

Status eval_reduce_mean(const OpContext& ctx) {
  const TensorInfo& xi = ctx.inputs[0]->info;
  const int axis = static_cast<int>(ctx.ints[0]);
  const int64_t outer = span(xi, 0, axis), L = xi.dims[axis], inner = span(xi, axis + 1, xi.rank);
  const float* x = ctx.inputs[0]->cf();
  float* y = ctx.outputs[0]->f();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) {
      float s = 0.0f;
      for (int64_t i = 0; i < L; ++i) s += x[(o * L + i) * inner + in];
      y[o * inner + in] = s / static_cast<float>(L);
    }
  return Status::Ok();
}

}  // namespace

extern const OpDef op_layer_norm = {10, "layer_norm", infer_layer_norm, no_scratch, nullptr, nullptr,
                                    eval_layer_norm};
extern const OpDef op_softmax = {11, "softmax", infer_softmax, no_scratch, nullptr, nullptr, eval_softmax};
extern const OpDef op_reduce_mean = {59, "reduce_mean", infer_reduce_mean, no_scratch, nullptr, nullptr,
                                     eval_reduce_mean};

}  // namespace edgekit::runtime::ops
