// Elementwise ops of §2.6: binary with numpy broadcasting (add, sub, mul, div, where, equal;
// any numeric dtype) and unary float32 activations (relu ... abs, glu, clamp; neg and abs
// also on i32/i64).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

// ---- binary -------------------------------------------------------------------------------

// The numeric dtypes of §2.7 (everything but packed).
bool numeric(DType t) { return t != DType::Packed; }

Status infer_binary_impl(const OpSignature& sig, std::vector<TensorInfo>* outs, const char* op, bool arith) {
  Status st = check_counts(sig, op, 2, 2, 0, 0);
  if (!st.ok()) return st;
  const TensorInfo &a = *sig.inputs[0], &b = *sig.inputs[1];
  if (a.dtype != b.dtype || !numeric(a.dtype))
    return fail(op, std::string("a and b need one numeric dtype, got ") + dtype_name(a.dtype) + " and " +
                        dtype_name(b.dtype));
  TensorInfo y;
  st = broadcast_shape(op, a, b, arith ? a.dtype : DType::U8, &y);
  if (!st.ok()) return st;
  outs->assign(1, y);
  return check_output(op, y);
}

template <class T, class R, class F>
void binary_loop(const OpContext& ctx, F f) {
  const T* a = static_cast<const T*>(ctx.inputs[0]->data);
  const T* b = static_cast<const T*>(ctx.inputs[1]->data);
  R* y = static_cast<R*>(ctx.outputs[0]->data);
  const TensorInfo &ai = ctx.inputs[0]->info, &bi = ctx.inputs[1]->info, &yi = ctx.outputs[0]->info;
  if (same_shape(ai, yi) && same_shape(bi, yi)) {  // the common residual case
    const int64_t n = yi.numel();
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
    return;
  }
  const TensorInfo* ins[2] = {&ai, &bi};
  Broadcaster(yi, ins, 2).for_each_row([&](int64_t out, const int64_t* off, int64_t len, const int64_t* s) {
    for (int64_t i = 0; i < len; ++i) y[out + i] = f(a[off[0] + i * s[0]], b[off[1] + i * s[1]]);
  });
}

template <int kOpCode>
Status infer_arith(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* names[] = {"add", "sub", "mul", "div"};
  return infer_binary_impl(sig, outs, names[kOpCode - 20], true);
}

// Integer arithmetic wraps modulo 2^bits (numpy's behaviour) instead of overflowing: it is
// done on the unsigned type. Division truncates toward zero (C, not numpy's floor); a zero
// divisor is a runtime error and MIN / -1 wraps to MIN.
template <int kOpCode, class T>
T int_op(T a, T b) {
  using U = std::make_unsigned_t<T>;
  const U ua = static_cast<U>(a), ub = static_cast<U>(b);
  if constexpr (kOpCode == 20) return static_cast<T>(static_cast<U>(ua + ub));
  if constexpr (kOpCode == 21) return static_cast<T>(static_cast<U>(ua - ub));
  if constexpr (kOpCode == 22) return static_cast<T>(static_cast<U>(ua * ub));
  if constexpr (kOpCode == 23) {
    if (std::is_signed_v<T> && b == T(-1)) return static_cast<T>(static_cast<U>(U(0) - ua));
    return static_cast<T>(a / b);
  }
}

template <int kOpCode, class T>
Status arith_int(const OpContext& c) {
  if (kOpCode == 23) {
    const T* b = static_cast<const T*>(c.inputs[1]->data);
    const int64_t n = c.inputs[1]->info.numel();  // broadcasting reads every element of b
    for (int64_t i = 0; i < n; ++i)
      if (b[i] == 0) return fail("div", "integer division by zero");
  }
  binary_loop<T, T>(c, int_op<kOpCode, T>);
  return Status::Ok();
}

