// ek-test-ekm: the EKM reader (on the Python-written golden files and every truncation and
// many single-field corruptions of them), CRC-32, UTF-8, the META streaming lookup, the arena
// planner's invariants and the thread pool. Ends with "<passed> passed, <failed> failed";
// exit 1 if anything failed. The ops and the full Session are tested from Python
// (tests/python/test_runtime*.py), where the models are written.
//
//   ek-test-ekm [--golden DIR]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "format/ekm.h"
#include "runtime/meta.h"
#include "runtime/planner.h"
#include "runtime/threadpool.h"

namespace {

using namespace edgekit;

int g_pass = 0, g_fail = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (cond) {                                            \
      ++g_pass;                                            \
    } else {                                               \
      ++g_fail;                                            \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                            \
      std::printf("\n");                                   \
    }                                                      \
  } while (0)

// 64-byte aligned copy, as an mmap'd file would be.
struct Buf {
  std::unique_ptr<uint8_t[]> mem;
  uint8_t* p = nullptr;
  size_t n = 0;
  explicit Buf(const std::vector<uint8_t>& v) : mem(new uint8_t[v.size() + 64]), n(v.size()) {
    p = mem.get() + (64 - reinterpret_cast<uintptr_t>(mem.get()) % 64) % 64;
    if (n) std::memcpy(p, v.data(), n);
  }
};

Status parse(const std::vector<uint8_t>& v, ekm::File* f) {
  Buf b(v);
  return ekm::parse_ekm(b.p, b.n, f);
}

std::vector<uint8_t> fix_crc(std::vector<uint8_t> v) {
  uint64_t len = v.size();
  std::memcpy(v.data() + 24, &len, 8);
  uint32_t crc = ekm::crc32(v.data() + 64, v.size() - 64);
  std::memcpy(v.data() + 32, &crc, 4);
  return v;
}

std::string golden_dir() {
  std::string f = __FILE__;
  return f.substr(0, f.find_last_of('/')) + "/../golden/ekm";
}

void test_crc_utf8() {
  const char* s = "123456789";
  CHECK(ekm::crc32(reinterpret_cast<const uint8_t*>(s), 9) == 0xCBF43926u, "crc32 check value");
  CHECK(ekm::crc32(nullptr, 0) == 0, "crc32 of nothing");
  CHECK(ekm::valid_utf8("caf\xc3\xa9", 5), "valid 2-byte");
  CHECK(ekm::valid_utf8("\xf0\x9f\x98\x80", 4), "valid 4-byte");
  CHECK(!ekm::valid_utf8("\xc0\xaf", 2), "overlong rejected");
  CHECK(!ekm::valid_utf8("\xed\xa0\x80", 3), "surrogate rejected");
  CHECK(!ekm::valid_utf8("\xf4\x90\x80\x80", 4), "> U+10FFFF rejected");
  CHECK(!ekm::valid_utf8("\xe2\x82", 2), "truncated sequence rejected");
}

void test_meta() {
  std::string g;
  CHECK(runtime::meta_streaming_graph("{\"a\": [1, {\"streaming\": {\"graph\": \"x\"}}], \"streaming\": "
                                      "{\"input\": \"chunk\", \"graph\": \"st\\u0065p\"}}", &g).ok() && g == "step",
        "nested decoy ignored, escape decoded: got '%s'", g.c_str());
  CHECK(runtime::meta_streaming_graph("{}", &g).ok() && g.empty(), "no streaming entry");
  CHECK(runtime::meta_streaming_graph(" {\"streaming\": null} ", &g).ok() && g.empty(), "streaming null");
  for (const char* bad : {"", "[]", "{", "{\"a\": }", "{\"a\": 01}", "{} x", "{\"a\": \"\\ud800\"}", "{\"a\": tru}"})
    CHECK(!runtime::meta_streaming_graph(bad, &g).ok(), "malformed META accepted: %s", bad);
  std::string deep(100000, '[');
  CHECK(!runtime::meta_streaming_graph("{\"a\": " + deep + "}", &g).ok(), "deep nesting must fail, not overflow");
}

