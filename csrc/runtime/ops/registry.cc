// The op table: every OpDef of docs/format.md §2.6, looked up by code.
#include <array>

#include "runtime/op.h"

namespace edgekit::runtime {
namespace ops {
extern const OpDef op_qlinear, op_linear, op_qconv1d, op_conv1d, op_qconv_transpose1d, op_conv_transpose1d,
    op_qlstm, op_lstm, op_layer_norm, op_softmax, op_matmul, op_add, op_sub, op_mul, op_div, op_where, op_equal,
    op_relu, op_leaky_relu, op_silu, op_sigmoid, op_tanh, op_glu, op_clamp, op_exp, op_log, op_sqrt, op_neg,
    op_abs, op_reshape, op_transpose, op_concat, op_slice, op_pad, op_gather, op_copy, op_cast, op_nearest,
    op_reduce_mean;
}  // namespace ops

const std::vector<const OpDef*>& all_ops() {
  using namespace ops;
  static const std::vector<const OpDef*> v = {
      &op_qlinear, &op_linear, &op_qconv1d, &op_conv1d, &op_qconv_transpose1d, &op_conv_transpose1d,
      &op_qlstm, &op_lstm, &op_layer_norm, &op_softmax, &op_matmul, &op_add, &op_sub, &op_mul, &op_div,
      &op_where, &op_equal, &op_relu, &op_leaky_relu, &op_silu, &op_sigmoid, &op_tanh, &op_glu, &op_clamp,
      &op_exp, &op_log, &op_sqrt, &op_neg, &op_abs, &op_reshape, &op_transpose, &op_concat, &op_slice,
      &op_pad, &op_gather, &op_copy, &op_cast, &op_nearest, &op_reduce_mean};
  return v;
}

const OpDef* find_op(int code) {
  // Codes are < 64 (§2.6); a direct table keeps lookups at load time trivial.
  static const std::array<const OpDef*, 64> table = [] {
    std::array<const OpDef*, 64> t{};
    for (const OpDef* d : all_ops()) t[d->code] = d;
    return t;
  }();
  return code >= 0 && code < 64 ? table[code] : nullptr;
}

}  // namespace edgekit::runtime