template <int kOpCode>
Status eval_arith(const OpContext& c) {
  switch (c.inputs[0]->info.dtype) {
    case DType::I32: return arith_int<kOpCode, int32_t>(c);
    case DType::I64: return arith_int<kOpCode, int64_t>(c);
    case DType::I8: return arith_int<kOpCode, int8_t>(c);
    case DType::U8: return arith_int<kOpCode, uint8_t>(c);
    default: break;
  }
  binary_loop<float, float>(c, [](float a, float b) {
    if constexpr (kOpCode == 20) return a + b;
    if constexpr (kOpCode == 21) return a - b;
    if constexpr (kOpCode == 22) return a * b;
    return a / b;
  });
  return Status::Ok();
}
Status eval_add(const OpContext& c) { return eval_arith<20>(c); }
Status eval_sub(const OpContext& c) { return eval_arith<21>(c); }
Status eval_mul(const OpContext& c) { return eval_arith<22>(c); }
Status eval_div(const OpContext& c) { return eval_arith<23>(c); }

Status infer_equal(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  return infer_binary_impl(sig, outs, "equal", false);
}

template <class T>
void equal_t(const OpContext& c) {
  binary_loop<T, uint8_t>(c, [](T a, T b) { return static_cast<uint8_t>(a == b); });
}

Status eval_equal(const OpContext& c) {
  switch (c.inputs[0]->info.dtype) {
    case DType::F32: equal_t<float>(c); break;
    case DType::I32: equal_t<int32_t>(c); break;
    case DType::I64: equal_t<int64_t>(c); break;
    case DType::I8: equal_t<int8_t>(c); break;
    default: equal_t<uint8_t>(c); break;
  }
  return Status::Ok();
}

Status infer_where(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "where";
  Status st = check_counts(sig, op, 3, 3, 0, 0);
  if (st.ok()) st = check_input(sig, op, 0, "cond", DType::U8, -1);
  if (!st.ok()) return st;
  const TensorInfo &c = *sig.inputs[0], &a = *sig.inputs[1], &b = *sig.inputs[2];
  if (a.dtype != b.dtype || !numeric(a.dtype))
    return fail(op, std::string("a and b need one numeric dtype, got ") + dtype_name(a.dtype) + " and " +
                        dtype_name(b.dtype));
  TensorInfo ab, y;
  st = broadcast_shape(op, a, b, a.dtype, &ab);
  if (st.ok()) st = broadcast_shape(op, c, ab, a.dtype, &y);
  if (!st.ok()) return st;
  outs->assign(1, y);
  return check_output(op, y);
}

template <class T>
void where_t(const OpContext& ctx) {
  const uint8_t* c = static_cast<const uint8_t*>(ctx.inputs[0]->data);
  const T* a = static_cast<const T*>(ctx.inputs[1]->data);
  const T* b = static_cast<const T*>(ctx.inputs[2]->data);
  T* y = static_cast<T*>(ctx.outputs[0]->data);
  const TensorInfo* ins[3] = {&ctx.inputs[0]->info, &ctx.inputs[1]->info, &ctx.inputs[2]->info};
  const Broadcaster bc(ctx.outputs[0]->info, ins, 3);
  bc.for_each_row([&](int64_t out, const int64_t* o, int64_t len, const int64_t* s) {
    for (int64_t i = 0; i < len; ++i) y[out + i] = c[o[0] + i * s[0]] ? a[o[1] + i * s[1]] : b[o[2] + i * s[2]];
  });
}

Status eval_where(const OpContext& c) {
  switch (c.inputs[1]->info.dtype) {
    case DType::F32: where_t<float>(c); break;
    case DType::I32: where_t<int32_t>(c); break;
    case DType::I64: where_t<int64_t>(c); break;
    case DType::I8: where_t<int8_t>(c); break;
    default: where_t<uint8_t>(c); break;
  }
  return Status::Ok();
}

// ---- unary --------------------------------------------------------------------------------

Status infer_unary_impl(const OpSignature& sig, std::vector<TensorInfo>* outs, const char* op, int n_floats) {
  Status st = check_counts(sig, op, 1, 1, 0, n_floats);
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  if (!st.ok()) return st;
  outs->assign(1, *sig.inputs[0]);
  return Status::Ok();
}

