#include "policy/eviction.h"

#include <algorithm>
#include <cmath>

namespace cachemgr::policy {

uint64_t MaxBytes(const EvictionLimits& limits) {
  if (limits.max_size_gb <= 0) return 0;
  return static_cast<uint64_t>(std::llround(limits.max_size_gb * 1024.0 * 1024.0 * 1024.0));
}

EvictionPlan PlanEviction(const std::vector<EvictionCandidate>& entries,
                          const EvictionLimits& limits, std::optional<uint64_t> incoming_bytes) {
  EvictionTotals totals;
  totals.count = entries.size();
  std::vector<const EvictionCandidate*> lru;
  for (const auto& e : entries) {
    totals.bytes += limits.count_allocated ? e.allocated_bytes : e.provisioned_bytes;
    if (e.evictable) lru.push_back(&e);
  }
  std::sort(lru.begin(), lru.end(), [](const EvictionCandidate* a, const EvictionCandidate* b) {
    return a->last_used != b->last_used ? a->last_used < b->last_used : a->id < b->id;
  });
  size_t pos = 0;
  return PlanEvictionLru(
      totals,
      [&]() -> std::optional<EvictionCandidate> {
        if (pos == lru.size()) return std::nullopt;
        return *lru[pos++];
      },
      limits, incoming_bytes);
}

EvictionPlan PlanEvictionLru(const EvictionTotals& totals,
                             const std::function<std::optional<EvictionCandidate>()>& next_lru,
                             const EvictionLimits& limits, std::optional<uint64_t> incoming_bytes) {
  const uint64_t max_bytes = MaxBytes(limits);
  auto bytes_of = [&](const EvictionCandidate& c) {
    return limits.count_allocated ? c.allocated_bytes : c.provisioned_bytes;
  };

  EvictionPlan plan;
  plan.bytes_before = totals.bytes;
  plan.count_before = totals.count;

  if (incoming_bytes && max_bytes != 0 && *incoming_bytes > max_bytes) {
    plan.admit = false;
    incoming_bytes.reset();  // the rest is a plain pass: nothing is evicted for it
  }

  uint64_t bytes = plan.bytes_before + incoming_bytes.value_or(0);
  uint64_t count = plan.count_before + (incoming_bytes ? 1 : 0);
  auto over = [&] {
    return (max_bytes != 0 && bytes > max_bytes) ||
           (limits.max_count != 0 && count > limits.max_count);
  };

  while (over()) {
    auto e = next_lru();
    if (!e) break;
    if (!e->evictable) continue;
    plan.victims.push_back(e->id);
    bytes -= bytes_of(*e);
    count -= 1;
  }
  plan.limits_hold = !over();
  plan.bytes_after = bytes;
  plan.count_after = count;
  return plan;
}

}  // namespace cachemgr::policy
