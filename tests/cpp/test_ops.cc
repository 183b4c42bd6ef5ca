// Op tests, part 1: the harness (test_ops.h) and the q-ops. Every q-op runs on every linear
// variant this CPU supports, single-threaded and on a 3-thread pool, and must equal a
// straightforward loop over the logical weights bit for bit: the reference rounds the
// activations by the §2.6 rule and applies the same float epilogue order, so any difference
// is an indexing, im2col, grouping or threading bug.
#include "test_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "cases.h"
#include "runtime/ops/common.h"
#include "runtime/threadpool.h"

namespace edgekit::test {

Ten make_ten(DType dt, const std::vector<int64_t>& dims) {
  Ten t;
  t.info.dtype = dt;
  t.info.rank = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) t.info.dims[i] = dims[i];
  t.bytes = t.info.nbytes();
  t.store.assign((t.bytes + 7) / 8 + 1, 0);
  return t;
}

Ten make_ten(DType dt, std::initializer_list<int64_t> dims) { return make_ten(dt, std::vector<int64_t>(dims)); }

Ten rand_f32(std::initializer_list<int64_t> dims, uint64_t seed, float lo, float hi) {
  Ten t = make_ten(DType::F32, dims);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.f()[i] = u(rng);
  return t;
}

Ten packed_ten(const LogicalWeights& lw) {
  const std::vector<uint8_t> bytes = pack(lw);
  Ten t = make_ten(DType::Packed, {lw.N, lw.K});
  t.store.assign(bytes.size() / 8 + 1, 0);
  std::memcpy(t.store.data(), bytes.data(), bytes.size());
  t.bytes = bytes.size();
  t.packed = std::make_shared<PackedLinear>();
  const Status st = parse_packed_linear(reinterpret_cast<const uint8_t*>(t.store.data()), t.bytes, t.packed.get());
  if (!st.ok()) std::printf("FAIL test packer output rejected: %s\n", st.message().c_str());
  return t;
}

