// conv1d (§2.6 code 4) and conv_transpose1d (code 6) in float32: direct loops, for layers
// the exporter keeps in float. Weights in torch's layouts: conv (Cout, Cin/g, k),
// transposed (Cin, Cout/g, k).
#include <algorithm>

#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

Status infer_common(const OpSignature& sig, std::vector<TensorInfo>* outs, const char* op, bool transposed) {
  Status st = check_counts(sig, op, 3, 3, 5, 0, {2});
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, 3);
  if (st.ok()) st = check_input(sig, op, 1, "W", DType::F32, 3);
  if (!st.ok()) return st;
  const TensorInfo &x = *sig.inputs[0], &w = *sig.inputs[1];
  const int64_t* a = sig.ints;
  const int64_t big = int64_t{1} << 24;
  if (x.dims[0] != 1) return fail(op, "x " + shape_str(x) + " must have batch 1");
  if (st.ok()) st = check_range(op, "stride", a[0], 1, big);
  if (st.ok()) st = check_range(op, transposed ? "padding" : "pad_left", a[1], 0, big);
  if (st.ok()) st = check_range(op, transposed ? "output_padding" : "pad_right", a[2], 0, big);
  if (st.ok()) st = check_range(op, "dilation", a[3], 1, big);
  if (st.ok()) st = check_range(op, "groups", a[4], 1, x.dims[1]);
  if (!st.ok()) return st;
  const int64_t G = a[4], Cin = x.dims[1], T = x.dims[2], k = w.dims[2];
  if (Cin % G) return fail(op, "groups " + std::to_string(G) + " must divide Cin " + std::to_string(Cin));
  int64_t Cout, Tout;
  if (!transposed) {
    if (w.dims[1] != Cin / G || w.dims[0] % G)
      return fail(op, "W " + shape_str(w) + " must be (Cout, Cin/groups, k) with groups dividing Cout");
    Cout = w.dims[0];
    const int64_t span = T + a[1] + a[2] - a[3] * (k - 1) - 1;
    Tout = span < 0 ? 0 : span / a[0] + 1;
  } else {
    if (w.dims[0] != Cin) return fail(op, "W " + shape_str(w) + " must be (Cin, Cout/groups, k)");
    if (a[2] >= std::max(a[0], a[3]))
      return fail(op, "output_padding " + std::to_string(a[2]) + " must be smaller than stride or dilation");
    Cout = w.dims[1] * G;
    Tout = (T - 1) * a[0] - 2 * a[1] + a[3] * (k - 1) + a[2] + 1;
  }
  st = check_bias(sig, op, 2, Cout, "bias");
  if (!st.ok()) return st;
  if (Tout < 1) return fail(op, "input length " + std::to_string(T) + " gives output length " + std::to_string(Tout));
  const int64_t dims[3] = {1, Cout, Tout};
  outs->assign(1, make_info(DType::F32, 3, dims));
  return check_output(op, (*outs)[0]);
}

Status infer_conv(const OpSignature& s, std::vector<TensorInfo>* o) { return infer_common(s, o, "conv1d", false); }
Status infer_tconv(const OpSignature& s, std::vector<TensorInfo>* o) {
  return infer_common(s, o, "conv_transpose1d", true);
}

Status eval_conv(const OpContext& ctx) {
  const TensorInfo &xi = ctx.inputs[0]->info, &wi = ctx.inputs[1]->info;
  const int64_t T = xi.dims[2], Cout = wi.dims[0], Cg = wi.dims[1], k = wi.dims[2];
  const int64_t stride = ctx.ints[0], pl = ctx.ints[1], dil = ctx.ints[3], G = ctx.ints[4];
  const int64_t Og = Cout / G, Tout = ctx.outputs[0]->info.dims[2];
  const float *x = ctx.inputs[0]->cf(), *w = ctx.inputs[1]->cf();
  const float* b = ctx.inputs[2] ? ctx.inputs[2]->cf() : nullptr;
  float* y = ctx.outputs[0]->f();
  for (int64_t co = 0; co < Cout; ++co) {
    const int64_t grp = co / Og;
    float* yr = y + co * Tout;
    std::fill(yr, yr + Tout, b ? b[co] : 0.0f);
    for (int64_t ci = 0; ci < Cg; ++ci) {
      const float* xr = x + (grp * Cg + ci) * T;
      for (int64_t tap = 0; tap < k; ++tap) {
        const float wv = w[(co * Cg + ci) * k + tap];
        // Output positions whose input t * stride + off lies inside [0, T): one range.
        const int64_t off = tap * dil - pl;
        const int64_t lo = std::min(Tout, off >= 0 ? 0 : (-off + stride - 1) / stride);
        const int64_t hi = off > T - 1 ? lo : std::max(lo, std::min(Tout, (T - 1 - off) / stride + 1));
        for (int64_t t = lo; t < hi; ++t) yr[t] += wv * xr[t * stride + off];
      }
    }
  }
  return Status::Ok();
}

Status eval_tconv(const OpContext& ctx) {
  const TensorInfo &xi = ctx.inputs[0]->info, &wi = ctx.inputs[1]->info;
  const int64_t Cin = xi.dims[1], T = xi.dims[2], Og = wi.dims[1], k = wi.dims[2];
  const int64_t stride = ctx.ints[0], pad = ctx.ints[1], dil = ctx.ints[3], G = ctx.ints[4];
  const int64_t Cg = Cin / G, Cout = Og * G, Tout = ctx.outputs[0]->info.dims[2];
  const float *x = ctx.inputs[0]->cf(), *w = ctx.inputs[1]->cf();
  const float* b = ctx.inputs[2] ? ctx.inputs[2]->cf() : nullptr;
  float* y = ctx.outputs[0]->f();
  for (int64_t co = 0; co < Cout; ++co) std::fill(y + co * Tout, y + (co + 1) * Tout, b ? b[co] : 0.0f);
  // Scatter form: every input sample adds w·x to the outputs its taps reach.
  for (int64_t ci = 0; ci < Cin; ++ci) {
    const int64_t grp = ci / Cg;
    for (int64_t o = 0; o < Og; ++o) {
      float* yr = y + (grp * Og + o) * Tout;
      for (int64_t tap = 0; tap < k; ++tap) {
        const float wv = w[(ci * Og + o) * k + tap];
        for (int64_t t = 0; t < T; ++t) {
          const int64_t d = t * stride - pad + tap * dil;
          if (d >= 0 && d < Tout) yr[d] += wv * x[ci * T + t];
        }
      }
    }
  }
  return Status::Ok();
}

}  // namespace

extern const OpDef op_conv1d = {4, "conv1d", infer_conv, no_scratch, nullptr, nullptr, eval_conv};
extern const OpDef op_conv_transpose1d = {6, "conv_transpose1d", infer_tconv, no_scratch, nullptr, nullptr,
                                          eval_tconv};

}  // namespace edgekit::runtime::ops
