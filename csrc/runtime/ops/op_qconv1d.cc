// qconv1d (§2.6 code 3) and qconv_transpose1d (code 5): im2col of int8 activation codes into
// scratch, then the packed GEMM per group (weight rows [g·Og, (g+1)·Og) against group g's
// columns), then the float epilogue. Positions outside the input are filled with x_zp (real 0).
//
// The transposed conv uses the transposed im2col: the column (ci, tap) of output position t
// holds the input that lands on t through that tap, x[ci, (t + padding - tap·dil) / stride]
// when that division is exact and in range, else x_zp. So both ops share one GEMM with the
// packed (Cout, Cin/g·k) weight of compress.layers.weight_2d, and no float weight exists.
//
// Dynamic activations (act_mode 1) use one grid per im2col row, i.e. per (group, output
// position): the max |x| over the values of that group reaching that position.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/linear/common.h"
#include "kernels/linear/epilogue.h"
#include "runtime/ops/common.h"

namespace edgekit::runtime::ops {
namespace {

struct Geometry {
  bool transposed;
  int64_t Cin, T, Cout, Tout, G, Cg, Og, k, stride, dil, pad;

  // Input time step feeding output position m through `tap`, or -1 (padding / no input).
  int64_t src(int64_t m, int64_t tap) const {
    if (!transposed) {
      const int64_t t = m * stride - pad + tap * dil;
      return t >= 0 && t < T ? t : -1;
    }
    const int64_t num = m + pad - tap * dil;
    if (num < 0 || num % stride) return -1;
    return num / stride < T ? num / stride : -1;
  }
  int64_t Kg() const { return Cg * k; }
};

Geometry geometry(const OpSignature& sig, bool transposed) {
  const TensorInfo& x = *sig.inputs[0];
  const TensorInfo& w = *sig.inputs[1];
  const int64_t* a = sig.ints;
  Geometry g{};
  g.transposed = transposed;
  g.Cin = x.dims[1], g.T = x.dims[2], g.Cout = w.dims[0];
  g.stride = a[0], g.dil = a[3], g.G = a[4], g.k = a[5];
  g.Cg = g.Cin / g.G, g.Og = g.Cout / g.G;
  if (!transposed) {
    g.pad = a[1];
    const int64_t span = g.T + a[1] + a[2] - g.dil * (g.k - 1) - 1;
    g.Tout = span < 0 ? 0 : span / g.stride + 1;  // C++ division truncates toward 0
  } else {
    g.pad = a[1];
    g.Tout = (g.T - 1) * g.stride - 2 * a[1] + g.dil * (g.k - 1) + a[2] + 1;
  }
  return g;
}

Status infer_common(const OpSignature& sig, std::vector<TensorInfo>* outs, const char* op, bool transposed) {
  Status st = check_counts(sig, op, 3, 3, 8, 1, {2});
  if (st.ok()) st = check_input(sig, op, 0, "x", DType::F32, 3);
  if (st.ok()) st = check_input(sig, op, 1, "W", DType::Packed, 2);
  if (st.ok()) st = check_qparams(sig, op, 6, 0);
  if (!st.ok()) return st;
  const TensorInfo& x = *sig.inputs[0];
  const TensorInfo& w = *sig.inputs[1];
  const int64_t* a = sig.ints;
  const int64_t big = int64_t{1} << 24;  // bounds every product below far from overflow
  if (x.dims[0] != 1) return fail(op, "x " + shape_str(x) + " must have batch 1");
  if (st.ok()) st = check_range(op, "stride", a[0], 1, big);
  if (st.ok()) st = check_range(op, transposed ? "padding" : "pad_left", a[1], 0, big);
  if (st.ok()) st = check_range(op, transposed ? "output_padding" : "pad_right", a[2], 0, big);
  if (st.ok()) st = check_range(op, "dilation", a[3], 1, big);
  if (st.ok()) st = check_range(op, "groups", a[4], 1, x.dims[1]);
  if (st.ok()) st = check_range(op, "k", a[5], 1, big);
  if (!st.ok()) return st;
  const int64_t G = a[4];
  if (x.dims[1] % G || w.dims[0] % G)
    return fail(op, "groups " + std::to_string(G) + " must divide Cin " + std::to_string(x.dims[1]) +
                        " and Cout " + std::to_string(w.dims[0]));
  if (w.dims[1] != x.dims[1] / G * a[5])
    return fail(op, "W " + shape_str(w) + " needs K = Cin/groups*k = " + std::to_string(x.dims[1] / G * a[5]));
  if (transposed && a[2] >= std::max(a[0], a[3]))
    return fail(op, "output_padding " + std::to_string(a[2]) + " must be smaller than stride or dilation");
  st = check_bias(sig, op, 2, w.dims[0], "bias");
  if (!st.ok()) return st;
  const Geometry g = geometry(sig, transposed);
  if (g.Tout < 1)
    return fail(op, "input length " + std::to_string(g.T) + " gives output length " + std::to_string(g.Tout));
  if (g.Tout > INT32_MAX) return fail(op, "output length " + std::to_string(g.Tout) + " exceeds 2^31 - 1");  // kernels' M is an int
  const int64_t dims[3] = {1, g.Cout, g.Tout};
  outs->assign(1, make_info(DType::F32, 3, dims));
  return check_output(op, (*outs)[0]);
}

struct Layout {
  int8_t* xq;      // (Cin, T) codes (static grid)
  int8_t* col;     // (G, Tout, Cg·k)
  int32_t* acc;    // (Tout, Cout, ngroups)
  float* stage;    // (Tout, Cout): the epilogue's row-major output before the transpose
  float* row_scale;  // (G, Tout) dynamic grid
  int32_t* src;      // (Tout, k): Geometry::src per (position, tap), computed once per call
  int32_t* row_acc;  // (threads, Tout): the depthwise path's per-channel accumulators
  QGemm g;
  size_t bytes;
};

Layout layout(void* base, const Geometry& ge, const PackedLinear& w, const kernels::LinearVariant* v, int threads) {
  Carver c(base);
  Layout l;
  l.xq = c.take<int8_t>(static_cast<size_t>(ge.Cin * ge.T));
  l.col = c.take<int8_t>(static_cast<size_t>(ge.G * ge.Tout * ge.Kg()));
  l.acc = c.take<int32_t>(static_cast<size_t>(ge.Tout * ge.Cout) * w.ngroups);
  l.stage = c.take<float>(static_cast<size_t>(ge.Tout * ge.Cout));
  l.row_scale = c.take<float>(static_cast<size_t>(ge.G * ge.Tout));
  l.src = c.take<int32_t>(static_cast<size_t>(ge.Tout * ge.k));
  l.row_acc = c.take<int32_t>(static_cast<size_t>(ge.Tout) * std::max(threads, 1));
  l.g = carve_qgemm(c, w, v, threads, static_cast<int>(ge.Tout));
  l.g.w = &w;
  l.bytes = c.used();
  return l;
}

size_t scratch_common(const OpSignature& sig, bool transposed, const kernels::LinearVariant* v, int threads) {
  return layout(nullptr, geometry(sig, transposed), packed_for_sizing(sig, 1), v, threads).bytes;
}

// Fills the columns of every group; `code(c, t, m)` gives the code of input (channel c,
// time t) in the row of output position m. `src` is the (Tout, k) table of Geometry::src.
template <class Code>
void im2col(const Geometry& g, const int32_t* src, int8_t zp_code, int8_t* col, Code code) {
  const int64_t Kg = g.Kg();
  for (int64_t grp = 0; grp < g.G; ++grp)
    for (int64_t m = 0; m < g.Tout; ++m) {
      int8_t* row = col + (grp * g.Tout + m) * Kg;
      const int32_t* sm = src + m * g.k;
      for (int64_t ci = 0; ci < g.Cg; ++ci) {
        const int64_t c = grp * g.Cg + ci;
        for (int64_t tap = 0; tap < g.k; ++tap) row[ci * g.k + tap] = sm[tap] < 0 ? zp_code : code(c, sm[tap], m);
      }
    }
}

// The static-grid conv case, which streaming models run every step: per output position
// the valid taps form one range, so each row is zp fill + a (strided) copy of codes.
void im2col_conv_codes(const Geometry& g, const int8_t* xq, int8_t zp_code, int8_t* col) {
  const int64_t Kg = g.Kg();
  for (int64_t m = 0; m < g.Tout; ++m) {
    const int64_t base = m * g.stride - g.pad;  // input time of tap 0
    const int64_t lo = base >= 0 ? 0 : std::min(g.k, (-base + g.dil - 1) / g.dil);
    const int64_t hi = base > g.T - 1 ? 0 : std::min(g.k, (g.T - 1 - base) / g.dil + 1);
    for (int64_t grp = 0; grp < g.G; ++grp) {
      int8_t* row = col + (grp * g.Tout + m) * Kg;
      for (int64_t ci = 0; ci < g.Cg; ++ci, row += g.k) {
        if (hi <= lo) {
          std::memset(row, zp_code, static_cast<size_t>(g.k));
          continue;
        }
        const int8_t* src = xq + (grp * g.Cg + ci) * g.T + base + lo * g.dil;  // tap lo
        // Interior rows (most of a long input) need no padding: skipping the empty memsets
        // saves two library calls per (position, channel).
        if (lo > 0) std::memset(row, zp_code, static_cast<size_t>(lo));
        if (g.dil == 1) {
          std::memcpy(row + lo, src, static_cast<size_t>(hi - lo));
        } else {
          for (int64_t tap = lo; tap < hi; ++tap) row[tap] = src[(tap - lo) * g.dil];
        }
        if (hi < g.k) std::memset(row + hi, zp_code, static_cast<size_t>(g.k - hi));
      }
    }
  }
}

// k == 1 (pointwise convs): each im2col row is one code per channel, so the general path
// made one 1-byte memcpy per (position, channel). This is a byte transpose of the codes
// instead, in tiles of 64 positions so the rows being filled stay in L1.
void im2col_pointwise(const Geometry& g, const int8_t* xq, int8_t zp_code, int8_t* col) {
  constexpr int64_t kTile = 64;
  for (int64_t grp = 0; grp < g.G; ++grp)
    for (int64_t m0 = 0; m0 < g.Tout; m0 += kTile) {
      const int64_t m1 = std::min(g.Tout, m0 + kTile);
      int8_t* rows = col + (grp * g.Tout) * g.Cg;
      for (int64_t ci = 0; ci < g.Cg; ++ci) {
        const int8_t* xr = xq + (grp * g.Cg + ci) * g.T;
        for (int64_t m = m0; m < m1; ++m) {
          const int64_t t = m * g.stride - g.pad;
          rows[m * g.Cg + ci] = t >= 0 && t < g.T ? xr[t] : zp_code;
        }
      }
    }
}

// Depthwise-like convs (one weight row per group, Cg·k <= 64): through the kernel these are
// G calls of one row each, dominated by per-call work on a 64-wide padded block. Instead the
// int8 weights (codebook entries of the packed codes, 0 where masked; never floats) are
// decoded once at load and each output is one int32 dot product over its im2col row: the same
// exact accumulators, so the epilogue and results are unchanged.
struct RowWeights {
  int64_t Kg;
  std::vector<int8_t> w;  // (G, Kg)
};

Status prepare_common(const OpSignature& sig, const std::vector<const TensorRef*>& consts, void** state) {
  *state = nullptr;
  const int64_t G = sig.ints[4], k = sig.ints[5];
  const int64_t Cg = sig.inputs[0]->dims[1] / G, Og = sig.inputs[1]->dims[0] / G;
  const TensorRef* wr = consts.size() > 1 ? consts[1] : nullptr;
  if (Og != 1 || Cg * k > kBlockK || !wr || !wr->prepared) return Status::Ok();
  const auto& p = *static_cast<const PackedLinear*>(wr->prepared);
  auto* st = new RowWeights{p.K, std::vector<int8_t>(static_cast<size_t>(p.N) * p.K)};
  for (int n = 0; n < p.N; ++n) {
    const int8_t* table = p.table(n);
    int8_t* out = st->w.data() + static_cast<size_t>(n) * p.K;
    if (!p.sparse) {
      const uint8_t* blk = p.codes + static_cast<size_t>(n) * p.nblocks * p.block_bytes();
      for (int j = 0; j < p.K; ++j) out[j] = table[kernels::scalar_code(p.planes, blk, j)];
      continue;
    }
    const uint64_t bm = p.bitmaps[static_cast<size_t>(n) * p.nblocks];
    const uint8_t* stream = kernels::sparse_row_codes(p, n);
    for (int j = 0, pos = 0; j < p.K; ++j)
      out[j] = (bm >> j) & 1 ? table[kernels::scalar_code(p.planes, stream, pos++)] : 0;
  }
  *state = st;
  return Status::Ok();
}

void release(void* state) { delete static_cast<RowWeights*>(state); }

// Codes in column-major im2col order for the depthwise path: colT[(c·k + tap)·Tout + m], so
// each (channel, tap) is one contiguous run over output positions and the dot products below
// vectorize over m. `code(c, t, m)` as for im2col.
template <class Code>
void im2col_t(const Geometry& g, const int32_t* src, int8_t zp_code, int8_t* colT, Code code) {
  for (int64_t c = 0; c < g.Cin; ++c)
    for (int64_t tap = 0; tap < g.k; ++tap) {
      int8_t* out = colT + (c * g.k + tap) * g.Tout;
      for (int64_t m = 0; m < g.Tout; ++m) {
        const int32_t t = src[m * g.k + tap];
        out[m] = t < 0 ? zp_code : code(c, t, m);
      }
    }
}

// The static non-transposed case: the positions a tap reads form one range of input times
// with step `stride`, so each run is zp fill + a copy (memcpy for stride 1).
void im2col_t_conv_codes(const Geometry& g, const int8_t* xq, int8_t zp_code, int8_t* colT) {
  for (int64_t tap = 0; tap < g.k; ++tap) {
    const int64_t off = tap * g.dil - g.pad;  // t = m * stride + off
    const int64_t lo = std::min(g.Tout, off >= 0 ? 0 : (-off + g.stride - 1) / g.stride);
    const int64_t hi = std::max(lo, std::min(g.Tout, g.T - 1 - off < 0 ? 0 : (g.T - 1 - off) / g.stride + 1));
    for (int64_t c = 0; c < g.Cin; ++c) {
      int8_t* out = colT + (c * g.k + tap) * g.Tout;
      std::memset(out, zp_code, static_cast<size_t>(lo));
      if (hi > lo) {
        const int8_t* src = xq + c * g.T + lo * g.stride + off;
        if (g.stride == 1) {
          std::memcpy(out + lo, src, static_cast<size_t>(hi - lo));
        } else {
          for (int64_t m = lo; m < hi; ++m) out[m] = src[(m - lo) * g.stride];
        }
      }
      std::memset(out + hi, zp_code, static_cast<size_t>(g.Tout - hi));
    }
  }
}

struct RowJob {
  const RowWeights* rw;
  const int8_t* colT;
  int64_t G, Tout;
  int32_t zp;
  int32_t* acc;
  int32_t* row_acc;
  int tasks;
};

void row_task(void* p, int i) {
  const RowJob& j = *static_cast<const RowJob*>(p);
  const int64_t Kg = j.rw->Kg;
  int32_t* s = j.row_acc + i * j.Tout;
  for (int64_t c = j.G * i / j.tasks; c < j.G * (i + 1) / j.tasks; ++c) {
    const int8_t* w = j.rw->w.data() + c * Kg;
    std::fill(s, s + j.Tout, 0);
    for (int64_t q = 0; q < Kg; ++q) {
      const int32_t wq = w[q];
      if (wq == 0) continue;  // masked (sparse) weights cost nothing
      const int8_t* x = j.colT + (c * Kg + q) * j.Tout;
      // |x - zp| <= 255, |w| <= 128, Kg <= 64 terms: far from int32 overflow
      for (int64_t m = 0; m < j.Tout; ++m) s[m] += (int32_t{x[m]} - j.zp) * wq;
    }
    for (int64_t m = 0; m < j.Tout; ++m) j.acc[m * j.G + c] = s[m];
  }
}

// y (cols, rows) = x (rows, cols) transposed, in 16x16 tiles: the plain loop's stores (or
// loads) stride a whole row each, which for the codec's long outputs (Tout in the thousands)
// touched a new cache line per element and made this copy the op's largest cost.
void transpose_blocked(const float* x, int64_t rows, int64_t cols, float* y) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) y[c * rows + r] = x[r * cols + c];
    }
  }
}