OpRun run_op(int code, const std::vector<Ten*>& ins, const std::vector<int64_t>& ints,
             const std::vector<float>& floats, const kernels::LinearVariant* v, int threads,
             bool sized_exactly) {
  OpRun r;
  const runtime::OpDef* def = runtime::find_op(code);
  if (!def) {
    r.infer = Status::Invalid("no op with code " + std::to_string(code));
    return r;
  }
  if (!v) v = &kernels::linear_ref;
  runtime::OpSignature sig;
  for (Ten* t : ins) {
    sig.inputs.push_back(t ? &t->info : nullptr);
    sig.input_is_const.push_back(t && t->packed);
    sig.input_prepared.push_back(t && t->packed && sized_exactly ? t->packed.get() : nullptr);
  }
  sig.ints = ints.data(), sig.n_ints = static_cast<int>(ints.size());
  sig.floats = floats.data(), sig.n_floats = static_cast<int>(floats.size());
  std::vector<TensorInfo> outs;
  r.infer = def->infer(sig, &outs);
  if (!r.infer.ok()) return r;
  r.scratch_bytes = def->scratch_bytes(sig, outs, v, threads);

  constexpr size_t kGuard = 64;
  constexpr uint8_t kPoison = 0xA5;
  std::vector<uint64_t> scratch_store((r.scratch_bytes + 2 * kGuard + 64) / 8 + 1);
  auto* raw = reinterpret_cast<uint8_t*>(scratch_store.data());
  std::memset(raw, kPoison, scratch_store.size() * 8);
  uint8_t* scratch = raw + kGuard + (64 - reinterpret_cast<uintptr_t>(raw + kGuard) % 64) % 64;

  std::vector<runtime::TensorRef> in_refs(ins.size()), out_refs(outs.size());
  runtime::OpContext ctx;
  for (size_t i = 0; i < ins.size(); ++i) {
    if (!ins[i]) {
      ctx.inputs.push_back(nullptr);
      continue;
    }
    in_refs[i].info = ins[i]->info;
    in_refs[i].data = ins[i]->data();
    in_refs[i].bytes = ins[i]->bytes;
    in_refs[i].prepared = ins[i]->packed.get();
    ctx.inputs.push_back(&in_refs[i]);
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    r.outs.push_back(make_ten(outs[i].dtype, std::vector<int64_t>(outs[i].dims, outs[i].dims + outs[i].rank)));
    Ten& o = r.outs.back();
    std::memset(o.store.data(), 0x7F, o.store.size() * 8);  // garbage the op must overwrite
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    out_refs[i].info = r.outs[i].info;
    out_refs[i].data = r.outs[i].data();
    out_refs[i].bytes = r.outs[i].bytes;
    ctx.outputs.push_back(&out_refs[i]);
  }
  ctx.ints = ints.data(), ctx.n_ints = sig.n_ints;
  ctx.floats = floats.data(), ctx.n_floats = sig.n_floats;
  std::vector<const runtime::TensorRef*> consts;
  for (size_t i = 0; i < ins.size(); ++i) consts.push_back(ins[i] && ins[i]->packed ? &in_refs[i] : nullptr);
  void* state = nullptr;
  if (def->prepare) {
    r.eval = def->prepare(sig, consts, &state);
    if (!r.eval.ok()) return r;
  }
  ctx.state = state;
  ctx.scratch = r.scratch_bytes ? scratch : nullptr;
  ctx.scratch_bytes = r.scratch_bytes;
  ctx.linear = v;
  std::unique_ptr<runtime::ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<runtime::ThreadPool>(threads);
  ctx.pool = pool.get();
  ctx.threads = threads;
  r.eval = def->eval(ctx);
  if (def->release && state) def->release(state);
  for (uint8_t* p = raw; p < scratch; ++p) r.scratch_ok &= *p == kPoison;
  for (uint8_t* p = scratch + r.scratch_bytes; p < raw + scratch_store.size() * 8; ++p) r.scratch_ok &= *p == kPoison;
  return r;
}

std::string compare(const float* got, const float* want, int64_t n, float atol, float rtol) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = got[i], w = want[i];
    const bool same = (std::isnan(g) && std::isnan(w)) || g == w;
    if (same || std::fabs(g - w) <= atol + rtol * std::fabs(w)) continue;
    char buf[160];
    std::snprintf(buf, sizeof buf, "first mismatch at %lld: got %.9g want %.9g", static_cast<long long>(i), g, w);
    return buf;
  }
  return "";
}

void check_ops(Tally& t, const std::vector<VariantEntry>& variants) {
  check_qops(t, variants);
  check_float_ops(t);
  check_shape_ops(t);
}

