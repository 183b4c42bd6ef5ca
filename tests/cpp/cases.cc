#include "cases.h"

#include <algorithm>
#include <sstream>

namespace edgekit::test {
namespace {

const char* name(Sparsity s) {
  switch (s) {
    case Sparsity::kDense: return "dense";
    case Sparsity::kBitmap: return "bitmap";
    default: return "nm";
  }
}
const char* name(XPattern p) {
  switch (p) {
    case XPattern::kRandom: return "random";
    case XPattern::kAllMin: return "all-128";
    case XPattern::kAllMax: return "all127";
    default: return "alternate";
  }
}
const char* name(Table t) {
  switch (t) {
    case Table::kAffine: return "affine";
    case Table::kRandom: return "random";
    default: return "extremes";
  }
}

// Round-robin pickers with co-prime periods so the secondary knobs (M, N, table, zero
// point, ...) do not lock to the primary ones (bits, K, sparsity).
template <class T, size_t L>
T pick(const T (&arr)[L], size_t i) {
  return arr[i % L];
}

}  // namespace

std::string Case::describe() const {
  std::ostringstream s;
  s << "M=" << M << " N=" << N << " K=" << K << " bits=" << bits << " " << name(sparsity);
  if (sparsity == Sparsity::kBitmap) s << "(density=" << density << ")";
  if (sparsity == Sparsity::kNM) s << "(" << nm_n << ":" << nm_m << ")";
  s << " table=" << name(table) << (per_row ? "/row" : "/tensor") << " group=" << group_size
    << " x_zp=" << x_zp << " x=" << name(x) << (zero_row ? " zero_row" : "") << " seed=" << seed;
  return s.str();
}

std::vector<Case> make_cases(uint64_t seed, int extra) {
  static const int kKs[] = {1, 63, 64, 65, 200, 1000};
  static const int kNs[] = {1, 3, 5, 7, 9, 13, 17, 31};
  static const int kGroups[] = {0, 64, 128};
  static const int32_t kZps[] = {0, 3, -128, 127, -17};
  static const XPattern kXs[] = {XPattern::kRandom, XPattern::kAllMin, XPattern::kAllMax,
                                 XPattern::kRandom, XPattern::kAlternate};
  static const Table kTables[] = {Table::kAffine, Table::kRandom, Table::kExtremes, Table::kRandom};
  static const double kDensity[] = {0.5, 0.0, 0.1, 0.9, 1.0, 0.3, 0.02};
  static const int kNM[][2] = {{2, 4}, {1, 4}, {4, 8}};

  std::vector<Case> out;
  size_t i = 0;
  auto finish = [&](Case c) {
    if (c.M == 0) c.M = static_cast<int>(i % 17) + 1;
    if (c.N == 0) c.N = pick(kNs, i / 2);
    c.table = pick(kTables, i / 3);
    c.per_row = (i / 5) % 2 == 1;
    c.group_size = pick(kGroups, i / 7);
    c.x_zp = pick(kZps, i / 11);
    c.x = pick(kXs, i / 13);
    c.zero_row = i % 6 == 0;
    c.seed = seed * 1000003u + i;
    out.push_back(c);
    ++i;
  };

  // bits x K x {dense, bitmap, 2:4, 1:4, 4:8}.
  for (int bits = 1; bits <= 8; ++bits)
    for (int K : kKs) {
      Case d;
      d.bits = bits, d.K = K, d.M = 0, d.N = 0;
      finish(d);
      Case b = d;
      b.sparsity = Sparsity::kBitmap;
      b.density = pick(kDensity, i);
      finish(b);
      for (const auto& nm : kNM) {
        if (K % nm[1] != 0) continue;
        Case s = d;
        s.sparsity = Sparsity::kNM;
        s.nm_n = nm[0], s.nm_m = nm[1];
        finish(s);
      }
    }
  // Every M in 1..17 (the row-tile edges), with odd N and a K that ends mid-block.
  for (int M = 1; M <= 17; ++M) {
    Case c;
    c.M = M, c.N = 2 * (M % 5) + 1, c.K = M % 2 ? 65 : 200, c.bits = (M % 8) + 1;
    c.sparsity = M % 3 == 0 ? Sparsity::kBitmap : Sparsity::kDense;
    finish(c);
  }
  // Extreme codebooks (-128, 127) against extreme activations and zero points, every width.
  for (int bits = 1; bits <= 8; ++bits)
    for (XPattern xp : {XPattern::kAllMin, XPattern::kAllMax}) {
      Case c;
      c.M = 3, c.N = 5, c.K = 1000, c.bits = bits;
      c.sparsity = bits % 2 ? Sparsity::kDense : Sparsity::kNM;
      c.nm_n = 4, c.nm_m = 8;
      finish(c);
      Case& e = out.back();
      e.table = Table::kExtremes;
      e.x = xp;
      e.x_zp = xp == XPattern::kAllMin ? 127 : -128;
    }
  // Full cross product of the decode paths: bits x {dense, bitmap, N:M} x codebook kind x
  // per-tensor/per-row (the sweeps above leave some of these 144 combinations out).
  for (int bits = 1; bits <= 8; ++bits)
    for (Sparsity sp : {Sparsity::kDense, Sparsity::kBitmap, Sparsity::kNM})
      for (Table tab : {Table::kAffine, Table::kRandom, Table::kExtremes})
        for (bool per_row : {false, true}) {
          Case c;
          c.M = static_cast<int>(i % 4) + 1, c.N = 3 + 2 * static_cast<int>(i % 3);
          c.K = 200, c.bits = bits;
          c.sparsity = sp;
          c.density = 0.6;
          c.nm_n = 2, c.nm_m = 4;
          finish(c);
          out.back().table = tab;
          out.back().per_row = per_row;
        }
  std::mt19937_64 rng(seed);
  for (int r = 0; r < extra; ++r) {
    Case c;
    c.bits = static_cast<int>(rng() % 8) + 1;
    c.K = static_cast<int>(rng() % 600) + 1;
    c.M = static_cast<int>(rng() % 9) + 1;
    c.N = static_cast<int>(rng() % 20) + 1;
    const int kind = static_cast<int>(rng() % 3);
    if (kind == 1) {
      c.sparsity = Sparsity::kBitmap;
      c.density = static_cast<double>(rng() % 101) / 100.0;
    } else if (kind == 2) {
      const auto& nm = kNM[rng() % 3];
      c.sparsity = Sparsity::kNM;
      c.nm_n = nm[0], c.nm_m = nm[1];
      c.K = std::max(nm[1], c.K - c.K % nm[1]);
    }
    finish(c);
  }
  return out;
}

LogicalWeights make_weights(const Case& c) {
  std::mt19937_64 rng(c.seed);
  LogicalWeights w;
  w.N = c.N, w.K = c.K, w.bits = c.bits, w.per_row = c.per_row, w.group_size = c.group_size;
  const int levels = 1 << c.bits;
  const int ntab = c.per_row ? c.N : 1;
  w.codebook.resize(static_cast<size_t>(ntab) * levels);
  for (int t = 0; t < ntab; ++t)
    for (int e = 0; e < levels; ++e) {
      int8_t v;
      if (c.table == Table::kAffine) v = static_cast<int8_t>(e - levels / 2);
      else if (c.table == Table::kExtremes) v = static_cast<int8_t>((e + t) % 2 ? 127 : -128);
      else v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
      w.codebook[static_cast<size_t>(t) * levels + e] = v;
    }
  if (c.table == Table::kExtremes && levels > 2) w.codebook[1] = -127;  // narrow-range end
  w.codes.resize(static_cast<size_t>(c.N) * c.K);
  for (auto& code : w.codes) code = static_cast<uint8_t>(rng() % levels);

  if (c.sparsity == Sparsity::kBitmap) {
    w.mask.resize(w.codes.size());
    std::bernoulli_distribution keep(c.density);
    for (auto& m : w.mask) m = keep(rng) ? 1 : 0;
  } else if (c.sparsity == Sparsity::kNM) {
    w.nm_n = c.nm_n, w.nm_m = c.nm_m;
    w.mask.assign(w.codes.size(), 0);
    std::vector<int> pos(c.nm_m);
    for (int n = 0; n < c.N; ++n)
      for (int k0 = 0; k0 < c.K; k0 += c.nm_m) {
        for (int j = 0; j < c.nm_m; ++j) pos[j] = j;
        std::shuffle(pos.begin(), pos.end(), rng);
        for (int j = 0; j < c.nm_n; ++j) w.mask[static_cast<size_t>(n) * c.K + k0 + pos[j]] = 1;
      }
  }
  if (c.zero_row) {
    if (c.sparsity == Sparsity::kBitmap) {
      std::fill(w.mask.begin(), w.mask.begin() + c.K, 0);
    } else {
      // Dense or N:M (whose count per group is fixed): store codes of a zero entry, adding
      // one to the table if it has none.
      int zero = -1;
      for (int e = 0; e < levels && zero < 0; ++e)
        if (w.codebook[e] == 0) zero = e;
      if (zero < 0) w.codebook[zero = 0] = 0;
      std::fill(w.codes.begin(), w.codes.begin() + c.K, static_cast<uint8_t>(zero));
    }
  }
  w.scales.resize(static_cast<size_t>(c.N) * w.ngroups());
  std::uniform_real_distribution<float> sc(0.001f, 0.1f);
  for (auto& s : w.scales) s = sc(rng);
  return w;
}

std::vector<int8_t> make_activations(const Case& c) {
  std::mt19937_64 rng(c.seed ^ 0x9E3779B97F4A7C15ull);
  std::vector<int8_t> x(static_cast<size_t>(c.M) * c.K);
  for (size_t i = 0; i < x.size(); ++i) {
    switch (c.x) {
      case XPattern::kAllMin: x[i] = -128; break;
      case XPattern::kAllMax: x[i] = 127; break;
      case XPattern::kAlternate: x[i] = i % 2 ? 127 : -128; break;
      default: x[i] = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
    }
  }
  return x;
}

}  // namespace edgekit::test
