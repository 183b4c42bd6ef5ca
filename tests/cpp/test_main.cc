// ek-test: every compiled linear variant that this CPU supports, against the reference, with
// tolerance 0, over the edge cases of cases.cc and the Python-written golden vectors.
//
//   ek-test [--expect-isa ISA] [--seed S] [--extra N] [--golden DIR] [--no-golden]
//           [--force-variant ISA]
//
// --force-variant runs that ISA's variant even when the CPU lacks it. It exists to prove
// that an emulated CPU model really lacks an extension (qemu -cpu cortex-a72 must kill the
// dotprod variant with SIGILL); without that proof, "neon passed on cortex-a72" would not
// show the neon variant is free of ARMv8.2 instructions.
//
// Prints the ISA dispatch selected, one FAIL line per failing check (shape, bits, variant,
// first mismatch), and ends with "<passed> passed, <failed> failed". Exit status: 0 all
// passed, 1 a check failed, 2 bad usage or dispatch refused (e.g. EDGEKIT_ISA names an ISA
// this CPU lacks).
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cases.h"
#include "check.h"
#include "golden.h"
#include "packer.h"
#include "test_ops.h"
#include "variants.h"

namespace edgekit::test {
namespace {

// What is running now, for the crash report: a SIMD kernel that faults (SIGSEGV, or SIGILL
// for an instruction the CPU lacks) must still say which variant and case it was.
std::string g_running = "startup";

void on_crash(int sig) {
  const char head[] = "\nek-test: CRASH (signal ";
  const char num[4] = {static_cast<char>('0' + sig / 10 % 10),
                       static_cast<char>('0' + sig % 10), ')', ' '};
  std::fflush(stdout);
  ssize_t ignored = write(2, head, sizeof head - 1);
  ignored = write(2, num, sizeof num);
  ignored = write(2, g_running.data(), g_running.size());
  ignored = write(2, "\n", 1);
  (void)ignored;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

struct Options {
  std::string expect_isa;
  uint64_t seed = 20261122;
  int extra = 150;
  std::string golden_dir = default_golden_dir();
  std::string force_isa;
};

// A whole non-negative decimal number, or false.
bool parse_count(const char* s, unsigned long long max, unsigned long long* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s || *end != '\0' || s[0] == '-' || v > max) return false;
  *out = v;
  return true;
}

bool parse_args(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    unsigned long long v = 0;
    if (a == "--expect-isa" && has_value) o->expect_isa = argv[++i];
    else if (a == "--seed" && has_value && parse_count(argv[i + 1], ~0ull, &v)) o->seed = v, ++i;
    else if (a == "--extra" && has_value && parse_count(argv[i + 1], 100000, &v))
      o->extra = static_cast<int>(v), ++i;
    else if (a == "--golden" && has_value) o->golden_dir = argv[++i];
    else if (a == "--no-golden") o->golden_dir.clear();
    else if (a == "--force-variant" && has_value) o->force_isa = argv[++i];
    else {
      std::fprintf(stderr, "ek-test: unknown, incomplete or invalid argument '%s'\n"
                   "usage: ek-test [--expect-isa ISA] [--seed S] [--extra N] [--golden DIR]"
                   " [--no-golden]"
                   " [--force-variant ISA]\n",
                   a.c_str());
      return false;
    }
  }
  return true;
}

// One case: the reader accepts the packer's bytes and derives the right weight sums, the
// reference equals the int64 oracle, and every other supported variant equals the reference
// on all rows and on a sub-range of rows (leaving the other rows untouched).
void check_case(int idx, const Case& c, const std::vector<VariantEntry>& variants, Tally& t) {
  const std::string what = "case " + std::to_string(idx) + " [" + c.describe() + "]";
  const LogicalWeights lw = make_weights(c);
  const std::vector<uint8_t> bytes = pack(lw);
  PackedLinear w;
  const Status st = parse_packed_linear(bytes.data(), bytes.size(), &w);
  if (!st.ok()) return t.fail("reader rejected " + what + ": " + st.message());
  // The derived per-group weight sums feed the zero-point correction of x86 variants.
  const int gs = lw.group_size > 0 ? lw.group_size : lw.K;
  for (int n = 0; n < lw.N; ++n)
    for (int g = 0; g < lw.ngroups(); ++g) {
      int32_t s = 0;
      for (int k = g * gs; k < lw.K && k < (g + 1) * gs; ++k) s += lw.weight(n, k);
      if (w.wsum.size() != static_cast<size_t>(lw.N) * lw.ngroups() ||
          w.wsum[static_cast<size_t>(n) * lw.ngroups() + g] != s)
        return t.fail("reader wsum at n=" + std::to_string(n) + " g=" + std::to_string(g) +
                      ", " + what);
    }
  t.pass();
  const std::vector<int8_t> x = make_activations(c);
  const std::vector<int32_t> oracle = oracle_accumulate(lw, x.data(), c.M, c.x_zp);
  const int G = w.ngroups;
  const size_t nacc = static_cast<size_t>(c.M) * c.N * G;

  g_running = "while running the reference on " + what;
  std::vector<int32_t> ref(nacc, 0);
  run_variant(kernels::linear_ref, w, x.data(), c.M, c.x_zp, 0, c.N, ref);
  const std::string ref_diff = first_mismatch(oracle, ref, c.N, G);
  if (!ref_diff.empty())
    return t.fail(kernels::linear_ref.name, "ref vs oracle, " + what + ": " + ref_diff);
  t.pass(kernels::linear_ref.name);

  const int n0 = c.N / 3, n1 = c.N - c.N / 4;  // non-empty for every N >= 1
  for (const VariantEntry& e : variants) {
    if (!e.supported || e.v == &kernels::linear_ref) continue;
    const std::string who = std::string(e.v->name) + " (" + e.v->isa + "), " + what;
    g_running = "while running " + who;
    std::vector<int32_t> got(nacc, 0x5A5A5A5A);
    if (!run_variant(*e.v, w, x.data(), c.M, c.x_zp, 0, c.N, got)) {
      t.fail(e.v->name, who + ": wrote past scratch_bytes");
      continue;
    }
    std::string diff = first_mismatch(ref, got, c.N, G);
    if (!diff.empty()) {
      t.fail(e.v->name, who + ": vs ref, " + diff);
      continue;
    }
    // Rows outside [n0, n1) must keep their sentinel: dispatch splits N across threads.
    std::vector<int32_t> part(nacc, 0x5A5A5A5A), want(nacc, 0x5A5A5A5A);
    for (int m = 0; m < c.M; ++m)
      for (int n = n0; n < n1; ++n)
        for (int g = 0; g < G; ++g) {
          const size_t i = (static_cast<size_t>(m) * c.N + n) * G + g;
          want[i] = ref[i];
        }
    run_variant(*e.v, w, x.data(), c.M, c.x_zp, n0, n1, part);
    diff = first_mismatch(want, part, c.N, G);
    if (!diff.empty()) {
      t.fail(e.v->name, who + ": rows [" + std::to_string(n0) + ", " + std::to_string(n1) +
                            ") only, " + diff);
      continue;
    }
    // Every fifth case: three threads on disjoint row ranges of one output, each with its
    // own scratch, as a threaded dispatch would call it (catches hidden shared state).
    if (idx % 5 == 0) {
      std::vector<int32_t> shared(nacc, 0x5A5A5A5A);
      const int cut[4] = {0, n0, n1, c.N};
      std::vector<std::thread> pool;
      for (int r = 0; r < 3; ++r)
        pool.emplace_back([&, r] {
          run_variant(*e.v, w, x.data(), c.M, c.x_zp, cut[r], cut[r + 1], shared);
        });
      for (std::thread& th : pool) th.join();
      diff = first_mismatch(ref, shared, c.N, G);
      if (!diff.empty()) {
        t.fail(e.v->name, who + ": three threads on disjoint rows, " + diff);
        continue;
      }
    }
    t.pass(e.v->name);
  }
}

}  // namespace
}  // namespace edgekit::test

