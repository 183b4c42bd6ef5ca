// ek-run: load an .ekm, feed its graph, time it, print one JSON object (docs/runtime.md).
// No Python: this is what goes to a Raspberry Pi or an Android phone.
//
// Exit status: 0 success, 2 bad input or file ({"error": ...} on stdout), 1 internal failure.
#include <sys/resource.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "edgekit/model.h"
#include "edgekit/session.h"
#include "tools/npy.h"

namespace {

using edgekit::Status;
constexpr const char* kVersion = "0.1.0";

const char* kUsage =
    "usage: ek-run MODEL.ekm [--graph NAME] [--input NAME=file.npy ...] [--fill zeros|random]\n"
    "              [--seed S] [--warmup N] [--iters N] [--threads T] [--isa ISA] [--stream]\n"
    "              [--output-dir DIR] [--per-op] [--version] [--help]\n";

const char* kHelp =
    "Runs one graph of an .ekm model and prints one JSON object on stdout.\n"
    "\n"
    "options:\n"
    "  --graph NAME           graph to run (default: META's streaming graph, else the only one)\n"
    "  --input NAME=file.npy  input array of exactly the declared dtype and shape (repeatable)\n"
    "  --fill zeros|random    inputs not given by --input (default zeros; random: float U[-1,1))\n"
    "  --seed S               seed for --fill random (default 0)\n"
    "  --warmup N             untimed calls after the first (default 1)\n"
    "  --iters N              timed calls (default 10)\n"
    "  --threads T            intra-op threads, 1..256 (default 1)\n"
    "  --isa ISA              kernel variant: ref, avx2, avx512, neon, ... (default EDGEKIT_ISA or best)\n"
    "  --stream               carry state across calls instead of resetting before each\n"
    "  --output-dir DIR       write DIR/<output>.npy (all or none; DIR and parents created)\n"
    "  --per-op               per-op times of the timed calls\n"
    "  --version              print {\"ek_run_version\": ...} and exit\n"
    "  -h, --help             this text\n"
    "\n"
    "exit codes: 0 success; 2 bad input or model ({\"error\": ...} on stdout); 1 internal failure\n";

std::string esc(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}

std::string shape_json(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

int fail(int code, const std::string& msg) {
  std::printf("{\"ek_run_version\": \"%s\", \"error\": %s}\n", kVersion, esc(msg).c_str());
  std::fprintf(stderr, "ek-run: error: %s\n", msg.c_str());
  return code;
}

struct Args {
  std::string model, graph, isa, output_dir, fill = "zeros";
  std::map<std::string, std::string> inputs;
  uint64_t seed = 0;
  long warmup = 1, iters = 10, threads = 1;
  bool stream = false, per_op = false, version = false, help = false;
};

bool parse_long(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// mkdir -p; appends each directory it created to *made (parents first) so a failure can undo it.
bool make_dirs(const std::string& dir, std::vector<std::string>* made) {
  struct stat sb;
  if (stat(dir.c_str(), &sb) == 0) return S_ISDIR(sb.st_mode);
  size_t slash = dir.find_last_not_of('/');
  slash = slash == std::string::npos ? std::string::npos : dir.rfind('/', slash);
  if (slash != std::string::npos && slash > 0 && !make_dirs(dir.substr(0, slash), made)) return false;
  if (mkdir(dir.c_str(), 0777) != 0)  // EEXIST: made meanwhile by someone else, fine if a directory
    return errno == EEXIST && stat(dir.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
  made->push_back(dir);
  return true;
}

// Returns "" on success, else the message for exit 2.
std::string parse_args(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (k == "--help" || k == "-h") a->help = true;
    else if (k == "--version") a->version = true;
    else if (k == "--stream") a->stream = true;
    else if (k == "--per-op") a->per_op = true;
    else if (k == "--graph") { if (!value(&a->graph)) return "--graph needs a value"; }
    else if (k == "--isa") { if (!value(&a->isa)) return "--isa needs a value"; }
    else if (k == "--output-dir") { if (!value(&a->output_dir)) return "--output-dir needs a value"; }
    else if (k == "--fill") {
      if (!value(&a->fill) || (a->fill != "zeros" && a->fill != "random")) return "--fill must be zeros or random";
    } else if (k == "--input") {
      if (!value(&v)) return "--input needs NAME=file.npy";
      size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) return "--input must be NAME=file.npy, got '" + v + "'";
      if (!a->inputs.emplace(v.substr(0, eq), v.substr(eq + 1)).second) return "--input " + v.substr(0, eq) + " given twice";
    } else if (k == "--seed") {
      long s;
      if (!value(&v) || !parse_long(v.c_str(), 0, 2147483647L, &s)) return "--seed must be an integer >= 0";
      a->seed = static_cast<uint64_t>(s);
    } else if (k == "--warmup") {
      if (!value(&v) || !parse_long(v.c_str(), 0, 1000000, &a->warmup)) return "--warmup must be an integer in 0..1000000";
    } else if (k == "--iters") {
      if (!value(&v) || !parse_long(v.c_str(), 1, 1000000, &a->iters)) return "--iters must be an integer in 1..1000000";
    } else if (k == "--threads") {
      if (!value(&v) || !parse_long(v.c_str(), 1, 256, &a->threads)) return "--threads must be an integer in 1..256";
    } else if (!k.empty() && k[0] == '-') {
      return "unknown option " + k;
    } else if (a->model.empty()) {
      a->model = k;
    } else {
      return "unexpected argument '" + k + "'";
    }
  }
  if (a->model.empty() && !a->version && !a->help) return "no model given";
  return "";
}

double us_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

// Fill value of --fill random: floats uniform in [-1, 1); integer inputs (token ids, indices)
// stay 0 because their valid range is model-specific.
void fill_random(const edgekit::TensorDesc& d, std::mt19937_64& rng, std::vector<uint8_t>* buf) {
  if (d.dtype != "f32") return;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto* f = reinterpret_cast<float*>(buf->data());
  for (size_t i = 0; i < d.bytes / 4; ++i) f[i] = u(rng);
}

int run(const Args& a) {
  auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<const edgekit::Model> model;
  Status st = edgekit::Model::load(a.model, &model);
  if (!st.ok()) return fail(2, st.message());
  edgekit::SessionOptions opts;
  opts.graph = a.graph;
  opts.threads = static_cast<int>(a.threads);
  opts.isa = a.isa;
  std::unique_ptr<edgekit::Session> s;
  if (!(st = edgekit::Session::create(model, opts, &s)).ok()) return fail(2, st.message());
  double load_us = us_since(t0);

  for (const auto& kv : a.inputs) {
    bool known = false;
    for (const auto& d : s->inputs()) known |= d.name == kv.first;
    if (!known) return fail(2, "graph '" + s->graph() + "' has no input '" + kv.first + "'");
  }
  std::mt19937_64 rng(a.seed);
  for (const auto& d : s->inputs()) {
    auto it = a.inputs.find(d.name);
    if (it != a.inputs.end()) {
      edgekit::tools::NpyArray arr;
      if (!(st = edgekit::tools::read_npy(it->second, &arr)).ok()) return fail(2, st.message());
      st = s->set_input(d.name, arr.dtype, arr.shape, arr.data.data(), arr.data.size());
    } else {
      std::vector<uint8_t> buf(d.bytes, 0);
      if (a.fill == "random") fill_random(d, rng, &buf);
      st = s->set_input(d.name, d.dtype, d.shape, buf.data(), buf.size());
    }
    if (!st.ok()) return fail(2, st.message());
  }

  // Without --stream every call starts from zero state (reset outside the timed region).
  auto call = [&](double* us) {
    if (!a.stream) s->reset();
    auto c0 = std::chrono::steady_clock::now();
    Status r = s->run();
    *us = us_since(c0);
    return r;
  };
  double first_us = 0, t = 0;
  if (!(st = call(&first_us)).ok()) return fail(2, st.message());
  for (long i = 0; i < a.warmup; ++i)
    if (!(st = call(&t)).ok()) return fail(2, st.message());
  s->reset_profile();
  std::vector<double> iters;
  for (long i = 0; i < a.iters; ++i) {
    if (!(st = call(&t)).ok()) return fail(2, st.message());
    iters.push_back(t);
  }

  std::string outputs;
  std::vector<std::string> made;  // directories and files this run created, undone on failure
  auto undo = [&made](int code, const std::string& msg) {
    for (auto it = made.rbegin(); it != made.rend(); ++it) std::remove(it->c_str());
    return fail(code, msg);
  };
  if (!a.output_dir.empty()) {
    for (const auto& d : s->outputs())  // checked before anything is written: all or none
      if (d.name.find('/') != std::string::npos) return fail(2, "output name '" + d.name + "' is not a file name");
    if (!make_dirs(a.output_dir, &made)) return undo(2, a.output_dir + ": cannot create directory");
  }
  for (size_t i = 0; i < s->outputs().size(); ++i) {
    const auto& d = s->outputs()[i];
    std::string file = "null";
    if (!a.output_dir.empty()) {
      std::string path = a.output_dir + "/" + d.name + ".npy";
      if (!(st = edgekit::tools::write_npy(path, d.dtype, d.shape, s->output_data(i), d.bytes)).ok())
        return undo(2, st.message());
      made.push_back(path);
      file = esc(path);
    }
    outputs += std::string(i ? ", " : "") + esc(d.name) + ": {\"shape\": " + shape_json(d.shape) +
               ", \"dtype\": " + esc(d.dtype) + ", \"file\": " + file + "}";
  }

  std::string per_op;
  if (a.per_op)
    for (const auto& p : s->profile())
      per_op += std::string(per_op.empty() ? "" : ", ") + "{\"op\": " + esc(p.op) + ", \"name\": " + esc(p.name) +
                ", \"calls\": " + std::to_string(p.calls) + ", \"total_us\": " + num(p.total_us) + "}";
  std::string it;
  for (size_t i = 0; i < iters.size(); ++i) it += (i ? ", " : "") + num(iters[i]);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  char crc[16];
  std::snprintf(crc, sizeof crc, "0x%08x", model->crc32());
  std::printf(
      "{\"ek_run_version\": \"%s\", \"model\": %s, \"model_bytes\": %llu, \"model_crc32\": \"%s\", "
      "\"graph\": %s, \"isa\": %s, \"kernel\": %s, \"threads\": %d, \"stream\": %s, "
      "\"arena_bytes\": %zu, \"naive_bytes\": %zu, \"state_bytes\": %zu, "
      "\"load_us\": %s, \"first_us\": %s, \"warmup\": %ld, \"iters_us\": [%s], \"per_op\": [%s], "
      "\"peak_rss_kb\": %ld, \"outputs\": {%s}}\n",
      kVersion, esc(a.model).c_str(), static_cast<unsigned long long>(model->file_bytes()), crc,
      esc(s->graph()).c_str(), esc(s->isa()).c_str(), esc(s->kernel()).c_str(), s->threads(),
      a.stream ? "true" : "false", s->arena_bytes(), s->naive_bytes(), s->state_bytes(), num(load_us).c_str(),
      num(first_us).c_str(), a.warmup, it.c_str(), per_op.c_str(), ru.ru_maxrss, outputs.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  std::string err = parse_args(argc, argv, &a);
  if (!err.empty()) {
    std::fputs(kUsage, stderr);
    return fail(2, err);
  }
  if (a.help) {
    std::fputs(kUsage, stdout);
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (a.version) {
    std::printf("{\"ek_run_version\": \"%s\"}\n", kVersion);
    return 0;
  }
  try {
    return run(a);
  } catch (const std::exception& e) {
    return fail(1, std::string("internal error: ") + e.what());
  }
}
