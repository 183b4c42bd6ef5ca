// Helpers shared by the ops of docs/format.md §2.6: argument checks for `infer`, numpy
// broadcasting, int8 activation quantization, scratch carving and the threaded q-op GEMM.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "format/packed.h"
#include "kernels/linear/linear.h"
#include "runtime/op.h"

namespace edgekit::runtime::ops {

// Shapes are bounded by the file format (numel <= 2^31); attributes get the same bound so that
// no index arithmetic below can overflow int64.
// Largest dim and element count: kernels and loops index with int, so 2^31 itself is refused.
constexpr int64_t kMaxDim = INT32_MAX;

std::string shape_str(const TensorInfo& t);
const char* dtype_name(DType t);
Status fail(const char* op, const std::string& msg);  // "op: msg"

// Input and attribute counts. `max_in` < 0: unbounded; `n_ints` < 0: any count.
// Inputs absent (nullptr) are allowed only at positions listed in `optional`.
Status check_counts(const OpSignature& sig, const char* op, int min_in, int max_in, int n_ints,
                    int n_floats, std::initializer_list<int> optional = {});
// Input `i` present with dtype `dt` and rank `rank` (rank < 0: any).
Status check_input(const OpSignature& sig, const char* op, int i, const char* what, DType dt,
                   int rank);
// Axis in [0, rank).
Status norm_axis(const char* op, int64_t axis, int rank, int* out);
// `v` in [lo, hi].
Status check_range(const char* op, const char* what, int64_t v, int64_t lo, int64_t hi);
// Output rank <= kMaxRank, every dim in [1, 2^31), numel <= 2^31.
Status check_output(const char* op, const TensorInfo& t);

TensorInfo make_info(DType dt, int rank, const int64_t* dims);
inline bool same_shape(const TensorInfo& a, const TensorInfo& b) {
  if (a.rank != b.rank) return false;
  for (int i = 0; i < a.rank; ++i)
    if (a.dims[i] != b.dims[i]) return false;
  return true;
}
// Product of dims [from, to).
int64_t span(const TensorInfo& t, int from, int to);

// numpy broadcasting of a and b (dtype of the result: `dt`).
Status broadcast_shape(const char* op, const TensorInfo& a, const TensorInfo& b, DType dt,
                       TensorInfo* out);

// Walks an output in row-major order and, per output element, the element of each input it
// reads under broadcasting. Inner loop: `run(count, offsets, strides)` over the last dim.
struct Broadcaster {
  static constexpr int kMaxIn = 3;
  int n_in = 0;
  int rank = 0;
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxIn][kMaxRank] = {};  // 0 on broadcast dims
  Broadcaster(const TensorInfo& out, const TensorInfo* const* ins, int n);
  // fn(int64_t out_offset, const int64_t* in_offsets, int64_t len, const int64_t* in_inner_strides)
  template <class F>
  void for_each_row(F&& fn) const {
    const int last = rank - 1;
    const int64_t len = rank > 0 ? dims[last] : 1;
    int64_t inner[kMaxIn];
    for (int j = 0; j < n_in; ++j) inner[j] = rank > 0 ? strides[j][last] : 0;
    int64_t rows = 1;
    for (int d = 0; d < last; ++d) rows *= dims[d];
    int64_t idx[kMaxRank] = {};
    int64_t off[kMaxIn] = {};
    for (int64_t r = 0; r < rows; ++r) {
      fn(r * len, off, len, inner);
      for (int d = last - 1; d >= 0; --d) {  // odometer over the outer dims
        ++idx[d];
        for (int j = 0; j < n_in; ++j) off[j] += strides[j][d];
        if (idx[d] < dims[d]) break;
        for (int j = 0; j < n_in; ++j) off[j] -= strides[j][d] * dims[d];
        idx[d] = 0;
      }
    }
  }
};

