#include "runtime/ops/common.h"

#include <algorithm>
#include <limits>

namespace edgekit::runtime {

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[i];
  return n;
}

size_t TensorInfo::nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }

namespace ops {

std::string shape_str(const TensorInfo& t) {
  std::string s = "(";
  for (int i = 0; i < t.rank; ++i) s += (i ? ", " : "") + std::to_string(t.dims[i]);
  return s + (t.rank == 1 ? ",)" : ")");
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::I32: return "i32";
    case DType::I8: return "i8";
    case DType::U8: return "u8";
    case DType::I64: return "i64";
    case DType::Packed: return "packed";
  }
  return "unknown";
}

Status fail(const char* op, const std::string& msg) { return Status::Invalid(std::string(op) + ": " + msg); }

Status check_counts(const OpSignature& sig, const char* op, int min_in, int max_in, int n_ints,
                    int n_floats, std::initializer_list<int> optional) {
  const int n = static_cast<int>(sig.inputs.size());
  if (n < min_in || (max_in >= 0 && n > max_in))
    return fail(op, "has " + std::to_string(n) + " inputs, expected " +
                        (max_in == min_in ? std::to_string(min_in)
                         : max_in < 0     ? "at least " + std::to_string(min_in)
                                          : std::to_string(min_in) + ".." + std::to_string(max_in)));
  for (int i = 0; i < n; ++i) {
    if (sig.inputs[i]) continue;
    if (std::find(optional.begin(), optional.end(), i) == optional.end())
      return fail(op, "input " + std::to_string(i) + " is absent but required");
  }
  if (n_ints >= 0 && sig.n_ints != n_ints)
    return fail(op, "has " + std::to_string(sig.n_ints) + " int attributes, expected " + std::to_string(n_ints));
  if (sig.n_ints > 0 && !sig.ints) return fail(op, "int attributes missing");
  if (sig.n_floats != n_floats)
    return fail(op, "has " + std::to_string(sig.n_floats) + " float attributes, expected " + std::to_string(n_floats));
  if (sig.n_floats > 0 && !sig.floats) return fail(op, "float attributes missing");
  return Status::Ok();
}

Status check_input(const OpSignature& sig, const char* op, int i, const char* what, DType dt, int rank) {
  const TensorInfo* t = sig.inputs[i];
  if (!t) return fail(op, std::string(what) + " is absent");
  if (t->dtype != dt)
    return fail(op, std::string(what) + " has dtype " + dtype_name(t->dtype) + ", expected " + dtype_name(dt));
  if (rank >= 0 && t->rank != rank)
    return fail(op, std::string(what) + " has rank " + std::to_string(t->rank) + " " + shape_str(*t) +
                        ", expected " + std::to_string(rank));
  return Status::Ok();
}

Status norm_axis(const char* op, int64_t axis, int rank, int* out) {
  // Exporters normalize axes (the Python shape inference, edgekit/export/shapes.py, agrees).
  if (axis < 0 || axis >= rank)
    return fail(op, "axis " + std::to_string(axis) + " out of range [0, " + std::to_string(rank) + ")");
  *out = static_cast<int>(axis);
  return Status::Ok();
}

Status check_range(const char* op, const char* what, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    return fail(op, std::string(what) + " is " + std::to_string(v) + ", expected " + std::to_string(lo) +
                        ".." + std::to_string(hi));
  return Status::Ok();
}

Status check_output(const char* op, const TensorInfo& t) {
  if (t.rank < 0 || t.rank > kMaxRank)
    return fail(op, "output rank " + std::to_string(t.rank) + " exceeds " + std::to_string(kMaxRank));
  int64_t n = 1;
  for (int i = 0; i < t.rank; ++i) {
    if (t.dims[i] < 1 || t.dims[i] > kMaxDim)
      return fail(op, "output dim " + std::to_string(i) + " is " + std::to_string(t.dims[i]) + ", expected >= 1");
    n *= t.dims[i];
    if (n > kMaxDim) return fail(op, "output has 2^31 or more elements");
  }
  return Status::Ok();
}

