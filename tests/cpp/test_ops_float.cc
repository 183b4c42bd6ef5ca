// Op tests, part 2: the float32 ops of §2.6 against straightforward loops (written in a
// different loop order than the ops where the op has a choice, e.g. the transposed conv is
// checked in gather form against the op's scatter form), plus their infer errors.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "test_ops.h"

namespace edgekit::test {
namespace {

constexpr float kTol = 1e-5f;

struct FRunner {
  Tally& t;
  // Runs once; `check` returns "" on success.
  template <class Check>
  void run(const std::string& what, int code, const std::vector<Ten*>& ins, const std::vector<int64_t>& ints,
           const std::vector<float>& floats, Check check) {
    OpRun r = run_op(code, ins, ints, floats);
    if (!r.infer.ok()) return t.fail(what + ": infer failed: " + r.infer.message());
    if (!r.eval.ok()) return t.fail(what + ": eval failed: " + r.eval.message());
    if (!r.scratch_ok) return t.fail(what + ": wrote outside its scratch");
    const std::string d = check(r);
    if (d.empty()) t.pass();
    else t.fail(what + ": " + d);
  }
  void expect_error(const std::string& what, int code, const std::vector<Ten*>& ins, const std::vector<int64_t>& ints,
                    const std::vector<float>& floats, const std::string& needle) {
    OpRun r = run_op(code, ins, ints, floats);
    const std::string msg = r.infer.ok() ? r.eval.message() : r.infer.message();
    if (!msg.empty() && msg.find(needle) != std::string::npos) t.pass();
    else t.fail(what + ": expected an error containing '" + needle + "', got '" + msg + "'");
  }
};

std::string shape_is(const Ten& o, std::initializer_list<int64_t> dims) {
  bool ok = o.info.rank == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) ok = ok && o.info.dims[i++] == d;
  return ok ? "" : "wrong output shape";
}

float sigm(float v) { return 1.0f / (1.0f + std::exp(-v)); }

void linear_and_matmul(FRunner& F) {
  Ten x = rand_f32({2, 3, 37}, 1), w = rand_f32({5, 37}, 2), b = rand_f32({5}, 3);
  std::vector<float> want(2 * 3 * 5);
  for (int m = 0; m < 6; ++m)
    for (int n = 0; n < 5; ++n) {
      double s = b.f()[n];
      for (int k = 0; k < 37; ++k) s += double(x.f()[m * 37 + k]) * w.f()[n * 37 + k];
      want[m * 5 + n] = static_cast<float>(s);
    }
  F.run("linear", 2, {&x, &w, &b}, {}, {}, [&](OpRun& r) {
    std::string d = shape_is(r.outs[0], {2, 3, 5});
    return d.empty() ? compare(r.outs[0].f(), want.data(), 30, kTol, kTol) : d;
  });
  // matmul with broadcast leading dims: (2, 1, 3, 4) x (3, 4, 5) -> (2, 3, 3, 5).
  Ten a = rand_f32({2, 1, 3, 4}, 4), bm = rand_f32({3, 4, 5}, 5);
  std::vector<float> mm(2 * 3 * 3 * 5);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int m = 0; m < 3; ++m)
        for (int n = 0; n < 5; ++n) {
          float s = 0.0f;
          for (int k = 0; k < 4; ++k) s += a.f()[(i * 3 + m) * 4 + k] * bm.f()[(j * 4 + k) * 5 + n];
          mm[((i * 3 + j) * 3 + m) * 5 + n] = s;
        }
  F.run("matmul broadcast", 12, {&a, &bm}, {}, {}, [&](OpRun& r) {
    std::string d = shape_is(r.outs[0], {2, 3, 3, 5});
    return d.empty() ? compare(r.outs[0].f(), mm.data(), 90, kTol, kTol) : d;
  });
  F.expect_error("linear K", 2, {&x, &b, nullptr}, {}, {}, "rank 1");
  F.expect_error("matmul K", 12, {&a, &a}, {}, {}, "disagree on K");
}