namespace {

int8_t q8(float x, float scale, int32_t zp) {
  float r = std::nearbyint(x * (1.0f / scale)) + static_cast<float>(zp);
  r = std::min(127.0f, std::max(-128.0f, r));
  return static_cast<int8_t>(r);
}

float dyn_scale(float amax) { return amax > 0.0f ? amax / 127.0f : 1.0f; }

// Weight group of column k (docs/format.md §1.7).
int group_of(const LogicalWeights& w, int k) { return w.group_size > 0 ? k / w.group_size : 0; }

// The epilogue_f32 arithmetic on exact per-group accumulators.
float epilogue(const LogicalWeights& w, int n, const std::vector<int64_t>& acc_g, float x_scale, const float* bias) {
  float y = 0.0f;
  for (int g = 0; g < w.ngroups(); ++g)
    y += w.scales[static_cast<size_t>(n) * w.ngroups() + g] * static_cast<float>(static_cast<int32_t>(acc_g[g]));
  y *= x_scale;
  if (bias) y += bias[n];
  return y;
}

LogicalWeights weights(int N, int K, int bits, Sparsity sp, int group, uint64_t seed, bool per_row = false) {
  Case c;
  c.N = N, c.K = K, c.bits = bits, c.sparsity = sp, c.group_size = group, c.seed = seed, c.per_row = per_row;
  c.table = seed % 2 ? Table::kRandom : Table::kAffine;
  c.density = 0.6;
  if (sp == Sparsity::kNM) c.nm_n = 2, c.nm_m = 4;
  return make_weights(c);
}

struct Runner {
  Tally& t;
  const std::vector<VariantEntry>& variants;
  // Runs the op on every variant x {1, 3 threads}; `check` compares one run.
  template <class Check>
  void each(const std::string& what, int code, const std::vector<Ten*>& ins, const std::vector<int64_t>& ints,
            const std::vector<float>& floats, Check check) {
    for (const VariantEntry& e : variants) {
      if (!e.supported) continue;
      for (int threads : {1, 3}) {
        const std::string who = what + " [" + e.v->isa + ", " + std::to_string(threads) + " threads]";
        // The 3-thread run sizes its scratch without the parsed weights (upper bound path).
        OpRun r = run_op(code, ins, ints, floats, e.v, threads, threads == 1);
        if (!r.infer.ok()) { t.fail(who + ": infer failed: " + r.infer.message()); continue; }
        if (!r.eval.ok()) { t.fail(who + ": eval failed: " + r.eval.message()); continue; }
        if (!r.scratch_ok) { t.fail(who + ": wrote outside its scratch"); continue; }
        const std::string diff = check(r);
        if (diff.empty()) t.pass();
        else t.fail(who + ": " + diff);
      }
    }
  }
  void expect_error(const std::string& what, int code, const std::vector<Ten*>& ins, const std::vector<int64_t>& ints,
                    const std::vector<float>& floats, const std::string& needle) {
    OpRun r = run_op(code, ins, ints, floats);
    const std::string msg = r.infer.ok() ? r.eval.message() : r.infer.message();
    if (msg.find(needle) != std::string::npos) t.pass();
    else t.fail(what + ": expected an error containing '" + needle + "', got '" + msg + "'");
  }
};

// ---- qlinear ------------------------------------------------------------------------------

void qlinear_case(Runner& R, int M, int N, int K, int bits, Sparsity sp, int group, int mode, int zp, bool bias,
                  uint64_t seed) {
  const LogicalWeights lw = weights(N, K, bits, sp, group, seed, seed % 3 == 0);
  Ten w = packed_ten(lw);
  Ten x = rand_f32({1, M, K}, seed + 1, -2.0f, 2.0f);
  if (M > 1) x.f()[K] = 0.0f, std::fill(x.f() + K, x.f() + 2 * K, 0.0f);  // an all-zero row (dynamic: scale 1)
  Ten b = rand_f32({N}, seed + 2);
  const float xs = 0.0173f;
  std::vector<float> want(static_cast<size_t>(M) * N);
  for (int m = 0; m < M; ++m) {
    const float* xr = x.f() + static_cast<size_t>(m) * K;
    float s = xs;
    int32_t z = zp;
    if (mode == 1) {
      float amax = 0.0f;
      for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
      s = dyn_scale(amax), z = 0;
    }
    for (int n = 0; n < N; ++n) {
      std::vector<int64_t> acc(lw.ngroups(), 0);
      for (int k = 0; k < K; ++k) acc[group_of(lw, k)] += (int64_t{q8(xr[k], s, z)} - z) * lw.weight(n, k);
      want[static_cast<size_t>(m) * N + n] = epilogue(lw, n, acc, s, bias ? b.f() : nullptr);
    }
  }
  const std::string what = "qlinear M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                           " bits=" + std::to_string(bits) + " group=" + std::to_string(group) +
                           " mode=" + std::to_string(mode) + " zp=" + std::to_string(zp);
  R.each(what, 1, {&x, &w, bias ? &b : nullptr}, {mode, mode ? 0 : zp}, {xs}, [&](OpRun& r) {
    if (r.outs[0].info.rank != 3 || r.outs[0].info.dims[2] != N) return std::string("wrong output shape");
    return compare(r.outs[0].f(), want.data(), M * N);
  });
}

// ---- qconv1d / qconv_transpose1d ----------------------------------------------------------

struct ConvCase {
  bool transposed;
  int Cin, T, Cout, k, stride, p0, p1, dil, groups, bits, group_size, mode, zp;
  Sparsity sp;
};

void qconv_case(Runner& R, const ConvCase& c, uint64_t seed) {
  const int Cg = c.Cin / c.groups, Og = c.Cout / c.groups, K = Cg * c.k;
  const LogicalWeights lw = weights(c.Cout, K, c.bits, c.sp, c.group_size, seed, seed % 2 == 1);
  Ten w = packed_ten(lw);
  Ten x = rand_f32({1, c.Cin, c.T}, seed + 1, -3.0f, 3.0f);
  Ten b = rand_f32({c.Cout}, seed + 2);
  const float xs = 0.031f;
  const int Tout = c.transposed ? (c.T - 1) * c.stride - 2 * c.p0 + c.dil * (c.k - 1) + c.p1 + 1
                                : (c.T + c.p0 + c.p1 - c.dil * (c.k - 1) - 1) / c.stride + 1;
  // The inputs that reach each output position: (channel-local column, input channel, time).
  struct Hit { int col, ci, t; };
  std::vector<std::vector<Hit>> hits(static_cast<size_t>(c.groups) * Tout);
  for (int grp = 0; grp < c.groups; ++grp)
    for (int cl = 0; cl < Cg; ++cl)
      for (int tap = 0; tap < c.k; ++tap) {
        if (!c.transposed) {
          for (int o = 0; o < Tout; ++o) {
            const int s = o * c.stride - c.p0 + tap * c.dil;
            if (s >= 0 && s < c.T) hits[grp * Tout + o].push_back({cl * c.k + tap, grp * Cg + cl, s});
          }
        } else {  // scatter form: input t lands on t*stride - padding + tap*dil
          for (int s = 0; s < c.T; ++s) {
            const int o = s * c.stride - c.p0 + tap * c.dil;
            if (o >= 0 && o < Tout) hits[grp * Tout + o].push_back({cl * c.k + tap, grp * Cg + cl, s});
          }
        }
      }
  std::vector<float> scale(static_cast<size_t>(c.groups) * Tout, xs);  // per (group, position)
  if (c.mode == 1)
    for (int grp = 0; grp < c.groups; ++grp)
      for (int o = 0; o < Tout; ++o) {
        float amax = 0.0f;
        for (const Hit& h : hits[grp * Tout + o]) amax = std::max(amax, std::fabs(x.f()[h.ci * c.T + h.t]));
        scale[grp * Tout + o] = dyn_scale(amax);
      }
  const int32_t zp = c.mode ? 0 : c.zp;
  std::vector<float> want(static_cast<size_t>(c.Cout) * Tout);
  for (int co = 0; co < c.Cout; ++co)
    for (int o = 0; o < Tout; ++o) {
      std::vector<int64_t> acc(lw.ngroups(), 0);
      const float s = scale[(co / Og) * Tout + o];
      for (const Hit& h : hits[(co / Og) * Tout + o])
        acc[group_of(lw, h.col)] += (int64_t{q8(x.f()[h.ci * c.T + h.t], s, zp)} - zp) * lw.weight(co, h.col);
      want[static_cast<size_t>(co) * Tout + o] = epilogue(lw, co, acc, s, b.f());
    }
  const std::string what = std::string(c.transposed ? "qconv_transpose1d" : "qconv1d") + " Cin=" +
                           std::to_string(c.Cin) + " T=" + std::to_string(c.T) + " Cout=" + std::to_string(c.Cout) +
                           " k=" + std::to_string(c.k) + " stride=" + std::to_string(c.stride) + " pads=" +
                           std::to_string(c.p0) + "," + std::to_string(c.p1) + " dil=" + std::to_string(c.dil) +
                           " groups=" + std::to_string(c.groups) + " bits=" + std::to_string(c.bits) +
                           " mode=" + std::to_string(c.mode);
  R.each(what, c.transposed ? 5 : 3, {&x, &w, &b},
         {c.stride, c.p0, c.p1, c.dil, c.groups, c.k, c.mode, zp}, {xs}, [&](OpRun& r) {
           if (r.outs[0].info.dims[1] != c.Cout || r.outs[0].info.dims[2] != Tout)
             return "output shape " + std::to_string(r.outs[0].info.dims[2]) + ", want Tout " + std::to_string(Tout);
           return compare(r.outs[0].f(), want.data(), static_cast<int64_t>(want.size()));
         });
}

// ---- qlstm --------------------------------------------------------------------------------

float sig(float v) { return 1.0f / (1.0f + std::exp(-v)); }

void qlstm_case(Runner& R, int T, int I, int H, int bits, int mode, bool biases, uint64_t seed) {
  const LogicalWeights wih = weights(4 * H, I, bits, Sparsity::kDense, 0, seed);
  const LogicalWeights whh = weights(4 * H, H, bits, Sparsity::kBitmap, 0, seed + 1);
  Ten pih = packed_ten(wih), phh = packed_ten(whh);
  // Small scales keep the gates in the sigmoid's sensitive range.
  Ten x = rand_f32({1, T, I}, seed + 2), h0 = rand_f32({1, H}, seed + 3), c0 = rand_f32({1, H}, seed + 4);
  Ten bih = rand_f32({4 * H}, seed + 5), bhh = rand_f32({4 * H}, seed + 6);
  const float xs = 0.011f, hs = 1.0f / 127.0f;
  const int32_t xzp = mode ? 0 : 5, hzp = -2;
  std::vector<float> h(h0.f(), h0.f() + H), cst(c0.f(), c0.f() + H), y(static_cast<size_t>(T) * H), g(4 * H);
  for (int t = 0; t < T; ++t) {
    const float* xt = x.f() + static_cast<size_t>(t) * I;
    float s = xs;
    if (mode == 1) {
      float amax = 0.0f;
      for (int i = 0; i < I; ++i) amax = std::max(amax, std::fabs(xt[i]));
      s = dyn_scale(amax);
    }
    for (int j = 0; j < 4 * H; ++j) {
      std::vector<int64_t> ax(1, 0), ah(1, 0);
      for (int i = 0; i < I; ++i) ax[0] += (int64_t{q8(xt[i], s, xzp)} - xzp) * wih.weight(j, i);
      for (int i = 0; i < H; ++i) ah[0] += (int64_t{q8(h[i], hs, hzp)} - hzp) * whh.weight(j, i);
      float v = epilogue(wih, j, ax, s, nullptr) + epilogue(whh, j, ah, hs, nullptr);
      if (biases) v += bih.f()[j], v += bhh.f()[j];
      g[j] = v;
    }
    for (int j = 0; j < H; ++j) {
      cst[j] = sig(g[H + j]) * cst[j] + sig(g[j]) * std::tanh(g[2 * H + j]);
      h[j] = sig(g[3 * H + j]) * std::tanh(cst[j]);
      y[static_cast<size_t>(t) * H + j] = h[j];
    }
  }
  const std::string what = "qlstm T=" + std::to_string(T) + " I=" + std::to_string(I) + " H=" + std::to_string(H) +
                           " bits=" + std::to_string(bits) + " mode=" + std::to_string(mode);
  R.each(what, 7, {&x, &h0, &c0, &pih, &phh, biases ? &bih : nullptr, biases ? &bhh : nullptr}, {mode, xzp, hzp},
         {xs, hs}, [&](OpRun& r) {
           std::string d = compare(r.outs[0].f(), y.data(), T * H);
           if (d.empty()) d = compare(r.outs[1].f(), h.data(), H);
           if (d.empty()) d = compare(r.outs[2].f(), cst.data(), H);
           return d;
         });
}

void qop_errors(Runner& R) {
  const LogicalWeights lw = weights(8, 12, 4, Sparsity::kDense, 0, 7);
  Ten w = packed_ten(lw);
  Ten x = rand_f32({1, 3, 12}, 1), xbad = rand_f32({1, 3, 10}, 1), b = rand_f32({8}, 2), b9 = rand_f32({9}, 2);
  Ten xb2 = rand_f32({2, 4, 9}, 1);
  R.expect_error("qlinear wrong K", 1, {&xbad, &w, nullptr}, {0, 0}, {0.1f}, "expects K = 12");
  R.expect_error("qlinear bias size", 1, {&x, &w, &b9}, {0, 0}, {0.1f}, "bias has 9 elements, expected 8");
  R.expect_error("qlinear act_mode", 1, {&x, &w, &b}, {2, 0}, {0.1f}, "act_mode is 2");
  R.expect_error("qlinear x_zp", 1, {&x, &w, &b}, {0, 200}, {0.1f}, "x_zp is 200");
  R.expect_error("qlinear x_scale", 1, {&x, &w, &b}, {0, 0}, {0.0f}, "x_scale must be finite and > 0");
  R.expect_error("qlinear nan scale", 1, {&x, &w, &b}, {0, 0}, {NAN}, "x_scale must be finite");
  R.expect_error("qlinear attrs", 1, {&x, &w, &b}, {0}, {0.1f}, "1 int attributes, expected 2");
  R.expect_error("qlinear float W", 1, {&x, &x, &b}, {0, 0}, {0.1f}, "W has dtype f32, expected packed");
  R.expect_error("qlinear W absent", 1, {&x, nullptr, &b}, {0, 0}, {0.1f}, "input 1 is absent");
  // Conv: W (8, 12) is Cin/g*k = 12.
  Ten xc = rand_f32({1, 4, 9}, 3), xc5 = rand_f32({1, 5, 9}, 3), xshort = rand_f32({1, 4, 2}, 3);
  R.expect_error("qconv stride 0", 3, {&xc, &w, &b}, {0, 0, 0, 1, 1, 3, 0, 0}, {0.1f}, "stride is 0");
  R.expect_error("qconv dilation 0", 3, {&xc, &w, &b}, {1, 0, 0, 0, 1, 3, 0, 0}, {0.1f}, "dilation is 0");
  R.expect_error("qconv groups", 3, {&xc, &w, &b}, {1, 0, 0, 1, 3, 3, 0, 0}, {0.1f}, "groups 3 must divide");
  R.expect_error("qconv K", 3, {&xc5, &w, &b}, {1, 0, 0, 1, 1, 3, 0, 0}, {0.1f}, "needs K = Cin/groups*k = 15");
  R.expect_error("qconv short", 3, {&xshort, &w, &b}, {1, 0, 0, 1, 1, 3, 0, 0}, {0.1f}, "gives output length");
  R.expect_error("qconv negative pad", 3, {&xc, &w, &b}, {1, -1, 0, 1, 1, 3, 0, 0}, {0.1f}, "pad_left is -1");
  R.expect_error("qconv batch", 3, {&xb2, &w, &b}, {1, 0, 0, 1, 1, 3, 0, 0}, {0.1f}, "must have batch 1");
  R.expect_error("qconv_t output_padding", 5, {&xc, &w, &b}, {2, 0, 2, 1, 1, 3, 0, 0}, {0.1f},
                 "output_padding 2 must be smaller");
  R.expect_error("qconv dynamic zp", 3, {&xc, &w, &b}, {1, 0, 0, 1, 1, 3, 1, 4}, {0.1f}, "need x_zp 0");
  // LSTM: W_ih (8, 12) means H = 2 and I = 12.
  const LogicalWeights lh = weights(8, 2, 4, Sparsity::kDense, 0, 9), lbad = weights(8, 3, 4, Sparsity::kDense, 0, 9);
  Ten whh = packed_ten(lh), whh_bad = packed_ten(lbad);
  Ten xl = rand_f32({1, 3, 12}, 4), h2 = rand_f32({1, 2}, 5), h3 = rand_f32({1, 3}, 5);
  R.expect_error("qlstm W_hh", 7, {&xl, &h2, &h2, &w, &whh_bad, nullptr, nullptr}, {0, 0, 0}, {0.1f, 0.1f},
                 "W_hh (8, 3) must be (4H, H) = (8, 2)");
  R.expect_error("qlstm 4H", 7, {&xl, &h3, &h3, &w, &whh, nullptr, nullptr}, {0, 0, 0}, {0.1f, 0.1f},
                 "W_ih (8, 12) must be (4H, I) = (12, 12)");
  R.expect_error("qlstm h_scale", 7, {&xl, &h2, &h2, &w, &whh, nullptr, nullptr}, {0, 0, 0}, {0.1f, -1.0f},
                 "h_scale must be finite and > 0");
  R.expect_error("qlstm c0", 7, {&xl, &h2, &h3, &w, &whh, nullptr, nullptr}, {0, 0, 0}, {0.1f, 0.1f},
                 "must both be (1, H)");
}

// The activation rounding against nearbyint (round half to even) and saturation, on every
// quarter step of [-600, 600] (all ties), huge values, infinities and NaN (-> -128).
void quantize_rule(Tally& t) {
  std::vector<float> xs;
  for (int i = -2400; i <= 2400; ++i) xs.push_back(i * 0.25f);
  for (float v : {1e30f, -1e30f, 3e9f, -3e9f, INFINITY, -INFINITY, 8388607.5f, 0.49999997f, -0.5f, 2.5f})
    xs.push_back(v);
  for (int32_t zp : {-128, -3, 0, 5, 127})
    for (float inv : {1.0f, 0.5f, 1.0f / 0.0173f}) {
      for (float x : xs) {
        const double r = std::nearbyint(static_cast<double>(x * inv)) + zp;
        const int8_t want = static_cast<int8_t>(r < -128 ? -128 : r > 127 ? 127 : r);
        const int8_t got = runtime::ops::quantize_one(x, inv, static_cast<float>(zp));
        if (got != want)
          return t.fail("quantize_one(" + std::to_string(x) + ", inv " + std::to_string(inv) + ", zp " +
                        std::to_string(zp) + ") = " + std::to_string(got) + ", want " + std::to_string(want));
      }
      if (runtime::ops::quantize_one(NAN, inv, static_cast<float>(zp)) != -128)
        return t.fail("quantize_one(NaN) must be -128");
    }
  // quantize_static is the vectorized loop the q-ops run: the same codes as quantize_one on
  // every value above (odd length and a NaN, so the vector body and the scalar tail both run)
  std::vector<float> ys = xs;
  ys.push_back(NAN);
  std::vector<int8_t> q(ys.size());
  for (int32_t zp : {-128, -3, 0, 5, 127})
    for (float scale : {1.0f, 2.0f, 0.0173f}) {
      runtime::ops::quantize_static(ys.data(), static_cast<int64_t>(ys.size()), scale, zp, q.data());
      for (size_t i = 0; i < ys.size(); ++i)
        if (q[i] != runtime::ops::quantize_one(ys[i], 1.0f / scale, static_cast<float>(zp)))
          return t.fail("quantize_static differs from quantize_one at x = " + std::to_string(ys[i]));
    }
  t.pass();
}

}  // namespace

