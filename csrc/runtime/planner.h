// Arena planner: every activation of a graph and every op's scratch share one buffer.
//
// Algorithm (greedy by size over live ranges, as in TFLite Micro's GreedyMemoryPlanner):
// each request has a size and a live range [first, last] of op indices (an activation lives
// from the op that writes it to the last op that reads it; an op's scratch only during that
// op). Requests are placed largest first (ties: earlier first, then request order, so the
// plan is deterministic). A request goes at the lowest 64-byte-aligned offset where it does
// not overlap, in bytes, any already placed request whose live range intersects its own.
// Ranges are inclusive at both ends, so an op's output never shares bytes with its inputs
// or its scratch. The arena is the highest end offset. O(n^2 log n) for n requests, run
// once at load; graphs here have at most a few thousand values.
//
// The result is not optimal in general (that is NP-hard: dynamic storage allocation), but on
// layer-by-layer networks it is close to the peak of live bytes, which is a lower bound;
// `naive_bytes` (no reuse) is reported next to it.
#pragma once
#include <cstddef>
#include <vector>

namespace edgekit::runtime {

struct ArenaRequest {
  size_t bytes = 0;
  int first = 0, last = 0;  // live over ops [first, last]
};

struct ArenaPlan {
  std::vector<size_t> offsets;  // per request, multiples of `align`
  size_t arena_bytes = 0;       // end of the highest placed request, rounded up to `align`
  size_t naive_bytes = 0;       // sum of the aligned sizes
  size_t peak_live_bytes = 0;   // max over ops of the aligned live bytes: a lower bound
};

ArenaPlan plan_arena(const std::vector<ArenaRequest>& requests, size_t align = 64);

}  // namespace edgekit::runtime