// conv1d against its definition, for one geometry.
void conv_case(FRunner& F, int Cin, int T, int Cout, int G, int k, int st, int dil, int pl, int pr, uint64_t seed) {
  Ten x = rand_f32({1, Cin, T}, seed), w = rand_f32({Cout, Cin / G, k}, seed + 1), b = rand_f32({Cout}, seed + 2);
  const int Tout = (T + pl + pr - dil * (k - 1) - 1) / st + 1;
  std::vector<float> want(Cout * Tout);
  for (int co = 0; co < Cout; ++co)
    for (int o = 0; o < Tout; ++o) {
      float s = b.f()[co];
      for (int ci = 0; ci < Cin / G; ++ci)
        for (int tap = 0; tap < k; ++tap) {
          const int t = o * st - pl + tap * dil;
          const int cin = (co / (Cout / G)) * (Cin / G) + ci;
          if (t >= 0 && t < T) s += w.f()[(co * (Cin / G) + ci) * k + tap] * x.f()[cin * T + t];
        }
      want[co * Tout + o] = s;
    }
  const std::string what = "conv1d Cin=" + std::to_string(Cin) + " T=" + std::to_string(T) + " groups=" +
                           std::to_string(G) + " k=" + std::to_string(k) + " stride=" + std::to_string(st) +
                           " dil=" + std::to_string(dil) + " pads=" + std::to_string(pl) + "," + std::to_string(pr);
  F.run(what, 4, {&x, &w, &b}, {st, pl, pr, dil, G}, {}, [&](OpRun& r) {
    std::string d = shape_is(r.outs[0], {1, Cout, Tout});
    return d.empty() ? compare(r.outs[0].f(), want.data(), Cout * Tout, kTol, kTol) : d;
  });
}

void convs(FRunner& F) {
  conv_case(F, 6, 15, 4, 2, 3, 2, 2, 2, 1, 10);
  conv_case(F, 3, 4, 2, 1, 3, 1, 3, 5, 5, 16);   // taps that only ever read padding
  conv_case(F, 4, 9, 4, 4, 5, 3, 1, 4, 0, 17);   // causal depthwise, strided
  const int Cin = 6, T = 15, Cout = 4, G = 2, k = 3;
  Ten x = rand_f32({1, Cin, T}, 10), w = rand_f32({Cout, Cin / G, k}, 11), b = rand_f32({Cout}, 12);
  // conv_transpose1d in gather form: y[co, o] = sum over (ci, tap) with o = t*stride - pad + tap*dil.
  const int tCin = 4, tT = 6, tOg = 3, tG = 2, tk = 4, ts = 3, tp = 1, top = 1, td = 1;
  Ten tx = rand_f32({1, tCin, tT}, 13), tw = rand_f32({tCin, tOg, tk}, 14), tb = rand_f32({tOg * tG}, 15);
  const int tTout = (tT - 1) * ts - 2 * tp + td * (tk - 1) + top + 1;
  std::vector<float> twant(tOg * tG * tTout);
  for (int co = 0; co < tOg * tG; ++co)
    for (int o = 0; o < tTout; ++o) {
      float s = tb.f()[co];
      const int grp = co / tOg;
      for (int cl = 0; cl < tCin / tG; ++cl)
        for (int tap = 0; tap < tk; ++tap) {
          const int num = o + tp - tap * td;
          if (num < 0 || num % ts || num / ts >= tT) continue;
          const int ci = grp * (tCin / tG) + cl;
          s += tw.f()[(ci * tOg + co % tOg) * tk + tap] * tx.f()[ci * tT + num / ts];
        }
      twant[co * tTout + o] = s;
    }
  F.run("conv_transpose1d grouped", 6, {&tx, &tw, &tb}, {ts, tp, top, td, tG}, {}, [&](OpRun& r) {
    std::string d = shape_is(r.outs[0], {1, tOg * tG, tTout});
    return d.empty() ? compare(r.outs[0].f(), twant.data(), tOg * tG * tTout, kTol, kTol) : d;
  });
  F.expect_error("conv1d groups", 4, {&x, &w, &b}, {1, 0, 0, 1, 4}, {}, "groups 4 must divide Cin 6");
  F.expect_error("conv1d W", 4, {&x, &tw, &b}, {1, 0, 0, 1, 1}, {}, "must be (Cout, Cin/groups, k)");
  F.expect_error("conv1d attrs", 4, {&x, &w, &b}, {1, 0, 0, 1}, {}, "4 int attributes, expected 5");
}

