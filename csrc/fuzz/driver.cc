// A mutation-based driver for LLVMFuzzerTestOneInput when libFuzzer is not available (gcc).
// It is not coverage guided: it mutates seed files (valid .ekm models) with EKM-aware edits —
// bit flips, interesting integers written over 1/2/4/8-byte fields at record-aligned
// positions, truncations, duplicated or zeroed 64-byte blocks, splices between seeds — and
// relies on ASan/UBSan to turn any memory or undefined-behaviour error into a crash.
//
//   ek-fuzz-ekm [-max_total_time=S] [-runs=N] [-seed=N] SEED_FILE_OR_DIR...
//
// Flags mirror libFuzzer's names so scripts work with either build. On a sanitizer report
// the current input is written to ./crash-input.ekm first (run with
// UBSAN_OPTIONS=abort_on_error=1 so that UBSan reports reach the handler).
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <sanitizer/common_interface_defs.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> g_current;

// Called on a sanitizer report (ASan's death callback) or a fatal signal (UBSan aborts with
// abort_on_error=1): only async-signal-safe calls.
void dump_current() {
  int fd = open("crash-input.ekm", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  ssize_t ignored = write(fd, g_current.data(), g_current.size());
  close(fd);
  const char msg[] = "ek-fuzz-ekm: input written to crash-input.ekm\n";
  ignored = write(2, msg, sizeof msg - 1);
  (void)ignored;
}

void on_signal(int sig) {
  dump_current();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void add_seed(const std::string& path, std::vector<std::vector<uint8_t>>* seeds) {
  struct stat sb;
  if (stat(path.c_str(), &sb) != 0) return;
  if (S_ISDIR(sb.st_mode)) {
    DIR* d = opendir(path.c_str());
    if (!d) return;
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') add_seed(path + "/" + e->d_name, seeds);
    closedir(d);
    return;
  }
  std::ifstream f(path, std::ios::binary);
  seeds->emplace_back((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

const uint64_t kInteresting[] = {0, 1, 2, 3, 7, 63, 64, 65, 127, 128, 255, 256, 4096, 0x7FFF, 0xFFFF,
                                 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000ull, 0x7FFFFFFFFFFFFFFFull,
                                 0x8000000000000000ull, ~0ull};

void mutate(std::vector<uint8_t>* b, const std::vector<std::vector<uint8_t>>& seeds, std::mt19937_64& rng) {
  auto pick = [&](uint64_t n) { return n ? rng() % n : 0; };
  int edits = 1 + static_cast<int>(pick(4));
  for (int e = 0; e < edits && !b->empty(); ++e) {
    size_t n = b->size();
    switch (pick(7)) {
      case 0: (*b)[pick(n)] ^= static_cast<uint8_t>(1u << pick(8)); break;
      case 1:
      case 2: {  // a field-sized integer at a 4-aligned spot (records are 4/8-aligned)
        static const size_t widths[] = {1, 2, 4, 8};
        size_t w = widths[pick(4)];
        if (n < w) break;
        size_t pos = pick(n - w + 1) & ~size_t{3};
        uint64_t v = kInteresting[pick(sizeof kInteresting / sizeof kInteresting[0])];
        if (pick(4) == 0) v = n + pick(256) - 128;  // near the file size
        std::memcpy(b->data() + pos, &v, w);
        break;
      }
      case 3: b->resize(pick(n + 1)); break;
      case 4: {  // duplicate a 64-byte block over another
        if (n < 128) break;
        size_t from = pick(n / 64) * 64, to = pick(n / 64) * 64;
        std::memmove(b->data() + to, b->data() + from, std::min<size_t>(64, n - std::max(from, to)));
        break;
      }
      case 5: {
        if (n < 64) break;
        std::memset(b->data() + pick(n / 64) * 64, 0, 64);
        break;
      }
      default: {  // splice: keep a prefix, take the rest from another seed
        const auto& o = seeds[pick(seeds.size())];
        size_t cut = std::min(pick(n + 1), o.size());
        b->resize(cut);
        b->insert(b->end(), o.begin() + cut, o.end());
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  double max_time = 10;
  long long runs = -1;
  uint64_t seed = 1;
  std::vector<std::vector<uint8_t>> seeds;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("-max_total_time=", 0) == 0) max_time = std::atof(a.c_str() + 16);
    else if (a.rfind("-runs=", 0) == 0) runs = std::atoll(a.c_str() + 6);
    else if (a.rfind("-seed=", 0) == 0) seed = std::strtoull(a.c_str() + 6, nullptr, 10);
    else if (a[0] == '-') { std::fprintf(stderr, "ek-fuzz-ekm: unknown flag %s\n", a.c_str()); return 2; }
    else add_seed(a, &seeds);
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "usage: ek-fuzz-ekm [-max_total_time=S] [-runs=N] [-seed=N] SEED_FILE_OR_DIR...\n");
    return 2;
  }
  __sanitizer_set_death_callback(dump_current);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) std::signal(sig, on_signal);
  std::mt19937_64 rng(seed);
  auto t0 = std::chrono::steady_clock::now();
  long long n = 0;
  for (const auto& s : seeds) {  // the seeds themselves first
    g_current = s;
    LLVMFuzzerTestOneInput(g_current.data(), g_current.size());
    ++n;
  }
  for (;; ++n) {
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if ((runs >= 0 && n >= runs) || (runs < 0 && elapsed >= max_time)) break;
    g_current = seeds[rng() % seeds.size()];
    mutate(&g_current, seeds, rng);
    LLVMFuzzerTestOneInput(g_current.data(), g_current.size());
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("ek-fuzz-ekm: %lld inputs in %.1f s from %zu seeds, no crash\n", n, elapsed, seeds.size());
  return 0;
}
