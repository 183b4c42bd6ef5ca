// Data movement ops of §2.6: reshape, transpose, concat, slice, pad, copy, cast. They move
// elements of any non-packed dtype by size (1, 4 or 8 bytes); only pad and cast look at values.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

Status check_plain(const OpSignature& sig, const char* op, int i) {
  if (sig.inputs[i]->dtype == DType::Packed) return fail(op, "input " + std::to_string(i) + " must not be packed");
  return Status::Ok();
}

void copy_whole(const OpContext& ctx) {
  if (ctx.outputs[0]->data != ctx.inputs[0]->data)
    std::memcpy(ctx.outputs[0]->data, ctx.inputs[0]->data, ctx.outputs[0]->info.nbytes());
}

// ---- reshape / copy -----------------------------------------------------------------------

Status infer_reshape(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "reshape";
  Status st = check_counts(sig, op, 1, 1, -1, 0);
  if (st.ok()) st = check_plain(sig, op, 0);
  if (st.ok()) st = check_range(op, "target rank", sig.n_ints, 0, kMaxRank);
  if (!st.ok()) return st;
  TensorInfo y;
  y.dtype = sig.inputs[0]->dtype;
  y.rank = sig.n_ints;
  for (int i = 0; i < y.rank; ++i) {
    st = check_range(op, "target dim", sig.ints[i], 1, kMaxDim);
    if (!st.ok()) return st;
    y.dims[i] = sig.ints[i];
  }
  st = check_output(op, y);
  if (!st.ok()) return st;
  if (y.numel() != sig.inputs[0]->numel())
    return fail(op, "cannot reshape " + shape_str(*sig.inputs[0]) + " to " + shape_str(y));
  outs->assign(1, y);
  return Status::Ok();
}

Status eval_reshape(const OpContext& ctx) { return copy_whole(ctx), Status::Ok(); }

Status infer_copy(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  Status st = check_counts(sig, "copy", 1, 1, 0, 0);
  if (st.ok()) st = check_plain(sig, "copy", 0);
  if (!st.ok()) return st;
  outs->assign(1, *sig.inputs[0]);
  return Status::Ok();
}

Status eval_copy(const OpContext& ctx) { return copy_whole(ctx), Status::Ok(); }

// ---- transpose ----------------------------------------------------------------------------

Status infer_transpose(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "transpose";
  Status st = check_counts(sig, op, 1, 1, -1, 0);
  if (st.ok()) st = check_plain(sig, op, 0);
  if (!st.ok()) return st;
  const TensorInfo& x = *sig.inputs[0];
  if (sig.n_ints != x.rank)
    return fail(op, "perm has " + std::to_string(sig.n_ints) + " entries for rank " + std::to_string(x.rank));
  bool seen[kMaxRank] = {};
  TensorInfo y = x;
  for (int i = 0; i < x.rank; ++i) {
    const int64_t p = sig.ints[i];
    if (p < 0 || p >= x.rank || seen[p])
      return fail(op, "perm is not a permutation of 0.." + std::to_string(x.rank - 1));
    seen[p] = true;
    y.dims[i] = x.dims[p];
  }
  outs->assign(1, y);
  return Status::Ok();
}

template <class T>
void permute(const OpContext& ctx) {
  const TensorInfo& x = ctx.inputs[0]->info;
  int64_t in_stride[kMaxRank];
  int64_t st = 1;
  for (int d = x.rank - 1; d >= 0; --d) in_stride[d] = st, st *= x.dims[d];
  const TensorInfo* none[1] = {&ctx.outputs[0]->info};
  Broadcaster b(ctx.outputs[0]->info, none, 1);  // walks the output; strides replaced below
  for (int i = 0; i < x.rank; ++i) b.strides[0][i] = in_stride[ctx.ints[i]];
  const T* src = static_cast<const T*>(ctx.inputs[0]->data);
  T* dst = static_cast<T*>(ctx.outputs[0]->data);
  b.for_each_row([&](int64_t out, const int64_t* off, int64_t len, const int64_t* s) {
    for (int64_t i = 0; i < len; ++i) dst[out + i] = src[off[0] + i * s[0]];
  });
}

template <template <class> class F, class... A>
void by_size(size_t es, A&&... a) {
  if (es == 8) F<uint64_t>::run(a...);
  else if (es == 4) F<uint32_t>::run(a...);
  else F<uint8_t>::run(a...);
}

template <class T>
struct Permute {
  static void run(const OpContext& c) { permute<T>(c); }
};

