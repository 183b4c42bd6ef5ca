// qlstm (§2.6 code 7): one LSTM layer with packed W_ih (4H, I) and W_hh (4H, H).
// The input projection does not depend on h, so all T steps go through the kernel in one
// M = T call; each step then runs W_hh on the int8-quantized h (static grid h_scale, h_zp)
// and the gate math in float32 exactly as §2.6 orders it.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/linear/epilogue.h"
#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

constexpr const char* kOp = "qlstm";

Status infer(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  Status st = check_counts(sig, kOp, 7, 7, 3, 2, {5, 6});
  if (st.ok()) st = check_input(sig, kOp, 0, "x", DType::F32, 3);
  if (st.ok()) st = check_input(sig, kOp, 1, "h0", DType::F32, 2);
  if (st.ok()) st = check_input(sig, kOp, 2, "c0", DType::F32, 2);
  if (st.ok()) st = check_input(sig, kOp, 3, "W_ih", DType::Packed, 2);
  if (st.ok()) st = check_input(sig, kOp, 4, "W_hh", DType::Packed, 2);
  if (st.ok()) st = check_qparams(sig, kOp, 0, 0);
  if (st.ok()) st = check_range(kOp, "h_zp", sig.ints[2], -128, 127);
  if (!st.ok()) return st;
  const float hs = sig.floats[1];
  if (!(std::isfinite(hs) && hs > 0.0f && std::isfinite(1.0f / hs)))
    return fail(kOp, "h_scale must be finite and > 0, got " + std::to_string(hs));
  const TensorInfo &x = *sig.inputs[0], &h0 = *sig.inputs[1], &c0 = *sig.inputs[2];
  const TensorInfo &wih = *sig.inputs[3], &whh = *sig.inputs[4];
  if (x.dims[0] != 1) return fail(kOp, "x " + shape_str(x) + " must have batch 1");
  const int64_t H = h0.dims[1];
  if (h0.dims[0] != 1 || !same_shape(h0, c0))
    return fail(kOp, "h0 " + shape_str(h0) + " and c0 " + shape_str(c0) + " must both be (1, H)");
  if (wih.dims[0] != 4 * H || wih.dims[1] != x.dims[2])
    return fail(kOp, "W_ih " + shape_str(wih) + " must be (4H, I) = (" + std::to_string(4 * H) + ", " +
                         std::to_string(x.dims[2]) + ")");
  if (whh.dims[0] != 4 * H || whh.dims[1] != H)
    return fail(kOp, "W_hh " + shape_str(whh) + " must be (4H, H) = (" + std::to_string(4 * H) + ", " +
                         std::to_string(H) + ")");
  st = check_bias(sig, kOp, 5, 4 * H, "b_ih");
  if (st.ok()) st = check_bias(sig, kOp, 6, 4 * H, "b_hh");
  if (!st.ok()) return st;
  if (x.dims[1] > INT32_MAX) return fail(kOp, "more than 2^31 - 1 steps");  // the kernels' M is an int
  const int64_t y[3] = {1, x.dims[1], H};
  outs->assign({make_info(DType::F32, 3, y), h0, c0});
  return check_output(kOp, (*outs)[0]);
}

struct Layout {
  int8_t* xq;        // (T, I)
  int32_t* acc_x;    // (T, 4H, groups of W_ih)
  float* gx;         // (T, 4H): W_ih·q(x_t) dequantized
  float* row_scale;  // (T) dynamic grid
  int8_t* hq;        // (H)
  int32_t* acc_h;    // (4H, groups of W_hh)
  float* gh;         // (4H)
  QGemm gi, gh_gemm;
  size_t bytes;
};

Layout layout(void* base, int64_t T, const PackedLinear& wih, const PackedLinear& whh,
              const kernels::LinearVariant* v, int threads) {
  Carver c(base);
  Layout l;
  const int64_t G4 = wih.N, H = whh.K;
  l.xq = c.take<int8_t>(static_cast<size_t>(T * wih.K));
  l.acc_x = c.take<int32_t>(static_cast<size_t>(T * G4) * wih.ngroups);
  l.gx = c.take<float>(static_cast<size_t>(T * G4));
  l.row_scale = c.take<float>(static_cast<size_t>(T));
  l.hq = c.take<int8_t>(static_cast<size_t>(H));
  l.acc_h = c.take<int32_t>(static_cast<size_t>(G4) * whh.ngroups);
  l.gh = c.take<float>(static_cast<size_t>(G4));
  // The two GEMMs run one after the other, so they share the per-thread kernel scratch.
  const size_t per = std::max(qgemm_thread_scratch(v, wih, static_cast<int>(T)), qgemm_thread_scratch(v, whh, 1));
  const int th = std::max(threads, 1);
  uint8_t* vs = c.take<uint8_t>(per * th);
  l.gi = QGemm{&wih, v, th, vs, per};
  l.gh_gemm = QGemm{&whh, v, th, vs, per};
  l.bytes = c.used();
  return l;
}

