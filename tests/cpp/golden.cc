#include "golden.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "kernels/linear/epilogue.h"
#include "packer.h"

namespace edgekit::test {
namespace {

bool read_file(const std::string& path, std::vector<uint8_t>* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return true;
}

template <class T>
std::vector<T> as(const std::vector<uint8_t>& bytes) {
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));  // little-endian targets
  return v;
}

struct GoldenCase {
  std::string name;
  int M = 0, K = 0, N = 0, ngroups = 0, x_zp = 0;
};

// One vector: reader + every variant reproduce Python's accumulators (and the group sums),
// and the spec-written test packer reproduces Python's bytes from the same logical matrix.
void check_one(const std::string& dir, const GoldenCase& c,
               const std::vector<VariantEntry>& variants, Tally& t) {
  const std::string what = "golden " + c.name;
  std::vector<uint8_t> bytes, xb, accb, outb;
  const std::string stem = dir + "/" + c.name;
  if (!read_file(stem + ".ekpw", &bytes) || !read_file(stem + ".x.bin", &xb) ||
      !read_file(stem + ".acc.bin", &accb) || !read_file(stem + ".out.bin", &outb))
    return t.fail(what + ": missing file");
  const size_t nacc = static_cast<size_t>(c.M) * c.N * c.ngroups;
  if (xb.size() != static_cast<size_t>(c.M) * c.K || accb.size() != 4 * nacc ||
      outb.size() != 4 * static_cast<size_t>(c.M) * c.N)
    return t.fail(what + ": file sizes disagree with cases.txt");
  const std::vector<int8_t> x = as<int8_t>(xb);
  const std::vector<int32_t> want = as<int32_t>(accb), want_out = as<int32_t>(outb);

  PackedLinear w;
  const Status st = parse_packed_linear(bytes.data(), bytes.size(), &w);
  if (!st.ok()) return t.fail(what + ": C++ reader rejected Python's bytes: " + st.message());
  if (w.N != c.N || w.K != c.K || w.ngroups != c.ngroups)
    return t.fail(what + ": header shape disagrees with cases.txt");
  t.pass();

  for (const VariantEntry& e : variants) {
    if (!e.supported) continue;
    std::vector<int32_t> got(nacc, 0x5A5A5A5A), out(static_cast<size_t>(c.M) * c.N);
    run_variant(*e.v, w, x.data(), c.M, c.x_zp, 0, c.N, got);
    std::string diff = first_mismatch(want, got, c.N, c.ngroups);
    if (diff.empty()) {
      kernels::epilogue_sum_groups(w, got.data(), c.M, out.data());
      diff = first_mismatch(want_out, out, c.N, 1);
      if (!diff.empty()) diff = "summed over groups, " + diff;
    }
    if (diff.empty()) t.pass(e.v->name);
    else t.fail(e.v->name, what + ", " + e.v->name + " (" + e.v->isa + "): " + diff);
  }

  LogicalWeights lw;
  std::string err;
  if (!unpack(bytes, &lw, &err)) return t.fail(what + ": test unpacker: " + err);
  const std::vector<int32_t> oracle = oracle_accumulate(lw, x.data(), c.M, c.x_zp);
  const std::string diff = first_mismatch(want, oracle, c.N, c.ngroups);
  if (!diff.empty()) return t.fail(what + ": oracle on the unpacked matrix, " + diff);
  const std::vector<uint8_t> again = pack(lw);
  if (again != bytes) {
    size_t i = 0;
    while (i < again.size() && i < bytes.size() && again[i] == bytes[i]) ++i;
    return t.fail(what + ": C++ test packer bytes differ from Python's at offset " +
                  std::to_string(i) + " (sizes " + std::to_string(again.size()) + " vs " +
                  std::to_string(bytes.size()) + ")");
  }
  t.pass();
}

}  // namespace

std::string default_golden_dir() {
  std::string f = __FILE__;  // absolute in CMake builds: <repo>/tests/cpp/golden.cc
  const size_t slash = f.find_last_of('/');
  return slash == std::string::npos ? "" : f.substr(0, slash) + "/../golden";
}

void check_golden(const std::string& dir, const std::vector<VariantEntry>& variants, Tally& t) {
  std::ifstream list(dir + "/cases.txt");
  if (!list) {
    std::printf("golden: %s/cases.txt not found, skipped\n", dir.c_str());
    return;
  }
  int n = 0;
  std::string line;
  while (std::getline(list, line)) {
    if (line.empty() || line[0] == '#') continue;
    GoldenCase c;
    std::istringstream fields(line);
    if (!(fields >> c.name >> c.M >> c.K >> c.N >> c.ngroups >> c.x_zp) || c.M < 1 || c.K < 1 ||
        c.N < 1 || c.ngroups < 1) {
      t.fail("golden: malformed cases.txt line: " + line);
      continue;
    }
    check_one(dir, c, variants, t);
    ++n;
  }
  std::printf("golden: %d vectors from %s\n", n, dir.c_str());
}

}  // namespace edgekit::test
