// Fuzz target: the EKM reader, graph validation (every op's infer), session creation (planner,
// op prepare) and one run of each graph with zero inputs. libFuzzer calls this entry point
// (-DEDGEKIT_FUZZ=libfuzzer with clang); driver.cc calls it when only gcc is available.
//
// The input's file_bytes and CRC-32 fields are rewritten to match it before parsing: a random
// mutation almost never keeps the checksum valid, and without this every input would stop at
// the checksum test instead of reaching the checks behind it (the checksum itself is covered
// by tests/cpp/test_ekm.cc and the corrupt-file suite).
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "edgekit/model.h"
#include "edgekit/session.h"
#include "format/ekm.h"

namespace {

// Models whose non-constant tensors need more than this are loaded and validated but not
// run: the fuzzer is after memory errors, not after allocating what the file asks for.
constexpr uint64_t kMaxRunBytes = 16u << 20;

uint64_t activation_bytes(const edgekit::ekm::File& f) {
  uint64_t total = 0;
  for (const auto& t : f.tensors) {
    if (t.kind == edgekit::ekm::kConst) continue;
    uint64_t n = 8;
    for (int i = 0; i < t.info.rank; ++i) n *= static_cast<uint64_t>(t.info.dims[i]);
    total += n;
  }
  return total;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  if (size >= edgekit::ekm::kHeaderBytes) {
    uint64_t len = size;
    std::memcpy(b.data() + 24, &len, 8);
    uint32_t crc = edgekit::ekm::crc32(b.data() + 64, size - 64);
    std::memcpy(b.data() + 32, &crc, 4);
  }
  std::shared_ptr<const edgekit::Model> model;
  if (!edgekit::Model::from_bytes(b.data(), b.size(), &model).ok()) return 0;
  if (activation_bytes(model->file()) > kMaxRunBytes) return 0;
  for (const auto& name : model->graph_names()) {
    edgekit::SessionOptions opts;
    opts.graph = name;
    opts.isa = "ref";  // the portable kernels: deterministic under any host CPU
    std::unique_ptr<edgekit::Session> s;
    if (!edgekit::Session::create(model, opts, &s).ok()) continue;
    (void)s->run();
    (void)s->run();  // a second call reads the states written by the first
  }
  return 0;
}