size_t scratch(const OpSignature& sig, const std::vector<TensorInfo>&, const kernels::LinearVariant* v, int threads) {
  const PackedLinear wih = packed_for_sizing(sig, 3), whh = packed_for_sizing(sig, 4);
  return layout(nullptr, sig.inputs[0]->dims[1], wih, whh, v, threads).bytes;
}

Status eval(const OpContext& ctx) {
  const auto& wih = *static_cast<const PackedLinear*>(ctx.inputs[3]->prepared);
  const auto& whh = *static_cast<const PackedLinear*>(ctx.inputs[4]->prepared);
  const int64_t T = ctx.inputs[0]->info.dims[1], I = wih.K, H = whh.K, G4 = 4 * H;
  const Layout l = layout(ctx.scratch, T, wih, whh, ctx.linear, ctx.threads);
  const float* x = ctx.inputs[0]->cf();
  const float* b_ih = ctx.inputs[5] ? ctx.inputs[5]->cf() : nullptr;
  const float* b_hh = ctx.inputs[6] ? ctx.inputs[6]->cf() : nullptr;
  float *y = ctx.outputs[0]->f(), *h = ctx.outputs[1]->f(), *c = ctx.outputs[2]->f();
  if (h != ctx.inputs[1]->cf()) std::memmove(h, ctx.inputs[1]->cf(), H * sizeof(float));
  if (c != ctx.inputs[2]->cf()) std::memmove(c, ctx.inputs[2]->cf(), H * sizeof(float));

  const int M = static_cast<int>(T);
  if (ctx.ints[0] == 0) {
    const int32_t zp = static_cast<int32_t>(ctx.ints[1]);
    quantize_static(x, T * I, ctx.floats[0], zp, l.xq);
    qgemm_run(ctx, l.gi, l.xq, 0, M, zp, l.acc_x, 1, wih.N);
    kernels::epilogue_f32(wih, l.acc_x, M, ctx.floats[0], nullptr, l.gx);
  } else {
    for (int64_t t = 0; t < T; ++t) {
      float amax = 0.0f;
      for (int64_t i = 0; i < I; ++i) amax = std::max(amax, std::fabs(x[t * I + i]));
      l.row_scale[t] = dynamic_scale(amax);
      quantize_static(x + t * I, I, l.row_scale[t], 0, l.xq + t * I);
    }
    qgemm_run(ctx, l.gi, l.xq, 0, M, 0, l.acc_x, 1, wih.N);
    const size_t row = static_cast<size_t>(wih.N) * wih.ngroups;
    for (int64_t t = 0; t < T; ++t)
      kernels::epilogue_f32(wih, l.acc_x + t * row, 1, l.row_scale[t], nullptr, l.gx + t * G4);
  }

  const float h_scale = ctx.floats[1];
  const int32_t h_zp = static_cast<int32_t>(ctx.ints[2]);
  for (int64_t t = 0; t < T; ++t) {
    quantize_static(h, H, h_scale, h_zp, l.hq);
    qgemm_run(ctx, l.gh_gemm, l.hq, 0, 1, h_zp, l.acc_h, 1, whh.N);
    kernels::epilogue_f32(whh, l.acc_h, 1, h_scale, nullptr, l.gh);
    float* g = l.gh;  // gates in place: W_ih·q(x) + W_hh·q(h) + b_ih + b_hh, in this order
    const float* gxt = l.gx + t * G4;
    for (int64_t j = 0; j < G4; ++j) {
      float v = gxt[j] + g[j];
      if (b_ih) v += b_ih[j];
      if (b_hh) v += b_hh[j];
      g[j] = v;
    }
    lstm_cell(g, H, c, h, y + t * H);
  }
  return Status::Ok();
}

}  // namespace

extern const OpDef op_qlstm = {7, kOp, infer, scratch, nullptr, nullptr, eval};

}  // namespace edgekit::runtime::ops