void lstm_and_norms(FRunner& F) {
  const int T = 3, I = 5, H = 4;
  Ten x = rand_f32({1, T, I}, 20), h0 = rand_f32({1, H}, 21), c0 = rand_f32({1, H}, 22);
  Ten wih = rand_f32({4 * H, I}, 23), whh = rand_f32({4 * H, H}, 24), bih = rand_f32({4 * H}, 25);
  std::vector<float> h(h0.f(), h0.f() + H), c(c0.f(), c0.f() + H), y(T * H), g(4 * H);
  for (int t = 0; t < T; ++t) {
    for (int j = 0; j < 4 * H; ++j) {
      float a = 0.0f, bb = 0.0f;
      for (int i = 0; i < I; ++i) a += wih.f()[j * I + i] * x.f()[t * I + i];
      for (int i = 0; i < H; ++i) bb += whh.f()[j * H + i] * h[i];
      g[j] = a + bb + bih.f()[j];
    }
    for (int j = 0; j < H; ++j) {
      c[j] = sigm(g[H + j]) * c[j] + sigm(g[j]) * std::tanh(g[2 * H + j]);
      h[j] = sigm(g[3 * H + j]) * std::tanh(c[j]);
      y[t * H + j] = h[j];
    }
  }
  F.run("lstm", 8, {&x, &h0, &c0, &wih, &whh, &bih, nullptr}, {}, {}, [&](OpRun& r) {
    std::string d = compare(r.outs[0].f(), y.data(), T * H, kTol, kTol);
    if (d.empty()) d = compare(r.outs[1].f(), h.data(), H, kTol, kTol);
    return d.empty() ? compare(r.outs[2].f(), c.data(), H, kTol, kTol) : d;
  });
  F.expect_error("lstm W_hh", 8, {&x, &h0, &c0, &wih, &wih, nullptr, nullptr}, {}, {}, "W_hh (16, 5) must be");

  Ten ln = rand_f32({3, 7}, 26, -4.0f, 4.0f), gamma = rand_f32({7}, 27), beta = rand_f32({7}, 28);
  std::vector<float> lw(21);
  for (int r = 0; r < 3; ++r) {
    double mean = 0, var = 0;
    for (int i = 0; i < 7; ++i) mean += ln.f()[r * 7 + i] / 7.0;
    for (int i = 0; i < 7; ++i) var += (ln.f()[r * 7 + i] - mean) * (ln.f()[r * 7 + i] - mean) / 7.0;
    for (int i = 0; i < 7; ++i)
      lw[r * 7 + i] = static_cast<float>((ln.f()[r * 7 + i] - mean) / std::sqrt(var + 1e-5) * gamma.f()[i] + beta.f()[i]);
  }
  F.run("layer_norm", 10, {&ln, &gamma, &beta}, {}, {1e-5f}, [&](OpRun& r) {
    return compare(r.outs[0].f(), lw.data(), 21, kTol, kTol);
  });
  F.expect_error("layer_norm gamma", 10, {&ln, &x, &beta}, {}, {1e-5f}, "gamma has rank 3");
  F.expect_error("layer_norm eps", 10, {&ln, nullptr, nullptr}, {}, {0.0f}, "eps must be finite and > 0");

  // softmax over the middle axis of (2, 3, 4), with a large value to test stability.
  Ten s = rand_f32({2, 3, 4}, 29, -3.0f, 3.0f);
  s.f()[5] = 1000.0f;
  std::vector<float> sw(24);
  for (int o = 0; o < 2; ++o)
    for (int in = 0; in < 4; ++in) {
      float mx = -INFINITY, sum = 0.0f;
      for (int i = 0; i < 3; ++i) mx = std::max(mx, s.f()[(o * 3 + i) * 4 + in]);
      for (int i = 0; i < 3; ++i) sum += std::exp(s.f()[(o * 3 + i) * 4 + in] - mx);
      for (int i = 0; i < 3; ++i) sw[(o * 3 + i) * 4 + in] = std::exp(s.f()[(o * 3 + i) * 4 + in] - mx) / sum;
    }
  F.run("softmax axis 1", 11, {&s}, {1}, {}, [&](OpRun& r) { return compare(r.outs[0].f(), sw.data(), 24, kTol, kTol); });
  F.expect_error("softmax axis", 11, {&s}, {3}, {}, "axis 3 out of range [0, 3)");
  F.expect_error("softmax negative axis", 11, {&s}, {-1}, {}, "axis -1 out of range");
  std::vector<float> rm(8);
  for (int o = 0; o < 2; ++o)
    for (int in = 0; in < 4; ++in) {
      float acc = 0.0f;
      for (int i = 0; i < 3; ++i) acc += s.f()[(o * 3 + i) * 4 + in];
      rm[o * 4 + in] = acc / 3.0f;
    }
  F.run("reduce_mean keepdim", 59, {&s}, {1, 1}, {}, [&](OpRun& r) {
    std::string d = shape_is(r.outs[0], {2, 1, 4});
    return d.empty() ? compare(r.outs[0].f(), rm.data(), 8, kTol, kTol) : d;
  });
  F.run("reduce_mean drop", 59, {&s}, {1, 0}, {}, [&](OpRun& r) { return shape_is(r.outs[0], {2, 4}); });
  F.expect_error("reduce_mean keepdim", 59, {&s}, {1, 2}, {}, "keepdim is 2");
}