void test_planner() {
  using runtime::ArenaRequest;
  // A chain a -> b -> c: a and c can share, b cannot share with either.
  auto p = runtime::plan_arena({{100, 0, 1}, {200, 1, 2}, {100, 2, 3}});
  CHECK(p.arena_bytes == 128 + 256, "chain arena %zu", p.arena_bytes);
  CHECK(p.offsets[0] == p.offsets[2], "a and c share");
  CHECK(p.naive_bytes == 128 + 256 + 128, "naive %zu", p.naive_bytes);
  // Random requests: live-overlapping requests never overlap in bytes; offsets aligned.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<ArenaRequest> r(1 + rng() % 40);
    for (auto& q : r) {
      q.first = static_cast<int>(rng() % 30);
      q.last = q.first + static_cast<int>(rng() % 6);
      q.bytes = 1 + rng() % 5000;
    }
    auto plan = runtime::plan_arena(r);
    bool ok = plan.arena_bytes >= plan.peak_live_bytes && plan.arena_bytes <= plan.naive_bytes;
    for (size_t i = 0; i < r.size(); ++i) {
      ok &= plan.offsets[i] % 64 == 0 && plan.offsets[i] + r[i].bytes <= plan.arena_bytes;
      for (size_t j = i + 1; j < r.size(); ++j) {
        bool live = r[i].first <= r[j].last && r[j].first <= r[i].last;
        bool bytes = plan.offsets[i] < plan.offsets[j] + r[j].bytes && plan.offsets[j] < plan.offsets[i] + r[i].bytes;
        ok &= !(live && bytes);
      }
    }
    CHECK(ok, "planner invariant broken in trial %d", trial);
  }
}

void test_threadpool() {
  for (int threads : {1, 2, 4}) {
    runtime::ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(1000);
    for (int rep = 0; rep < 50; ++rep) {
      runtime::parallel_for(&pool, 1000 - rep, [](void* c, int i) {
        (*static_cast<std::vector<std::atomic<int>>*>(c))[i]++;
      }, &hits);
    }
    bool ok = true;
    for (int i = 0; i < 1000; ++i) ok &= hits[i] == std::min(50, 1000 - i);
    CHECK(ok, "every index exactly once per call with %d threads", threads);
  }
  int n = 0;
  runtime::parallel_for(nullptr, 5, [](void* c, int) { ++*static_cast<int*>(c); }, &n);
  CHECK(n == 5, "null pool runs serially");
}

void test_golden(const std::string& dir) {
  std::ifstream f(dir + "/streaming.ekm", std::ios::binary);
  if (!f) {
    std::printf("golden: %s/streaming.ekm not found\n", dir.c_str());
    ++g_fail;
    return;
  }
  std::vector<uint8_t> v((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ekm::File file;
  Status st = parse(v, &file);
  CHECK(st.ok(), "golden streaming.ekm: %s", st.message().c_str());
  if (!st.ok()) return;
  CHECK(file.graphs.size() == 1 && file.graphs[0].name == "step", "one graph 'step'");
  CHECK(file.graphs[0].states.size() == 3, "three state pairs");
  CHECK(file.packed.size() == 4, "four packed weights parsed, got %zu", file.packed.size());
  int qlstm = -1;
  for (size_t i = 0; i < file.ops.size(); ++i)
    if (file.ops[i].code == 7) qlstm = static_cast<int>(i);
  CHECK(qlstm >= 0 && file.ops[qlstm].inputs[6] == -1, "absent optional operand read as -1");
  CHECK(file.meta.find("\"streaming\"") != std::string::npos, "META passed through");

  // Every truncation fails (the header's file_bytes no longer matches), even with fixed CRC.
  int bad = 0;
  for (size_t n = 0; n < v.size(); ++n) {
    std::vector<uint8_t> t(v.begin(), v.begin() + n);
    if (parse(t, &file).ok()) ++bad;
    if (n >= 64 && parse(fix_crc(t), &file).ok()) ++bad;
  }
  CHECK(bad == 0, "%d truncations accepted", bad);
  // A flipped bit anywhere past the header is caught by the checksum.
  std::vector<uint8_t> flipped = v;
  flipped[v.size() / 2] ^= 0x10;
  st = parse(flipped, &file);
  CHECK(!st.ok() && st.message().find("checksum") != std::string::npos, "checksum: %s", st.message().c_str());
  // Single fields set to hostile values with a valid checksum: rejected or still consistent,
  // never a crash (ASan builds of this test and the fuzz target check the "never").
  const uint64_t hostile[] = {0, 1, 63, 0xFFFFFFFFull, 0x7FFFFFFFFFFFFFFFull, ~0ull};
  int accepted = 0, total = 0;
  for (size_t pos = 0; pos + 8 <= v.size() && pos < 4096; pos += 4)
    for (uint64_t h : hostile) {
      std::vector<uint8_t> m = v;
      std::memcpy(m.data() + pos, &h, 8);
      m = fix_crc(m);
      accepted += parse(m, &file).ok();
      ++total;
    }
  std::printf("hostile fields: %d of %d variants still valid (unused bytes, padding, data)\n", accepted, total);
  CHECK(accepted < total, "some hostile variants must be rejected");
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = golden_dir();
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--golden" && i + 1 < argc) dir = argv[++i];
    else { std::fprintf(stderr, "usage: ek-test-ekm [--golden DIR]\n"); return 2; }
  }
  test_crc_utf8();
  test_meta();
  test_planner();
  test_threadpool();
  test_golden(dir);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
