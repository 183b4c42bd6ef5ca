// Op tests, part 3: data movement (reshape, transpose, concat, slice, pad, copy, cast),
// gather (including its data-dependent error) and nearest.
#include <cmath>
#include <cstring>

#include "test_ops.h"

namespace edgekit::test {
namespace {

struct SRunner {
  Tally& t;
  template <class Check>
  void run(const std::string& what, int code, const std::vector<Ten*>& ins, const std::vector<int64_t>& ints,
           const std::vector<float>& floats, Check check) {
    OpRun r = run_op(code, ins, ints, floats);
    if (!r.infer.ok()) return t.fail(what + ": infer failed: " + r.infer.message());
    if (!r.eval.ok()) return t.fail(what + ": eval failed: " + r.eval.message());
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

Ten iota(std::initializer_list<int64_t> dims) {
  Ten x = make_ten(DType::F32, dims);
  for (int64_t i = 0; i < x.numel(); ++i) x.f()[i] = static_cast<float>(i);
  return x;
}

std::string dims_are(const Ten& o, std::initializer_list<int64_t> dims) {
  bool ok = o.info.rank == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) ok = ok && o.info.dims[i++] == d;
  return ok ? "" : "wrong output shape";
}

void movement(SRunner& S) {
  Ten x = iota({2, 3, 4});
  S.run("reshape", 50, {&x}, {4, 6}, {}, [&](OpRun& r) {
    std::string d = dims_are(r.outs[0], {4, 6});
    return d.empty() ? compare(r.outs[0].f(), x.f(), 24) : d;
  });
  S.expect_error("reshape numel", 50, {&x}, {5, 5}, {}, "cannot reshape (2, 3, 4) to (5, 5)");
  S.expect_error("reshape dim", 50, {&x}, {-1, 24}, {}, "target dim is -1");
  S.run("copy", 56, {&x}, {}, {}, [&](OpRun& r) { return compare(r.outs[0].f(), x.f(), 24); });
  S.run("transpose (2,0,1)", 51, {&x}, {2, 0, 1}, {}, [&](OpRun& r) {
    std::vector<float> w(24);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 2; ++j)
        for (int k = 0; k < 3; ++k) w[(i * 2 + j) * 3 + k] = x.f()[(j * 3 + k) * 4 + i];
    std::string d = dims_are(r.outs[0], {4, 2, 3});
    return d.empty() ? compare(r.outs[0].f(), w.data(), 24) : d;
  });
  Ten xi = make_ten(DType::I64, {2, 3});
  for (int i = 0; i < 6; ++i) xi.as<int64_t>()[i] = int64_t{1} << (40 + i);
  S.run("transpose i64", 51, {&xi}, {1, 0}, {}, [&](OpRun& r) {
    const int64_t* o = r.outs[0].as<int64_t>();
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 2; ++j)
        if (o[i * 2 + j] != xi.as<int64_t>()[j * 3 + i]) return std::string("wrong value");
    return std::string();
  });
  S.expect_error("transpose perm", 51, {&x}, {0, 0, 1}, {}, "not a permutation");
  S.expect_error("transpose count", 51, {&x}, {0, 1}, {}, "perm has 2 entries for rank 3");