Status eval_transpose(const OpContext& ctx) {
  by_size<Permute>(dtype_size(ctx.inputs[0]->info.dtype), ctx);
  return Status::Ok();
}

// ---- concat / slice -------------------------------------------------------------------------

Status infer_concat(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "concat";
  Status st = check_counts(sig, op, 1, -1, 1, 0);
  if (st.ok()) st = check_plain(sig, op, 0);
  int axis = 0;
  if (st.ok()) st = norm_axis(op, sig.ints[0], sig.inputs[0]->rank, &axis);
  if (!st.ok()) return st;
  TensorInfo y = *sig.inputs[0];
  for (size_t i = 1; i < sig.inputs.size(); ++i) {
    const TensorInfo& t = *sig.inputs[i];
    bool ok = t.dtype == y.dtype && t.rank == y.rank;
    for (int d = 0; ok && d < y.rank; ++d) ok = d == axis || t.dims[d] == y.dims[d];
    if (!ok)
      return fail(op, "input " + std::to_string(i) + " " + shape_str(t) + " " + dtype_name(t.dtype) +
                          " does not match input 0 " + shape_str(*sig.inputs[0]) + " " + dtype_name(y.dtype) +
                          " outside axis " + std::to_string(axis));
    y.dims[axis] += t.dims[axis];
    if (y.dims[axis] > kMaxDim) return fail(op, "output too large");
  }
  outs->assign(1, y);
  return check_output(op, y);
}

Status eval_concat(const OpContext& ctx) {
  const TensorInfo& y = ctx.outputs[0]->info;
  const int axis = static_cast<int>(ctx.ints[0]);
  const size_t es = dtype_size(y.dtype);
  const int64_t outer = span(y, 0, axis), inner = span(y, axis + 1, y.rank);
  auto* dst = static_cast<uint8_t*>(ctx.outputs[0]->data);
  for (int64_t o = 0; o < outer; ++o)
    for (const TensorRef* in : ctx.inputs) {
      const size_t chunk = static_cast<size_t>(in->info.dims[axis] * inner) * es;
      std::memcpy(dst, static_cast<const uint8_t*>(in->data) + o * chunk, chunk);
      dst += chunk;
    }
  return Status::Ok();
}

Status infer_slice(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "slice";
  Status st = check_counts(sig, op, 1, 1, 4, 0);
  if (st.ok()) st = check_plain(sig, op, 0);
  int axis = 0;
  if (st.ok()) st = norm_axis(op, sig.ints[0], sig.inputs[0]->rank, &axis);
  if (!st.ok()) return st;
  const int64_t dim = sig.inputs[0]->dims[axis], start = sig.ints[1], end = sig.ints[2], step = sig.ints[3];
  if (!(0 <= start && start < end && end <= dim))
    return fail(op, "needs 0 <= start < end <= " + std::to_string(dim) + ", got start " + std::to_string(start) +
                        " end " + std::to_string(end));
  st = check_range(op, "step", step, 1, kMaxDim);
  if (!st.ok()) return st;
  TensorInfo y = *sig.inputs[0];
  y.dims[axis] = (end - start + step - 1) / step;
  outs->assign(1, y);
  return Status::Ok();
}

Status eval_slice(const OpContext& ctx) {
  const TensorInfo &x = ctx.inputs[0]->info, &y = ctx.outputs[0]->info;
  const int axis = static_cast<int>(ctx.ints[0]);
  const int64_t start = ctx.ints[1], step = ctx.ints[3];
  const size_t es = dtype_size(x.dtype);
  const int64_t outer = span(x, 0, axis), inner = span(x, axis + 1, x.rank);
  const size_t row = static_cast<size_t>(inner) * es;
  const auto* src = static_cast<const uint8_t*>(ctx.inputs[0]->data);
  auto* dst = static_cast<uint8_t*>(ctx.outputs[0]->data);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < y.dims[axis]; ++i, dst += row)
      std::memcpy(dst, src + (o * x.dims[axis] + start + i * step) * row, row);
  return Status::Ok();
}

// ---- pad ----------------------------------------------------------------------------------

Status infer_pad(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "pad";
  Status st = check_counts(sig, op, 1, 1, 3, 1);
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, -1);
  int axis = 0;
  if (st.ok()) st = norm_axis(op, sig.ints[0], sig.inputs[0]->rank, &axis);
  if (st.ok()) st = check_range(op, "before", sig.ints[1], 0, kMaxDim);
  if (st.ok()) st = check_range(op, "after", sig.ints[2], 0, kMaxDim);
  if (!st.ok()) return st;
  TensorInfo y = *sig.inputs[0];
  y.dims[axis] += sig.ints[1] + sig.ints[2];
  outs->assign(1, y);
  return check_output(op, y);
}