TensorInfo make_info(DType dt, int rank, const int64_t* dims) {
  TensorInfo t;
  t.dtype = dt;
  t.rank = rank;
  for (int i = 0; i < rank && i < kMaxRank; ++i) t.dims[i] = dims[i];
  return t;
}

int64_t span(const TensorInfo& t, int from, int to) {
  int64_t n = 1;
  for (int i = from; i < to; ++i) n *= t.dims[i];
  return n;
}

Status broadcast_shape(const char* op, const TensorInfo& a, const TensorInfo& b, DType dt, TensorInfo* out) {
  const int r = std::max(a.rank, b.rank);
  TensorInfo o;
  o.dtype = dt;
  o.rank = r;
  for (int i = 0; i < r; ++i) {
    const int ia = i - (r - a.rank), ib = i - (r - b.rank);
    const int64_t da = ia >= 0 ? a.dims[ia] : 1, db = ib >= 0 ? b.dims[ib] : 1;
    if (da != db && da != 1 && db != 1)
      return fail(op, "shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast");
    o.dims[i] = std::max(da, db);
  }
  *out = o;
  return Status::Ok();
}

Broadcaster::Broadcaster(const TensorInfo& out, const TensorInfo* const* ins, int n) : n_in(n), rank(out.rank) {
  for (int d = 0; d < rank; ++d) dims[d] = out.dims[d];
  for (int j = 0; j < n; ++j) {
    const TensorInfo& t = *ins[j];
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; --d) {
      const int it = d - (rank - t.rank);
      const int64_t dim = it >= 0 ? t.dims[it] : 1;
      strides[j][d] = dim == 1 ? 0 : s;
      s *= dim;
    }
  }
}

