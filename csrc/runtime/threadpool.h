// A small fork-join pool for intra-op parallelism (declared in op.h, owned by a Session).
//
// Why not std::async or OpenMP: ops call parallel_for many times per streaming step (every
// q-op splits its output rows), so the pool keeps its threads parked on a condition variable
// instead of creating them per call, and needs no OpenMP runtime in the static device build.
// The caller's thread takes part in the work, so a pool of T threads starts T-1 workers.
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/op.h"

namespace edgekit::runtime {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1; 1 starts no worker
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }
  // fn(ctx, i) for every i in [0, n), spread over all threads; returns when all are done.
  // Not reentrant: an fn must not call run on the same pool (ops do not nest).
  void run(int n, void (*fn)(void*, int), void* ctx);

 private:
  void worker_loop();
  void drain();  // take indices until none is left

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;  // bumped per run so a worker joins each job once
  bool stop_ = false;
  int busy_ = 0;             // workers still inside the current job
  // The current job; written under mu_ before generation_ changes.
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  int n_ = 0;
  std::atomic<int> next_{0};
};

}  // namespace edgekit::runtime