Status eval_pad(const OpContext& ctx) {
  const TensorInfo& x = ctx.inputs[0]->info;
  const int axis = static_cast<int>(ctx.ints[0]);
  const int64_t before = ctx.ints[1], after = ctx.ints[2];
  const int64_t outer = span(x, 0, axis), inner = span(x, axis + 1, x.rank), L = x.dims[axis];
  const float v = ctx.floats[0];
  const float* src = ctx.inputs[0]->cf();
  float* dst = ctx.outputs[0]->f();
  for (int64_t o = 0; o < outer; ++o) {
    dst = std::fill_n(dst, before * inner, v);
    dst = std::copy(src + o * L * inner, src + (o + 1) * L * inner, dst);
    dst = std::fill_n(dst, after * inner, v);
  }
  return Status::Ok();
}

// ---- cast ---------------------------------------------------------------------------------

bool castable(DType t) { return t != DType::Packed; }

Status infer_cast(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  const char* op = "cast";
  Status st = check_counts(sig, op, 1, 1, 1, 0);
  if (!st.ok()) return st;
  const int64_t d = sig.ints[0];
  if (!castable(sig.inputs[0]->dtype) || d < 1 || d > 5 || !castable(static_cast<DType>(d)))
    return fail(op, std::string("converts between f32, i32, i8, u8 and i64 only (from ") +
                        dtype_name(sig.inputs[0]->dtype) + " to dtype code " + std::to_string(d) + ")");
  TensorInfo y = *sig.inputs[0];
  y.dtype = static_cast<DType>(d);
  outs->assign(1, y);
  return Status::Ok();
}

// Float to integer truncates toward zero like torch's .to(); values outside the target range
// saturate and NaN becomes 0 instead of reaching an undefined C++ conversion.
template <class To, class From>
To convert(From v) {
  if constexpr (std::is_floating_point_v<To>) {
    return static_cast<To>(v);
  } else {
    const double d = static_cast<double>(v);
    if (d != d) return 0;
    if (d <= static_cast<double>(std::numeric_limits<To>::min())) return std::numeric_limits<To>::min();
    if (d >= static_cast<double>(std::numeric_limits<To>::max())) return std::numeric_limits<To>::max();
    return static_cast<To>(v);
  }
}

template <class To, class From>
void cast_loop(const void* src, void* dst, int64_t n) {
  const From* s = static_cast<const From*>(src);
  To* d = static_cast<To*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = convert<To>(s[i]);
}

template <class To>
void cast_to(DType from, const void* src, void* dst, int64_t n) {
  switch (from) {
    case DType::F32: return cast_loop<To, float>(src, dst, n);
    case DType::I32: return cast_loop<To, int32_t>(src, dst, n);
    case DType::I64: return cast_loop<To, int64_t>(src, dst, n);
    case DType::I8: return cast_loop<To, int8_t>(src, dst, n);
    default: return cast_loop<To, uint8_t>(src, dst, n);
  }
}

Status eval_cast(const OpContext& ctx) {
  const DType from = ctx.inputs[0]->info.dtype;
  const void* s = ctx.inputs[0]->data;
  void* d = ctx.outputs[0]->data;
  const int64_t n = ctx.inputs[0]->info.numel();
  switch (ctx.outputs[0]->info.dtype) {
    case DType::F32: cast_to<float>(from, s, d, n); break;
    case DType::I32: cast_to<int32_t>(from, s, d, n); break;
    case DType::I64: cast_to<int64_t>(from, s, d, n); break;
    case DType::I8: cast_to<int8_t>(from, s, d, n); break;
    default: cast_to<uint8_t>(from, s, d, n); break;
  }
  return Status::Ok();
}

}  // namespace

#define EK_DEF(CODE, NAME) \
  extern const OpDef op_##NAME = {CODE, #NAME, infer_##NAME, no_scratch, nullptr, nullptr, eval_##NAME};
EK_DEF(50, reshape)
EK_DEF(51, transpose)
EK_DEF(52, concat)
EK_DEF(53, slice)
EK_DEF(54, pad)
EK_DEF(56, copy)
EK_DEF(57, cast)
#undef EK_DEF

}  // namespace edgekit::runtime::ops