  Ten c1 = iota({2, 1, 4}), c2 = iota({2, 2, 4});
  S.run("concat axis 1", 52, {&x, &c1, &c2}, {1}, {}, [&](OpRun& r) {
    std::vector<float> w;
    for (int o = 0; o < 2; ++o) {
      w.insert(w.end(), x.f() + o * 12, x.f() + o * 12 + 12);
      w.insert(w.end(), c1.f() + o * 4, c1.f() + o * 4 + 4);
      w.insert(w.end(), c2.f() + o * 8, c2.f() + o * 8 + 8);
    }
    std::string d = dims_are(r.outs[0], {2, 6, 4});
    return d.empty() ? compare(r.outs[0].f(), w.data(), 48) : d;
  });
  S.expect_error("concat mismatch", 52, {&x, &c1}, {2}, {}, "does not match input 0");
  S.run("slice step 2", 53, {&x}, {2, 1, 4, 2}, {}, [&](OpRun& r) {
    std::vector<float> w;
    for (int o = 0; o < 6; ++o) w.push_back(x.f()[o * 4 + 1]), w.push_back(x.f()[o * 4 + 3]);
    std::string d = dims_are(r.outs[0], {2, 3, 2});
    return d.empty() ? compare(r.outs[0].f(), w.data(), 12) : d;
  });
  S.expect_error("slice bounds", 53, {&x}, {1, 2, 4, 1}, {}, "needs 0 <= start < end <= 3");
  S.expect_error("slice step", 53, {&x}, {1, 0, 2, 0}, {}, "step is 0");
  S.run("pad last axis", 54, {&x}, {2, 2, 1}, {-7.5f}, [&](OpRun& r) {
    std::vector<float> w;
    for (int o = 0; o < 6; ++o) {
      w.push_back(-7.5f), w.push_back(-7.5f);
      w.insert(w.end(), x.f() + o * 4, x.f() + o * 4 + 4);
      w.push_back(-7.5f);
    }
    std::string d = dims_are(r.outs[0], {2, 3, 7});
    return d.empty() ? compare(r.outs[0].f(), w.data(), 42) : d;
  });
  S.expect_error("pad negative", 54, {&x}, {0, -1, 0}, {0.0f}, "before is -1");
}

void casts(SRunner& S) {
  Ten x = make_ten(DType::F32, {6});
  const float v[6] = {-2.7f, 2.7f, NAN, 3e9f, -3e9f, 255.9f};
  std::memcpy(x.f(), v, sizeof v);
  S.run("cast f32->i32", 57, {&x}, {2}, {}, [&](OpRun& r) {
    const int32_t want[6] = {-2, 2, 0, 2147483647, -2147483647 - 1, 255};
    return std::memcmp(r.outs[0].data(), want, sizeof want) == 0 ? "" : "wrong values (truncate, NaN->0, saturate)";
  });
  S.run("cast f32->u8", 57, {&x}, {4}, {}, [&](OpRun& r) {
    const uint8_t want[6] = {0, 2, 0, 255, 0, 255};
    return std::memcmp(r.outs[0].data(), want, sizeof want) == 0 ? "" : "wrong values";
  });
  Ten i = make_ten(DType::I64, {2});
  i.as<int64_t>()[0] = -5, i.as<int64_t>()[1] = int64_t{1} << 40;
  S.run("cast i64->f32", 57, {&i}, {1}, {}, [&](OpRun& r) {
    const float want[2] = {-5.0f, 1099511627776.0f};
    return compare(r.outs[0].f(), want, 2);
  });
  S.run("cast f32->i8", 57, {&x}, {3}, {}, [&](OpRun& r) {
    const int8_t want[6] = {-2, 2, 0, 127, -128, 127};
    return std::memcmp(r.outs[0].data(), want, sizeof want) == 0 ? "" : "wrong values";
  });
  S.expect_error("cast to packed", 57, {&x}, {6}, {}, "converts between f32, i32, i8, u8 and i64 only");
}

void gather_nearest(SRunner& S) {
  Ten tab = iota({5, 3});
  Ten idx = make_ten(DType::I64, {2, 2});
  const int64_t ids[4] = {4, 0, 2, 2};
  std::memcpy(idx.data(), ids, sizeof ids);
  S.run("gather axis 0 (embedding)", 55, {&tab, &idx}, {0}, {}, [&](OpRun& r) {
    std::vector<float> w;
    for (int64_t id : ids) w.insert(w.end(), tab.f() + id * 3, tab.f() + id * 3 + 3);
    std::string d = dims_are(r.outs[0], {2, 2, 3});
    return d.empty() ? compare(r.outs[0].f(), w.data(), 12) : d;
  });
  Ten idx32 = make_ten(DType::I32, {2});
  idx32.as<int32_t>()[0] = 2, idx32.as<int32_t>()[1] = 0;
  S.run("gather axis 1 i32", 55, {&tab, &idx32}, {1}, {}, [&](OpRun& r) {
    std::vector<float> w;
    for (int row = 0; row < 5; ++row) w.push_back(tab.f()[row * 3 + 2]), w.push_back(tab.f()[row * 3]);
    std::string d = dims_are(r.outs[0], {5, 2});
    return d.empty() ? compare(r.outs[0].f(), w.data(), 10) : d;
  });
  Ten bad = make_ten(DType::I64, {3});
  bad.as<int64_t>()[0] = 1, bad.as<int64_t>()[1] = 5, bad.as<int64_t>()[2] = 0;
  S.expect_error("gather out of range", 55, {&tab, &bad}, {0}, {}, "index 5 out of range [0, 5)");
  bad.as<int64_t>()[1] = -1;
  S.expect_error("gather negative", 55, {&tab, &bad}, {0}, {}, "index -1 out of range");
  S.expect_error("gather idx dtype", 55, {&tab, &tab}, {0}, {}, "indices must be i64 or i32");

  Ten vals = make_ten(DType::F32, {4});
  const float lv[4] = {-1.0f, 0.0f, 1.0f, 0.5f};
  std::memcpy(vals.f(), lv, sizeof lv);
  Ten x = make_ten(DType::F32, {2, 3});
  const float xv[6] = {-5.0f, -0.5f, 0.2f, 0.75f, 0.9f, 7.0f};
  std::memcpy(x.f(), xv, sizeof xv);
  S.run("nearest (ties -> lower index)", 58, {&x, &vals}, {}, {}, [&](OpRun& r) {
    const float want[6] = {-1.0f, -1.0f, 0.0f, 1.0f, 1.0f, 1.0f};
    return compare(r.outs[0].f(), want, 6);
  });
  S.expect_error("nearest values rank", 58, {&x, &x}, {}, {}, "values has rank 2");
}

}  // namespace

void check_shape_ops(Tally& t) {
  SRunner S{t};
  movement(S);
  casts(S);
  gather_nearest(S);
}

}  // namespace edgekit::test
