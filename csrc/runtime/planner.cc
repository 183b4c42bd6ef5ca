#include "runtime/planner.h"

#include <algorithm>
#include <numeric>

namespace edgekit::runtime {

namespace {
size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }
}  // namespace

ArenaPlan plan_arena(const std::vector<ArenaRequest>& reqs, size_t align) {
  ArenaPlan plan;
  const size_t n = reqs.size();
  plan.offsets.assign(n, 0);
  std::vector<size_t> size(n);
  for (size_t i = 0; i < n; ++i) {
    size[i] = round_up(reqs[i].bytes, align);
    plan.naive_bytes += size[i];
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (size[a] != size[b]) return size[a] > size[b];
    return reqs[a].first < reqs[b].first;
  });

  std::vector<size_t> placed;  // request indices, in placement order
  std::vector<size_t> overlapping;
  for (size_t r : order) {
    overlapping.clear();
    for (size_t p : placed)
      if (reqs[p].first <= reqs[r].last && reqs[r].first <= reqs[p].last) overlapping.push_back(p);
    std::sort(overlapping.begin(), overlapping.end(),
              [&](size_t a, size_t b) { return plan.offsets[a] < plan.offsets[b]; });
    // First gap (in offset order) between conflicting requests that is large enough.
    size_t candidate = 0;
    for (size_t p : overlapping) {
      if (plan.offsets[p] >= candidate + size[r]) break;
      candidate = std::max(candidate, plan.offsets[p] + size[p]);
    }
    plan.offsets[r] = candidate;
    plan.arena_bytes = std::max(plan.arena_bytes, candidate + size[r]);
    placed.push_back(r);
  }

  int last_op = -1;
  for (const auto& q : reqs) last_op = std::max(last_op, q.last);
  for (int op = 0; op <= last_op; ++op) {
    size_t live = 0;
    for (size_t i = 0; i < n; ++i)
      if (reqs[i].first <= op && op <= reqs[i].last) live += size[i];
    plan.peak_live_bytes = std::max(plan.peak_live_bytes, live);
  }
  return plan;
}

}  // namespace edgekit::runtime