template <class F>
Status unary_loop(const OpContext& ctx, F f) {
  const float* x = ctx.inputs[0]->cf();
  float* y = ctx.outputs[0]->f();
  const int64_t n = ctx.inputs[0]->info.numel();
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
  return Status::Ok();
}

#define EK_UNARY(NAME, EXPR)                                                                         \
  Status infer_##NAME(const OpSignature& s, std::vector<TensorInfo>* o) {                           \
    return infer_unary_impl(s, o, #NAME, 0);                                                        \
  }                                                                                                  \
  Status eval_##NAME(const OpContext& c) { return unary_loop(c, [](float x) { return EXPR; }); }

EK_UNARY(relu, x > 0.0f ? x : (x == x ? 0.0f : x))  // NaN stays NaN, like torch
EK_UNARY(tanh, std::tanh(x))
EK_UNARY(exp, std::exp(x))
EK_UNARY(log, std::log(x))
EK_UNARY(sqrt, std::sqrt(x))
#undef EK_UNARY

// sigmoid-based ops in two passes over the output: first e = exp(-b) (a libm call per
// element, which blocks vectorizing the loop it sits in), then the rest of sigmoidf's
// arithmetic, 1 / (1 + e), times `a`, in a loop of plain float ops the compiler vectorizes.
// Every value is computed exactly as `a * sigmoidf(b)` (same operations, same order).
// kMul false: y = sigmoid(b). `y` never aliases `a` or `b` (the planner keeps an op's output
// apart from its inputs).
template <bool kMul>
void sigmoid_rows(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(-b[i]);
  if (kMul) {
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] * (1.0f / (1.0f + y[i]));
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + y[i]);
  }
}

Status infer_silu(const OpSignature& s, std::vector<TensorInfo>* o) { return infer_unary_impl(s, o, "silu", 0); }
Status eval_silu(const OpContext& c) {
  sigmoid_rows<true>(c.inputs[0]->cf(), c.inputs[0]->cf(), c.outputs[0]->f(), c.inputs[0]->info.numel());
  return Status::Ok();
}
Status infer_sigmoid(const OpSignature& s, std::vector<TensorInfo>* o) {
  return infer_unary_impl(s, o, "sigmoid", 0);
}
Status eval_sigmoid(const OpContext& c) {
  sigmoid_rows<false>(nullptr, c.inputs[0]->cf(), c.outputs[0]->f(), c.inputs[0]->info.numel());
  return Status::Ok();
}
// neg and abs also take i32/i64 (§2.7); MIN wraps to MIN like numpy.
Status infer_neg_abs(const OpSignature& sig, std::vector<TensorInfo>* outs, const char* op) {
  Status st = check_counts(sig, op, 1, 1, 0, 0);
  if (!st.ok()) return st;
  const DType dt = sig.inputs[0]->dtype;
  if (dt != DType::F32 && dt != DType::I32 && dt != DType::I64)
    return fail(op, std::string("x has dtype ") + dtype_name(dt) + ", expected f32, i32 or i64");
  outs->assign(1, *sig.inputs[0]);
  return Status::Ok();
}
Status infer_neg(const OpSignature& s, std::vector<TensorInfo>* o) { return infer_neg_abs(s, o, "neg"); }
Status infer_abs(const OpSignature& s, std::vector<TensorInfo>* o) { return infer_neg_abs(s, o, "abs"); }

template <class T, bool kAbs>
void neg_abs_t(const OpContext& ctx) {
  using U = std::make_unsigned_t<T>;
  const T* x = static_cast<const T*>(ctx.inputs[0]->data);
  T* y = static_cast<T*>(ctx.outputs[0]->data);
  const int64_t n = ctx.inputs[0]->info.numel();
  for (int64_t i = 0; i < n; ++i) {
    const T neg = static_cast<T>(static_cast<U>(U(0) - static_cast<U>(x[i])));
    y[i] = kAbs && x[i] >= 0 ? x[i] : neg;
  }
}

