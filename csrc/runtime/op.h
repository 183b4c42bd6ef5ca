// The op interface between the graph executor (runtime/*.cc) and the ops (runtime/ops/op_*.cc).
//
// Every op of docs/format.md §2.6 is one `OpDef` defined in its own file
// `ops/op_<name>.cc` and listed in `ops/registry.cc`. The executor never looks inside an op:
// at load it calls `infer` (which also validates dtypes, ranks and attributes — the file's
// stored output shapes must equal what `infer` computes), then `scratch_bytes` to size the op's
// scratch in the arena, then `prepare` once (e.g. parse packed weights), and `eval` per call.
// `eval` must not allocate on the heap; it gets all memory from the arena and its scratch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "edgekit/status.h"

namespace edgekit::kernels {
struct LinearVariant;
}

namespace edgekit::runtime {

enum class DType : uint8_t { F32 = 1, I32 = 2, I8 = 3, U8 = 4, I64 = 5, Packed = 6 };
constexpr int kMaxRank = 6;

// Bytes per element; 1 for Packed (data is a byte buffer). Inline so that the format reader
// can size tensors without linking the ops.
inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::I64: return 8;
    default: return 1;
  }
}

// A tensor as an op sees it: static shape, dtype, and (at eval) its data pointer.
struct TensorInfo {
  DType dtype = DType::F32;
  int rank = 0;
  int64_t dims[kMaxRank] = {0, 0, 0, 0, 0, 0};
  int64_t numel() const;
  size_t nbytes() const;  // numel * dtype_size (for Packed: not meaningful; use `bytes`)
};

struct TensorRef {
  TensorInfo info;
  void* data = nullptr;         // arena, state buffer, input buffer or mmap'd constant
  size_t bytes = 0;             // size of `data` (for Packed: the serialized §1 buffer)
  // For Packed constants: the parsed `PackedLinear` (edgekit::PackedLinear*), set by the
  // executor at load after validating the buffer with the docs/format.md §1 rules.
  const void* prepared = nullptr;
  const float* cf() const { return static_cast<const float*>(data); }
  float* f() const { return static_cast<float*>(data); }
};

// Everything an op knows at load time, before memory exists.
struct OpSignature {
  std::vector<const TensorInfo*> inputs;   // nullptr where an optional operand is absent
  std::vector<bool> input_is_const;        // constants may be inspected in `prepare`
  // Per input: the parsed `PackedLinear*` of a packed constant once the executor has
  // validated it (before `scratch_bytes`), else nullptr. q-ops size their accumulators and
  // the kernel's scratch from it (groups, sparsity); without it they use an upper bound.
  std::vector<const void*> input_prepared;
  const int64_t* ints = nullptr;
  int n_ints = 0;
  const float* floats = nullptr;
  int n_floats = 0;
};

// A small fork-join pool (owned by the session): run(fn, n) calls fn(i) for i in [0, n)
// spread over the session's threads and returns when all are done.
class ThreadPool;
void parallel_for(ThreadPool* pool, int n, void (*fn)(void* ctx, int i), void* ctx);

struct OpContext {
  std::vector<TensorRef*> inputs;    // nullptr where an optional operand is absent
  std::vector<TensorRef*> outputs;
  const int64_t* ints = nullptr;
  int n_ints = 0;
  const float* floats = nullptr;
  int n_floats = 0;
  void* scratch = nullptr;           // 64-byte aligned, scratch_bytes(...) long
  size_t scratch_bytes = 0;
  void* state = nullptr;             // what `prepare` returned (owned by the executor)
  const kernels::LinearVariant* linear = nullptr;  // the session's kernel variant
  ThreadPool* pool = nullptr;        // may be null (single thread)
  int threads = 1;
};

struct OpDef {
  int code;                // docs/format.md §2.6
  const char* name;
  // Check input dtypes/ranks/attributes and compute output infos. Errors name the problem
  // ("qlinear: bias has 10 elements, expected 16"); the executor prefixes the op's module path.
  Status (*infer)(const OpSignature& sig, std::vector<TensorInfo>* outputs);
  // Arena scratch this op needs per call (0 if none). Called after infer succeeded.
  size_t (*scratch_bytes)(const OpSignature& sig, const std::vector<TensorInfo>& outputs,
                          const kernels::LinearVariant* linear, int threads);
  // Once per session after constants are mapped: may build per-op state (e.g. parsed packed
  // weights); null for ops that need none. `*state` is freed with `release`.
  Status (*prepare)(const OpSignature& sig, const std::vector<const TensorRef*>& const_inputs,
                    void** state);
  void (*release)(void* state);
  // Run once. Returns a Status only for data-dependent errors (e.g. gather index out of range).
  Status (*eval)(const OpContext& ctx);
};

// All ops, looked up by code; nullptr for an unknown code.
const OpDef* find_op(int code);
const std::vector<const OpDef*>& all_ops();

}  // namespace edgekit::runtime
