// lstm (§2.6 code 8): the float32 LSTM layer, same gate order and arithmetic order as qlstm.
#include <cstring>

#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

constexpr const char* kOp = "lstm";

Status infer(const OpSignature& sig, std::vector<TensorInfo>* outs) {
  Status st = check_counts(sig, kOp, 7, 7, 0, 0, {5, 6});
  if (st.ok()) st = check_input(sig, kOp, 0, "x", DType::F32, 3);
  if (st.ok()) st = check_input(sig, kOp, 1, "h0", DType::F32, 2);
  if (st.ok()) st = check_input(sig, kOp, 2, "c0", DType::F32, 2);
  if (st.ok()) st = check_input(sig, kOp, 3, "W_ih", DType::F32, 2);
  if (st.ok()) st = check_input(sig, kOp, 4, "W_hh", DType::F32, 2);
  if (!st.ok()) return st;
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
  const int64_t y[3] = {1, x.dims[1], H};
  outs->assign({make_info(DType::F32, 3, y), h0, c0});
  return check_output(kOp, (*outs)[0]);
}

size_t scratch(const OpSignature& sig, const std::vector<TensorInfo>&, const kernels::LinearVariant*, int) {
  return 4 * static_cast<size_t>(sig.inputs[1]->dims[1]) * sizeof(float);
}

Status eval(const OpContext& ctx) {
  const int64_t T = ctx.inputs[0]->info.dims[1], I = ctx.inputs[0]->info.dims[2];
  const int64_t H = ctx.inputs[1]->info.dims[1], G4 = 4 * H;
  const float *x = ctx.inputs[0]->cf(), *wih = ctx.inputs[3]->cf(), *whh = ctx.inputs[4]->cf();
  const float* b_ih = ctx.inputs[5] ? ctx.inputs[5]->cf() : nullptr;
  const float* b_hh = ctx.inputs[6] ? ctx.inputs[6]->cf() : nullptr;
  float *y = ctx.outputs[0]->f(), *h = ctx.outputs[1]->f(), *c = ctx.outputs[2]->f();
  if (h != ctx.inputs[1]->cf()) std::memmove(h, ctx.inputs[1]->cf(), H * sizeof(float));
  if (c != ctx.inputs[2]->cf()) std::memmove(c, ctx.inputs[2]->cf(), H * sizeof(float));
  float* g = static_cast<float*>(ctx.scratch);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < G4; ++j) {
      float v = dot8(wih + j * I, x + t * I, I) + dot8(whh + j * H, h, H);
      if (b_ih) v += b_ih[j];
      if (b_hh) v += b_hh[j];
      g[j] = v;
    }
    lstm_cell(g, H, c, h, y + t * H);
  }
  return Status::Ok();
}

}  // namespace

extern const OpDef op_lstm = {8, kOp, infer, scratch, nullptr, nullptr, eval};

}  // namespace edgekit::runtime::ops