template <bool kAbs>
Status eval_neg_abs(const OpContext& c) {
  switch (c.inputs[0]->info.dtype) {
    case DType::I32: neg_abs_t<int32_t, kAbs>(c); return Status::Ok();
    case DType::I64: neg_abs_t<int64_t, kAbs>(c); return Status::Ok();
    default: return unary_loop(c, [](float x) { return kAbs ? std::fabs(x) : -x; });
  }
}
Status eval_neg(const OpContext& c) { return eval_neg_abs<false>(c); }
Status eval_abs(const OpContext& c) { return eval_neg_abs<true>(c); }

Status infer_leaky_relu(const OpSignature& s, std::vector<TensorInfo>* o) {
  Status st = infer_unary_impl(s, o, "leaky_relu", 1);
  if (st.ok() && !std::isfinite(s.floats[0])) return fail("leaky_relu", "slope must be finite");
  return st;
}
Status eval_leaky_relu(const OpContext& c) {
  const float slope = c.floats[0];
  return unary_loop(c, [slope](float x) { return x > 0.0f ? x : x * slope; });
}

Status infer_clamp(const OpSignature& s, std::vector<TensorInfo>* o) {
  Status st = infer_unary_impl(s, o, "clamp", 2);
  if (st.ok() && (std::isnan(s.floats[0]) || std::isnan(s.floats[1]) || s.floats[0] > s.floats[1]))
    return fail("clamp", "needs lo <= hi, got [" + std::to_string(s.floats[0]) + ", " +
                             std::to_string(s.floats[1]) + "]");
  return st;
}
Status eval_clamp(const OpContext& c) {
  const float lo = c.floats[0], hi = c.floats[1];
  return unary_loop(c, [lo, hi](float x) { return x < lo ? lo : (x > hi ? hi : x); });
}

Status infer_glu(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "glu";
  Status st = check_counts(sig, op, 1, 1, 1, 0);
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  int axis = 0;
  if (st.ok()) st = norm_axis(op, sig.ints[0], sig.inputs[0]->rank, &axis);
  if (!st.ok()) return st;
  TensorInfo y = *sig.inputs[0];
  if (y.dims[axis] % 2)
    return fail(op, "dim " + std::to_string(axis) + " of x " + shape_str(y) + " must be even");
  y.dims[axis] /= 2;
  outs->assign(1, y);
  return Status::Ok();
}

Status eval_glu(const OpContext& ctx) {
  const TensorInfo& xi = ctx.inputs[0]->info;
  const int axis = static_cast<int>(ctx.ints[0]);
  const int64_t outer = span(xi, 0, axis), half = xi.dims[axis] / 2 * span(xi, axis + 1, xi.rank);
  const float* x = ctx.inputs[0]->cf();
  float* y = ctx.outputs[0]->f();
  for (int64_t o = 0; o < outer; ++o) {
    const float *a = x + o * 2 * half, *b = a + half;
    float* yr = y + o * half;
    sigmoid_rows<true>(a, b, yr, half);
  }
  return Status::Ok();
}

}  // namespace

#define EK_DEF(CODE, NAME, INFER) \
  extern const OpDef op_##NAME = {CODE, #NAME, INFER, no_scratch, nullptr, nullptr, eval_##NAME};
EK_DEF(20, add, infer_arith<20>)
EK_DEF(21, sub, infer_arith<21>)
EK_DEF(22, mul, infer_arith<22>)
EK_DEF(23, div, infer_arith<23>)
EK_DEF(24, where, infer_where)
EK_DEF(25, equal, infer_equal)
EK_DEF(30, relu, infer_relu)
EK_DEF(31, leaky_relu, infer_leaky_relu)
EK_DEF(32, silu, infer_silu)
EK_DEF(33, sigmoid, infer_sigmoid)
EK_DEF(34, tanh, infer_tanh)
EK_DEF(35, glu, infer_glu)
EK_DEF(36, clamp, infer_clamp)
EK_DEF(37, exp, infer_exp)
EK_DEF(38, log, infer_log)
EK_DEF(39, sqrt, infer_sqrt)
EK_DEF(40, neg, infer_neg)
EK_DEF(41, abs, infer_abs)
#undef EK_DEF

}  // namespace edgekit::runtime::ops