// See quantize_one: the pragma makes this loop vectorize (4-16 lanes) with identical codes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif
void quantize_static(const float* x, int64_t n, float x_scale, int32_t x_zp, int8_t* q) {
  const float inv = 1.0f / x_scale, zp = static_cast<float>(x_zp);
  for (int64_t i = 0; i < n; ++i) q[i] = quantize_one(x[i], inv, zp);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

float dynamic_scale(float absmax) {
  // NaN/inf rows get scale 1 as well: their codes saturate, no division by a NaN scale.
  return absmax > 0.0f && std::isfinite(absmax) ? absmax / 127.0f : 1.0f;
}

PackedLinear packed_for_sizing(const OpSignature& sig, int i) {
  if (i < static_cast<int>(sig.input_prepared.size()) && sig.input_prepared[i]) {
    const auto* p = static_cast<const PackedLinear*>(sig.input_prepared[i]);
    PackedLinear w;  // header fields only: the derived vectors are not needed for sizing
    w.N = p->N, w.K = p->K, w.Kpad = p->Kpad, w.nblocks = p->nblocks, w.bits = p->bits;
    w.planes = p->planes, w.codebook_per_row = p->codebook_per_row, w.affine = p->affine;
    w.sparse = p->sparse, w.nm_n = p->nm_n, w.nm_m = p->nm_m;
    w.group_size = p->group_size, w.ngroups = p->ngroups;
    return w;
  }
  const TensorInfo& t = *sig.inputs[i];
  PackedLinear w;
  w.N = static_cast<int32_t>(t.dims[0]);
  w.K = static_cast<int32_t>(t.dims[1]);
  w.nblocks = (w.K + kBlockK - 1) / kBlockK;
  w.Kpad = w.nblocks * kBlockK;
  w.bits = 8;
  w.planes = plane_split(8);
  w.codebook_per_row = true;
  w.sparse = true;
  w.group_size = kBlockK;
  w.ngroups = w.nblocks;
  return w;
}

size_t qgemm_thread_scratch(const kernels::LinearVariant* v, const PackedLinear& w, int M) {
  const size_t s = v ? v->scratch_bytes(w, M) : 0;
  return (s + 63) & ~size_t{63};
}

QGemm carve_qgemm(Carver& c, const PackedLinear& w, const kernels::LinearVariant* v, int threads, int M) {
  QGemm g{nullptr, v, std::max(threads, 1), nullptr, qgemm_thread_scratch(v, w, M)};
  g.vscratch = c.take<uint8_t>(g.per_thread * g.threads);
  return g;
}

namespace {

struct QGemmJob {
  const QGemm* g;
  const int8_t* x;
  int64_t x_stride;
  int M;
  int32_t x_zp;
  int32_t* acc;
  int segments, seg_rows, tasks;
};

// Row tiles of 8 keep every task on whole kernel tiles (4 rows, 8 for one activation row).
constexpr int kRowTile = 8;

void qgemm_task(void* p, int i) {
  const QGemmJob& j = *static_cast<const QGemmJob*>(p);
  const int N = j.g->w->N;
  const int tiles = (N + kRowTile - 1) / kRowTile;
  const int n0 = std::min(N, static_cast<int>(int64_t{tiles} * i / j.tasks) * kRowTile);
  const int n1 = std::min(N, static_cast<int>(int64_t{tiles} * (i + 1) / j.tasks) * kRowTile);
  uint8_t* scratch = j.g->vscratch + j.g->per_thread * static_cast<size_t>(i);
  for (int s = n0 / j.seg_rows; s < j.segments && s * j.seg_rows < n1; ++s) {
    const int a = std::max(n0, s * j.seg_rows), b = std::min(n1, (s + 1) * j.seg_rows);
    j.g->v->accumulate(*j.g->w, j.x + s * j.x_stride, j.M, j.x_zp, j.acc, a, b, scratch);
  }
}

}  // namespace

void qgemm_run(const OpContext& ctx, const QGemm& g, const int8_t* x, int64_t x_stride, int M, int32_t x_zp,
               int32_t* acc, int segments, int seg_rows) {
  const int tiles = (g.w->N + kRowTile - 1) / kRowTile;
  const int tasks = std::max(1, std::min({g.threads, ctx.threads, tiles}));
  QGemmJob job{&g, x, x_stride, M, x_zp, acc, segments, seg_rows, tasks};
  if (tasks == 1 || !ctx.pool) {
    job.tasks = 1;
    qgemm_task(&job, 0);
    return;
  }
  parallel_for(ctx.pool, tasks, qgemm_task, &job);
}

Status check_qparams(const OpSignature& sig, const char* op, int mode_at, int scale_at) {
  Status st = check_range(op, "act_mode", sig.ints[mode_at], 0, 1);
  if (!st.ok()) return st;
  st = check_range(op, "x_zp", sig.ints[mode_at + 1], -128, 127);
  if (!st.ok()) return st;
  const float s = sig.floats[scale_at];
  if (sig.ints[mode_at] == 0 && !(std::isfinite(s) && s > 0.0f && std::isfinite(1.0f / s)))
    return fail(op, "x_scale must be finite and > 0, got " + std::to_string(s));
  if (sig.ints[mode_at] == 1 && sig.ints[mode_at + 1] != 0)
    return fail(op, "dynamic activations (act_mode 1) need x_zp 0");
  return Status::Ok();
}

Status check_bias(const OpSignature& sig, const char* op, int bi, int64_t n, const char* what) {
  if (bi >= static_cast<int>(sig.inputs.size()) || !sig.inputs[bi]) return Status::Ok();
  Status st = check_input(sig, op, bi, what, DType::F32, 1);
  if (!st.ok()) return st;
  if (sig.inputs[bi]->dims[0] != n)
    return fail(op, std::string(what) + " has " + std::to_string(sig.inputs[bi]->dims[0]) +
                        " elements, expected " + std::to_string(n));
  return Status::Ok();
}

size_t no_scratch(const OpSignature&, const std::vector<TensorInfo>&, const kernels::LinearVariant*, int) {
  return 0;
}

}  // namespace ops
}  // namespace edgekit::runtime