void elementwise(FRunner& F) {
  Ten a = rand_f32({2, 1, 3}, 30), b = rand_f32({4, 1}, 31, 0.5f, 2.0f);
  const char* names[] = {"add", "sub", "mul", "div"};
  for (int op = 0; op < 4; ++op) {
    std::vector<float> want(24);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 4; ++j)
        for (int k = 0; k < 3; ++k) {
          const float x = a.f()[i * 3 + k], y = b.f()[j];
          want[(i * 4 + j) * 3 + k] = op == 0 ? x + y : op == 1 ? x - y : op == 2 ? x * y : x / y;
        }
    F.run(std::string(names[op]) + " broadcast", 20 + op, {&a, &b}, {}, {}, [&](OpRun& r) {
      std::string d = shape_is(r.outs[0], {2, 4, 3});
      return d.empty() ? compare(r.outs[0].f(), want.data(), 24) : d;
    });
  }
  Ten same = rand_f32({2, 1, 3}, 32);
  F.run("add same shape", 20, {&a, &same}, {}, {}, [&](OpRun& r) {
    std::vector<float> w(6);
    for (int i = 0; i < 6; ++i) w[i] = a.f()[i] + same.f()[i];
    return compare(r.outs[0].f(), w.data(), 6);
  });
  Ten bad = rand_f32({3, 2}, 33);
  F.expect_error("add shapes", 20, {&a, &bad}, {}, {}, "do not broadcast");
  // where(cond (3,1) u8, a (1,2), b scalar-shaped (1,)) and equal.
  Ten cond = make_ten(DType::U8, {3, 1}), wa = rand_f32({1, 2}, 34), wb = make_ten(DType::F32, {1});
  cond.as<uint8_t>()[0] = 1, cond.as<uint8_t>()[1] = 0, cond.as<uint8_t>()[2] = 7;
  wb.f()[0] = -9.0f;
  F.run("where", 24, {&cond, &wa, &wb}, {}, {}, [&](OpRun& r) {
    const float w[6] = {wa.f()[0], wa.f()[1], -9.0f, -9.0f, wa.f()[0], wa.f()[1]};
    std::string d = shape_is(r.outs[0], {3, 2});
    return d.empty() ? compare(r.outs[0].f(), w, 6) : d;
  });
  F.expect_error("where cond dtype", 24, {&wa, &wa, &wb}, {}, {}, "cond has dtype f32, expected u8");
  Ten ea = make_ten(DType::I64, {4}), eb = make_ten(DType::I64, {1});
  for (int i = 0; i < 4; ++i) ea.as<int64_t>()[i] = i % 2;
  eb.as<int64_t>()[0] = 1;
  F.run("equal i64", 25, {&ea, &eb}, {}, {}, [&](OpRun& r) {
    const uint8_t* o = r.outs[0].as<uint8_t>();
    return r.outs[0].info.dtype == DType::U8 && o[0] == 0 && o[1] == 1 && o[2] == 0 && o[3] == 1 ? "" : "wrong values";
  });
  F.expect_error("equal dtypes", 25, {&ea, &wa}, {}, {}, "need one numeric dtype");

  // Integer arithmetic: wraps modulo 2^bits, division truncates toward 0, zero divisor errors.
  Ten ia = make_ten(DType::I32, {4}), ib = make_ten(DType::I32, {4});
  const int32_t av[4] = {2147483647, -7, -2147483647 - 1, 9}, bv[4] = {1, 2, -1, -4};
  std::memcpy(ia.data(), av, sizeof av), std::memcpy(ib.data(), bv, sizeof bv);
  const int32_t want_add[4] = {-2147483647 - 1, -5, 2147483647, 5}, want_div[4] = {2147483647, -3, -2147483647 - 1, -2};
  F.run("add i32 wraps", 20, {&ia, &ib}, {}, {}, [&](OpRun& r) {
    return r.outs[0].info.dtype == DType::I32 && std::memcmp(r.outs[0].data(), want_add, 16) == 0 ? "" : "wrong values";
  });
  F.run("div i32 truncates", 23, {&ia, &ib}, {}, {}, [&](OpRun& r) {
    return std::memcmp(r.outs[0].data(), want_div, 16) == 0 ? "" : "wrong values";
  });
  ib.as<int32_t>()[2] = 0;
  F.expect_error("div i32 by zero", 23, {&ia, &ib}, {}, {}, "integer division by zero");
  F.run("neg/abs i32", 41, {&ia}, {}, {}, [&](OpRun& r) {
    const int32_t w[4] = {2147483647, 7, -2147483647 - 1, 9};
    return std::memcmp(r.outs[0].data(), w, 16) == 0 ? "" : "wrong values";
  });
  Ten u8a = make_ten(DType::U8, {2});
  u8a.as<uint8_t>()[0] = 200, u8a.as<uint8_t>()[1] = 3;
  F.run("mul u8 wraps", 22, {&u8a, &u8a}, {}, {}, [&](OpRun& r) {
    return r.outs[0].as<uint8_t>()[0] == 64 && r.outs[0].as<uint8_t>()[1] == 9 ? "" : "wrong values";
  });
  F.expect_error("add mixed dtypes", 20, {&ia, &u8a}, {}, {}, "need one numeric dtype");

  // Unary ops on fixed points, including 0, negatives and NaN where it matters.
  Ten u = make_ten(DType::F32, {6});
  const float pts[6] = {-2.5f, -0.0f, 0.0f, 0.75f, 3.0f, NAN};
  std::memcpy(u.f(), pts, sizeof pts);
  struct U { int code; const char* name; float (*f)(float); };
  const U un[] = {
      {30, "relu", [](float v) { return v > 0 ? v : (v == v ? 0.0f : v); }},
      {32, "silu", [](float v) { return v * sigm(v); }},
      {33, "sigmoid", [](float v) { return sigm(v); }},
      {34, "tanh", [](float v) { return std::tanh(v); }},
      {37, "exp", [](float v) { return std::exp(v); }},
      {38, "log", [](float v) { return std::log(v); }},
      {39, "sqrt", [](float v) { return std::sqrt(v); }},
      {40, "neg", [](float v) { return -v; }},
      {41, "abs", [](float v) { return std::fabs(v); }},
  };
  for (const U& e : un) {
    float w[6];
    for (int i = 0; i < 6; ++i) w[i] = e.f(pts[i]);
    F.run(e.name, e.code, {&u}, {}, {}, [&](OpRun& r) { return compare(r.outs[0].f(), w, 6, kTol, kTol); });
  }
  F.run("leaky_relu", 31, {&u}, {}, {0.1f}, [&](OpRun& r) {
    const float w[6] = {-0.25f, -0.0f, 0.0f, 0.75f, 3.0f, NAN};
    return compare(r.outs[0].f(), w, 6, kTol, 0);
  });
  F.run("clamp", 36, {&u}, {}, {-1.0f, 1.0f}, [&](OpRun& r) {
    const float w[6] = {-1.0f, -0.0f, 0.0f, 0.75f, 1.0f, NAN};
    return compare(r.outs[0].f(), w, 6);
  });
  F.expect_error("clamp order", 36, {&u}, {}, {1.0f, -1.0f}, "needs lo <= hi");
  F.expect_error("relu dtype", 30, {&ea}, {}, {}, "x has dtype i64, expected f32");
  Ten gx = rand_f32({2, 4, 3}, 35);
  F.run("glu axis 1", 35, {&gx}, {1}, {}, [&](OpRun& r) {
    std::vector<float> w(12);
    for (int o = 0; o < 2; ++o)
      for (int i = 0; i < 2; ++i)
        for (int k = 0; k < 3; ++k)
          w[(o * 2 + i) * 3 + k] = gx.f()[(o * 4 + i) * 3 + k] * sigm(gx.f()[(o * 4 + i + 2) * 3 + k]);
    std::string d = shape_is(r.outs[0], {2, 2, 3});
    return d.empty() ? compare(r.outs[0].f(), w.data(), 12, kTol, kTol) : d;
  });
  F.expect_error("glu odd", 35, {&gx}, {2}, {}, "must be even");
}

}  // namespace

void check_float_ops(Tally& t) {
  FRunner F{t};
  linear_and_matmul(F);
  convs(F);
  lstm_and_norms(F);
  elementwise(F);
}

}  // namespace edgekit::test