void check_qops(Tally& t, const std::vector<VariantEntry>& variants) {
  quantize_rule(t);
  Runner R{t, variants};
  uint64_t seed = 100;
  qlinear_case(R, 1, 7, 65, 8, Sparsity::kDense, 0, 0, -3, true, seed++);
  qlinear_case(R, 5, 33, 200, 4, Sparsity::kBitmap, 64, 0, 17, false, seed++);
  qlinear_case(R, 9, 40, 128, 3, Sparsity::kNM, 64, 1, 0, true, seed++);
  qlinear_case(R, 3, 17, 1, 2, Sparsity::kDense, 0, 1, 0, true, seed++);
  qlinear_case(R, 2, 64, 96, 5, Sparsity::kDense, 0, 0, -128, true, seed++);
  const ConvCase convs[] = {
      // transposed, Cin, T, Cout, k, stride, p0, p1, dil, groups, bits, group_size, mode, zp, sparsity
      {false, 6, 11, 4, 3, 1, 1, 1, 1, 1, 8, 0, 0, -5, Sparsity::kDense},
      {false, 6, 16, 10, 3, 2, 3, 0, 2, 1, 4, 0, 0, 9, Sparsity::kBitmap},
      {false, 5, 13, 5, 5, 1, 4, 0, 1, 5, 6, 0, 0, 0, Sparsity::kDense},     // depthwise, causal
      {false, 6, 14, 9, 2, 3, 1, 2, 1, 3, 3, 0, 0, 3, Sparsity::kDense},     // grouped, strided
      {false, 40, 9, 24, 3, 1, 1, 1, 1, 1, 8, 64, 1, 0, Sparsity::kNM},      // dynamic, 2 weight groups
      {false, 32, 7, 32, 7, 1, 3, 3, 1, 32, 8, 0, 1, 0, Sparsity::kDense},   // dynamic depthwise
      {false, 12, 10, 6, 3, 2, 1, 1, 1, 3, 4, 0, 1, 0, Sparsity::kDense},    // dynamic grouped
      {false, 8, 12, 8, 9, 2, 4, 4, 2, 8, 4, 0, 0, -3, Sparsity::kBitmap},   // sparse depthwise
      {false, 6, 9, 6, 8, 1, 7, 0, 1, 6, 3, 0, 0, 2, Sparsity::kNM},         // 2:4 depthwise
      {false, 4, 10, 4, 33, 1, 16, 16, 1, 2, 8, 0, 0, 1, Sparsity::kDense},  // Cg*k = 66 > 64
      {false, 4, 6, 2, 16, 1, 8, 7, 1, 2, 2, 0, 0, 0, Sparsity::kBitmap},    // Cg*k = 64 exactly
      {false, 12, 130, 10, 1, 1, 0, 0, 1, 1, 8, 0, 0, -4, Sparsity::kDense},  // pointwise, T > a tile
      {false, 8, 70, 6, 1, 2, 1, 2, 1, 2, 4, 0, 0, 7, Sparsity::kBitmap},    // pointwise grouped strided padded
      {true, 4, 7, 6, 4, 2, 1, 1, 1, 1, 8, 0, 0, -7, Sparsity::kDense},
      {true, 4, 5, 6, 3, 3, 0, 2, 2, 2, 4, 0, 0, 11, Sparsity::kBitmap},
      {true, 3, 6, 3, 4, 2, 1, 0, 1, 3, 8, 0, 0, 0, Sparsity::kDense},       // depthwise upsampler
      {true, 8, 5, 4, 5, 4, 2, 3, 1, 1, 5, 0, 1, 0, Sparsity::kDense},       // dynamic
      {true, 6, 4, 9, 3, 2, 1, 1, 2, 3, 8, 0, 1, 0, Sparsity::kDense},       // dynamic grouped
  };
  for (const ConvCase& c : convs) qconv_case(R, c, seed++);
  qlstm_case(R, 4, 10, 6, 8, 0, true, seed++);
  qlstm_case(R, 3, 70, 17, 4, 1, false, seed++);
  qlstm_case(R, 1, 5, 3, 6, 0, true, seed++);
  qop_errors(R);
}

}  // namespace edgekit::test
