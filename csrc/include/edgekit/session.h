// Running one graph of a Model: the C++ side of edgekit.runtime.Session and of ek-run.
//
// A Session owns everything a call needs, allocated at creation: the activation arena (see
// runtime/planner.h), one buffer per graph input, output and state, per-op scratch, prepared
// op state and an optional thread pool. `run()` evaluates the ops in order, then copies each
// state's next value into the state, so a sequence of `run()`s is a streaming run; `reset()`
// zeroes the states. Not thread-safe: one caller at a time per Session.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edgekit/model.h"
#include "edgekit/status.h"

namespace edgekit {

struct SessionOptions {
  std::string graph;  // empty: the only graph of the model
  int threads = 1;    // 1..256; >1 starts a pool of threads-1 workers
  std::string isa;    // empty: EDGEKIT_ISA or the best the CPU supports (dispatch.h)
};

struct TensorDesc {
  std::string name;
  std::string dtype;  // "f32", "i32", "i8", "u8", "i64"
  std::vector<int64_t> shape;
  size_t bytes = 0;
};

struct OpProfile {
  std::string op;    // op type ("qlinear")
  std::string name;  // module path
  uint64_t calls = 0;
  double total_us = 0;
};

class Session {
 public:
  static Status create(std::shared_ptr<const Model> model, const SessionOptions& opts,
                       std::unique_ptr<Session>* out);
  ~Session();

  const std::string& graph() const;
  const std::vector<TensorDesc>& inputs() const;
  const std::vector<TensorDesc>& outputs() const;
  const std::vector<TensorDesc>& states() const;
  size_t arena_bytes() const;   // planned arena (activations + op scratch)
  size_t naive_bytes() const;   // the same without reuse: sum of all activations and scratch
  size_t state_bytes() const;
  const char* isa() const;      // the linear kernel variant's ISA
  const char* kernel() const;   // and its full name
  int threads() const;

  // Copy in one input; its dtype and shape must equal the declared ones exactly.
  Status set_input(const std::string& name, const std::string& dtype,
                   const std::vector<int64_t>& shape, const void* data, size_t bytes);
  Status run();  // evaluate once with the current inputs and states, then advance the states
  const void* output_data(size_t i) const;
  void reset();  // zero all states
  const void* state_data(size_t i) const;
  Status set_state(const std::string& name, const std::string& dtype,
                   const std::vector<int64_t>& shape, const void* data, size_t bytes);
  std::vector<OpProfile> profile() const;
  void reset_profile();

  struct Impl;

 private:
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgekit
