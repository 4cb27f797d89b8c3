// policy/free_space.h: which entries to evict (LRU) so a free-space floor holds.
//
// cache.min_free_percent / min_free_gb: the filesystem or pool that holds the entries keeps
// at least max(percent of its total, GiB) free. Before a fill the floor must hold with the
// incoming bytes written; the eviction pass restores it (incoming 0). Only what an
// eviction really frees counts: an entry kept for its clones (deferred) frees nothing, so
// the caller gives it freed_bytes 0 and it is never chosen for the floor.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace cachemgr::policy {

struct FreeSpace {
  uint64_t total_bytes = 0;
  uint64_t avail_bytes = 0;
};

struct FloorLimits {
  double min_free_percent = 0;  // of total_bytes; 0 = off
  double min_free_gb = 0;       // GiB; 0 = off
  bool enabled() const { return min_free_percent > 0 || min_free_gb > 0; }
};

// The floor in bytes: the larger of the two (0 when both are off).
uint64_t FloorBytes(const FreeSpace& space, const FloorLimits& limits);

struct FloorCandidate {
  int64_t id = 0;
  uint64_t freed_bytes = 0;  // what evicting it gives back (0: kept for clones)
  bool evictable = true;     // false: not ready, being filled, the incoming entry itself
};

struct FloorPlan {
  bool holds = true;             // after the victims and the incoming bytes, avail >= floor
  std::vector<int64_t> victims;  // least recently used first; empty when it cannot hold
                                 // and `evict_partial` was not asked
  uint64_t floor_bytes = 0;
  uint64_t avail_before = 0;
  uint64_t avail_after = 0;     // avail_before + freed - incoming (0 when below)
  uint64_t freeable_bytes = 0;  // what the candidates read could free in all
  uint64_t shortfall = 0;       // bytes missing for the floor to hold (0 when it holds)
};

// `next_lru` yields candidates least recently used first, nullopt when there are no more;
// it is called only while the floor does not hold. `incoming` is what the caller is about
// to write (0 for the pass). When the floor cannot hold even with every candidate gone,
// the plan evicts nothing (a fill that will not be cached must not empty the cache), unless
// `evict_partial` (the pass: every byte back counts).
FloorPlan PlanFloor(const FreeSpace& space, const FloorLimits& limits, uint64_t incoming,
                    const std::function<std::optional<FloorCandidate>()>& next_lru,
                    bool evict_partial = false);

}  // namespace cachemgr::policy