int main(int argc, char** argv) {
  using namespace edgekit::test;
  Options opt;
  if (!parse_args(argc, argv, &opt)) return 2;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress survives a crash
  for (int sig : {SIGSEGV, SIGILL, SIGBUS, SIGFPE}) std::signal(sig, on_crash);

  std::printf("ek-test: cpu features: %s\n", cpu_description().c_str());
  std::vector<VariantEntry> variants = linear_variants();
  for (VariantEntry& e : variants) {
    if (opt.force_isa == e.v->isa && !e.supported) {
      std::printf("variant %s: forced to run although the CPU lacks %s\n", e.v->name, e.v->isa);
      e.supported = true;
    }
  }
  for (const VariantEntry& e : variants)
    std::printf("variant %-34s isa=%-12s %s\n", e.v->name, e.v->isa,
                e.supported ? "run" : "skipped (this CPU lacks the ISA)");

  const edgekit::kernels::LinearVariant* chosen = nullptr;
  std::string err;
  if (!dispatch_linear(&chosen, &err)) {
    std::printf("ek-test: error: dispatch refused: %s\n", err.c_str());
    return 2;
  }
  std::printf("dispatch: linear -> isa=%s kernel=%s\n", chosen->isa, chosen->name);

  Tally t;
  if (!opt.expect_isa.empty()) {
    if (opt.expect_isa == chosen->isa) t.pass();
    else t.fail("dispatch selected isa=" + std::string(chosen->isa) + ", expected " +
                opt.expect_isa);
  }

  const std::vector<Case> cases = make_cases(opt.seed, opt.extra);
  for (size_t i = 0; i < cases.size(); ++i) check_case(static_cast<int>(i), cases[i], variants, t);
  std::printf("cases: %zu (seed %llu)\n", cases.size(), static_cast<unsigned long long>(opt.seed));

  if (opt.golden_dir.empty()) std::printf("golden: disabled\n");
  else check_golden(opt.golden_dir, variants, t);

  g_running = "while running the op tests (test_ops*.cc)";
  check_ops(t, variants);

  for (const auto& [name, pf] : t.by_variant)
    std::printf("checked %s: %d passed, %d failed\n", name.c_str(), pf.first, pf.second);
  std::printf("%d passed, %d failed\n", t.passed, t.failed);
  return t.failed ? 1 : 0;
}
