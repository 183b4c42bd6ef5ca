// A loaded EKM model: the file mapped read-only and validated once, shared by sessions.
//
// Loading never trusts the file: the container is checked by format/ekm.h, and every op's
// output shapes are recomputed with its `OpDef::infer` and compared with the stored ones, so
// a Session built on a Model can plan memory from the stored shapes without re-checking.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edgekit/status.h"

namespace edgekit {
namespace ekm {
struct File;
}

class Model {
 public:
  // mmap(PROT_READ) of `path`; the mapping lives as long as the Model.
  static Status load(const std::string& path, std::shared_ptr<const Model>* out);
  // The same from memory (copied into a 64-byte aligned buffer): tests and the fuzz target.
  static Status from_bytes(const void* data, size_t len, std::shared_ptr<const Model>* out);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ekm::File& file() const { return *file_; }
  std::vector<std::string> graph_names() const;
  const std::string& meta_json() const;
  uint64_t file_bytes() const;
  uint32_t crc32() const;  // the stored (and verified) checksum

 private:
  Model();
  Status init(const uint8_t* data, size_t len);

  void* map_ = nullptr;  // mmap'd file, or null
  size_t map_len_ = 0;
  std::unique_ptr<uint8_t[]> owned_;  // from_bytes: the copy (over-allocated for alignment)
  std::unique_ptr<ekm::File> file_;
};

}  // namespace edgekit