Status eval_common(const OpContext& ctx, bool transposed) {
  const auto& w = *static_cast<const PackedLinear*>(ctx.inputs[1]->prepared);
  const TensorRef& x = *ctx.inputs[0];
  Geometry ge{};
  ge.transposed = transposed;
  ge.Cin = x.info.dims[1], ge.T = x.info.dims[2], ge.Cout = w.N;
  ge.stride = ctx.ints[0], ge.pad = ctx.ints[1], ge.dil = ctx.ints[3], ge.G = ctx.ints[4], ge.k = ctx.ints[5];
  ge.Cg = ge.Cin / ge.G, ge.Og = ge.Cout / ge.G;
  ge.Tout = ctx.outputs[0]->info.dims[2];
  const Layout l = layout(ctx.scratch, ge, w, ctx.linear, ctx.threads);
  const float* xf = x.cf();
  const bool dynamic = ctx.ints[6] == 1;
  // The source table serves only the generic im2col paths (transposed, dynamic); the static
  // conv paths compute their ranges directly, so streaming steps skip this Tout·k loop.
  if (transposed || dynamic)
    for (int64_t m = 0; m < ge.Tout; ++m)
      for (int64_t tap = 0; tap < ge.k; ++tap) l.src[m * ge.k + tap] = static_cast<int32_t>(ge.src(m, tap));
  const int32_t zp = dynamic ? 0 : static_cast<int32_t>(ctx.ints[7]);
  const bool rows = ctx.state != nullptr;  // the depthwise path (prepare decided)
  if (!dynamic) {
    quantize_static(xf, ge.Cin * ge.T, ctx.floats[0], zp, l.xq);
    const auto code = [&](int64_t c, int64_t t, int64_t) { return l.xq[c * ge.T + t]; };
    const int8_t z = static_cast<int8_t>(zp);
    if (rows && !transposed) im2col_t_conv_codes(ge, l.xq, z, l.col);
    else if (rows) im2col_t(ge, l.src, z, l.col, code);
    else if (!transposed && ge.k == 1) im2col_pointwise(ge, l.xq, z, l.col);
    else if (!transposed) im2col_conv_codes(ge, l.xq, z, l.col);
    else im2col(ge, l.src, z, l.col, code);
  } else {
    for (int64_t grp = 0; grp < ge.G; ++grp)
      for (int64_t m = 0; m < ge.Tout; ++m) {
        float amax = 0.0f;
        for (int64_t c = grp * ge.Cg; c < (grp + 1) * ge.Cg; ++c)
          for (int64_t tap = 0; tap < ge.k; ++tap) {
            const int64_t t = l.src[m * ge.k + tap];
            if (t >= 0) amax = std::max(amax, std::fabs(xf[c * ge.T + t]));
          }
        l.row_scale[grp * ge.Tout + m] = dynamic_scale(amax);
      }
    const auto code = [&](int64_t c, int64_t t, int64_t m) {
      return quantize_one(xf[c * ge.T + t], 1.0f / l.row_scale[(c / ge.Cg) * ge.Tout + m], 0.0f);
    };
    if (rows) im2col_t(ge, l.src, 0, l.col, code);
    else im2col(ge, l.src, 0, l.col, code);
  }
  const int M = static_cast<int>(ge.Tout);
  if (rows) {
    RowJob job{static_cast<const RowWeights*>(ctx.state), l.col, ge.G, ge.Tout, zp, l.acc, l.row_acc, 1};
    job.tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(ctx.pool ? ctx.threads : 1, ge.G)));
    if (job.tasks == 1) row_task(&job, 0);
    else parallel_for(ctx.pool, job.tasks, row_task, &job);
  } else {
    qgemm_run(ctx, l.g, l.col, ge.Tout * ge.Kg(), M, zp, l.acc, static_cast<int>(ge.G), static_cast<int>(ge.Og));
  }
  const float* bias = ctx.inputs[2] ? ctx.inputs[2]->cf() : nullptr;
  if (!dynamic) {
    kernels::epilogue_f32(w, l.acc, M, ctx.floats[0], bias, l.stage);
  } else {
    const size_t row = static_cast<size_t>(w.N) * w.ngroups;
    for (int m = 0; m < M; ++m)
      for (int64_t grp = 0; grp < ge.G; ++grp)
        kernels::epilogue_f32_rows(w, l.acc + m * row, static_cast<int>(grp * ge.Og), static_cast<int>((grp + 1) * ge.Og),
                          l.row_scale[grp * ge.Tout + m], bias, l.stage + static_cast<size_t>(m) * w.N);
  }
  transpose_blocked(l.stage, ge.Tout, ge.Cout, ctx.outputs[0]->f());
  return Status::Ok();
}

Status infer_conv(const OpSignature& s, std::vector<TensorInfo>* o) { return infer_common(s, o, "qconv1d", false); }
Status infer_tconv(const OpSignature& s, std::vector<TensorInfo>* o) {
  return infer_common(s, o, "qconv_transpose1d", true);
}
size_t scratch_conv(const OpSignature& s, const std::vector<TensorInfo>&, const kernels::LinearVariant* v, int t) {
  return scratch_common(s, false, v, t);
}
size_t scratch_tconv(const OpSignature& s, const std::vector<TensorInfo>&, const kernels::LinearVariant* v, int t) {
  return scratch_common(s, true, v, t);
}
Status eval_conv(const OpContext& ctx) { return eval_common(ctx, false); }
Status eval_tconv(const OpContext& ctx) { return eval_common(ctx, true); }

}  // namespace

extern const OpDef op_qconv1d = {3, "qconv1d", infer_conv, scratch_conv, prepare_common, release, eval_conv};
extern const OpDef op_qconv_transpose1d = {5, "qconv_transpose1d", infer_tconv, scratch_tconv, prepare_common, release,
                                           eval_tconv};

}  // namespace edgekit::runtime::ops
