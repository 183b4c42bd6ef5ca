// The EKM model container (docs/format.md §2): a bounds-checked reader.
//
// `parse_ekm` checks every size, offset, count, index, enum and string reference of the file
// before it is used, validates each packed weight with the §1 rules (`parse_packed_linear`)
// and checks the graphs' data flow (each op reads only constants, the graph's inputs and
// states, or outputs of earlier ops of the same graph). What it cannot check is whether an
// op's stored output shapes follow from its inputs: that needs the op implementations, so the
// runtime's loader (runtime/model.cc) does it with `OpDef::infer`.
//
// The parsed structures point into the caller's buffer (constants, packed sections): the
// buffer must outlive them and start at a 64-byte-aligned address, so that every tensor's
// data is aligned to 64 as the format promises.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "edgekit/status.h"
#include "format/packed.h"
#include "runtime/op.h"

namespace edgekit::ekm {

constexpr uint16_t kVersionMajor = 1;
constexpr uint32_t kHeaderBytes = 64;
constexpr uint32_t kMaxSections = 64;

enum SectionKind : uint32_t {
  kStrings = 1, kTensors = 2, kOperands = 3, kInts = 4, kFloats = 5,
  kOps = 6, kGraphs = 7, kMeta = 8, kData = 9,
};

enum TensorKind : uint8_t { kConst = 1, kInput = 2, kOutput = 3, kActivation = 4, kState = 5 };

struct Tensor {
  std::string name;
  TensorKind kind = kActivation;
  runtime::TensorInfo info;
  const uint8_t* data = nullptr;  // constants only: into the caller's buffer
  size_t data_bytes = 0;
  const PackedLinear* packed = nullptr;  // packed constants: the validated §1 view
};

struct Op {
  int code = 0;
  std::string name;              // the PyTorch module path
  std::vector<int32_t> inputs;   // tensor indices, -1 = absent optional operand
  std::vector<int32_t> outputs;
  std::vector<int64_t> ints;
  std::vector<float> floats;
};

struct Graph {
  std::string name;
  int32_t op_first = 0, op_count = 0;
  std::vector<int32_t> inputs, outputs;
  std::vector<std::pair<int32_t, int32_t>> states;  // (state, next value)
};

struct File {
  uint16_t version_minor = 0;
  uint64_t file_bytes = 0;
  uint32_t crc32 = 0;
  std::vector<Tensor> tensors;
  std::vector<Op> ops;
  std::vector<Graph> graphs;
  std::string meta;  // the META JSON text, valid UTF-8, not parsed here
  std::vector<std::unique_ptr<PackedLinear>> packed;  // owned views for Tensor::packed

  int find_graph(const std::string& name) const;  // -1 if absent
};

// Arity of an op code per docs/format.md §2.6 (the C++ mirror of edgekit.export.ir.OPS).
struct OpArity {
  int code;
  int min_in, max_in;  // max_in -1: unbounded
  int n_out;
  int n_ints;          // -1: any number
  int n_floats;
  uint32_t optional;   // bit i: input i may be absent (-1)
};
const OpArity* find_arity(int code);  // nullptr for an unknown code

// Parse and validate [buf, buf + len). `buf` must be 64-byte aligned.
Status parse_ekm(const uint8_t* buf, size_t len, File* out);

// CRC-32 as zlib.crc32 (IEEE 802.3, reflected, init and final xor 0xFFFFFFFF).
uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0);

// True when [p, p+n) is well-formed UTF-8 (no overlongs, surrogates or values > U+10FFFF).
bool valid_utf8(const char* p, size_t n);

}  // namespace edgekit::ekm
