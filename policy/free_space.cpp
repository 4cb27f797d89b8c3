#include "policy/free_space.h"

#include <algorithm>
#include <cmath>

namespace cachemgr::policy {

uint64_t FloorBytes(const FreeSpace& space, const FloorLimits& limits) {
  uint64_t by_percent = 0;
  if (limits.min_free_percent > 0) {
    by_percent = static_cast<uint64_t>(
        std::ceil(static_cast<double>(space.total_bytes) * limits.min_free_percent / 100.0));
  }
  uint64_t by_gb = 0;
  if (limits.min_free_gb > 0) {
    by_gb = static_cast<uint64_t>(std::llround(limits.min_free_gb * 1024.0 * 1024.0 * 1024.0));
  }
  return std::max(by_percent, by_gb);
}

FloorPlan PlanFloor(const FreeSpace& space, const FloorLimits& limits, uint64_t incoming,
                    const std::function<std::optional<FloorCandidate>()>& next_lru,
                    bool evict_partial) {
  FloorPlan plan;
  plan.floor_bytes = FloorBytes(space, limits);
  plan.avail_before = space.avail_bytes;
  // What must be free before the write for the floor to hold after it.
  const uint64_t need = limits.enabled() ? plan.floor_bytes + incoming : 0;
  uint64_t avail = space.avail_bytes;
  while (avail < need) {
    auto c = next_lru();
    if (!c) break;
    if (!c->evictable || c->freed_bytes == 0) continue;  // evicting it gives nothing back
    plan.victims.push_back(c->id);
    plan.freeable_bytes += c->freed_bytes;
    avail += c->freed_bytes;
  }
  plan.holds = avail >= need;
  plan.shortfall = plan.holds ? 0 : need - avail;
  if (!plan.holds && !evict_partial) {
    plan.victims.clear();
    avail = space.avail_bytes;
  }
  plan.avail_after = avail >= incoming ? avail - incoming : 0;
  return plan;
}

}  // namespace cachemgr::policy