// The q-ops' activation grid (docs/format.md §2.6), bit-exact with
// torch.fake_quantize_per_tensor_affine: q = clamp(nearbyint(x * (1/scale)) + zp, -128, 127).
// Values are first clamped to [-512, 512] (any such value saturates for every zp in
// [-128, 127], and NaN goes to -128), so nearbyint can be (v + 1.5·2^23) - 1.5·2^23: exact
// round-half-even for |v| < 2^22, and a plain vectorizable add instead of a libm call.
// (Needs the build's -fno-fast-math so the two adds are not folded.)
// no-trapping-math (here and around quantize_static's loop) only lets GCC if-convert the
// clamps into vector compare+select: under the default -ftrapping-math a float compare "may
// trap", so the loop stays scalar with branches. It changes no value (no reassociation, no
// contraction); the exhaustive tie test in test_ops checks the vector path bit for bit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif
inline int8_t quantize_one(float x, float inv_scale, float zp) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  float v = x * inv_scale;
  v = v >= -512.0f ? v : -512.0f;
  v = v <= 512.0f ? v : 512.0f;
  float r = ((v + kRound) - kRound) + zp;
  r = r >= -128.0f ? r : -128.0f;
  r = r <= 127.0f ? r : 127.0f;
  return static_cast<int8_t>(r);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
void quantize_static(const float* x, int64_t n, float x_scale, int32_t x_zp, int8_t* q);
// Dynamic grid: max|x| / 127 (1 when the row is all zero), zero point 0.
float dynamic_scale(float absmax);

// Carves 64-byte aligned pieces out of an op's scratch; with base == nullptr it only sums
// sizes, so scratch_bytes and eval share one layout function.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<uint8_t*>(base)) {}
  template <class T>
  T* take(size_t count) {
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += (count * sizeof(T) + 63) & ~size_t{63};
    return p;
  }
  size_t used() const { return used_; }

 private:
  uint8_t* base_;
  size_t used_ = 0;
};

// The q-op GEMM: packed weight, kernel variant and per-thread kernel scratch.
struct QGemm {
  const PackedLinear* w;
  const kernels::LinearVariant* v;
  int threads;
  uint8_t* vscratch;      // threads * per_thread bytes
  size_t per_thread;
};

// Exact view of packed input `i` if the executor already parsed it, else a worst case with
// the same N, K (8 bits, sparse, 64-wide groups) so scratch sizes are upper bounds.
PackedLinear packed_for_sizing(const OpSignature& sig, int i);
// Per-thread kernel scratch for up to M activation rows (64-byte multiple).
size_t qgemm_thread_scratch(const kernels::LinearVariant* v, const PackedLinear& w, int M);
// Reserve the kernel scratch of `threads` threads for up to M rows.
QGemm carve_qgemm(Carver& c, const PackedLinear& w, const kernels::LinearVariant* v, int threads,
                  int M);

// acc rows [n0, n1) of `w` for activations `x` (M, K). `segments` calls are fused: segment s
// covers weight rows [seg_n0 + s*seg_rows, +seg_rows) with activations x + s*x_stride (the
// grouped convolutions); a plain GEMM is one segment. Rows are split over ctx's threads.
void qgemm_run(const OpContext& ctx, const QGemm& g, const int8_t* x, int64_t x_stride, int M,
               int32_t x_zp, int32_t* acc, int segments, int seg_rows);

// Shared infer checks of the q-ops: packed W (N, K) at input `wi`, optional f32 bias (N) at
// `bi`, act_mode/x_zp at ints[mode_at], ints[mode_at+1], x_scale at floats[scale_at].
Status check_qparams(const OpSignature& sig, const char* op, int mode_at, int scale_at);
Status check_bias(const OpSignature& sig, const char* op, int bi, int64_t n, const char* what);

// scratch_bytes of ops that need none.
size_t no_scratch(const OpSignature&, const std::vector<TensorInfo>&, const kernels::LinearVariant*, int);

// Dot product with eight partial sums: without -ffast-math the compiler may not reorder one
// long sum chain, so this is what lets it vectorize (the order is fixed: deterministic).
inline float dot8(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

inline float sigmoidf(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// One LSTM cell update from the pre-activation gates g (4H, torch order i, f, g, o), as
// docs/format.md §2.6 defines it for both lstm and qlstm: c, h updated in place, h copied to y.
inline void lstm_cell(const float* g, int64_t H, float* c, float* h, float* y) {
  for (int64_t j = 0; j < H; ++j) {
    const float i_g = sigmoidf(g[j]), f_g = sigmoidf(g[H + j]);
    const float g_g = std::tanh(g[2 * H + j]), o_g = sigmoidf(g[3 * H + j]);
    c[j] = f_g * c[j] + i_g * g_g;
    h[j] = o_g * std::tanh(c[j]);
    y[j] = h[j];
  }
}

}  // namespace edgekit::runtime::ops
