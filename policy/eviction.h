// policy/eviction.h: which entries to evict (LRU) so the cache limits hold.
//
// Cinder's image_volume_cache_max_size_gb / max_count: 0 means unlimited. An image
// larger than max size on its own is served but never cached (an admission decision):
// evicting everything else would not make it fit. Entries that are not ready or are
// being filled are never victims.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace cachemgr::policy {

struct EvictionCandidate {
  int64_t id = 0;
  uint64_t provisioned_bytes = 0;  // virtual size
  uint64_t allocated_bytes = 0;    // bytes really used on the backend
  int64_t last_used = 0;           // unix seconds; ties are broken by id (older first)
  bool evictable = true;           // false: not ready, being filled, or otherwise busy
};

struct EvictionLimits {
  double max_size_gb = 0;    // GiB; 0 = unlimited
  uint64_t max_count = 0;    // entries; 0 = unlimited
  bool count_allocated = false;  // count allocated bytes instead of provisioned
};

struct EvictionPlan {
  bool admit = true;            // false: the incoming entry must not be cached
  std::vector<int64_t> victims; // least recently used first
  bool limits_hold = true;      // false: even after the victims the limits are exceeded
                                // (the rest is not evictable)
  uint64_t bytes_before = 0, bytes_after = 0;  // as counted, incoming included in after
  uint64_t count_before = 0, count_after = 0;
};

uint64_t MaxBytes(const EvictionLimits& limits);  // 0 = unlimited

// `incoming_bytes`: the size of an entry about to be admitted (counted as the
// accounting says), or nullopt for a pass that admits nothing.
EvictionPlan PlanEviction(const std::vector<EvictionCandidate>& entries,
                          const EvictionLimits& limits,
                          std::optional<uint64_t> incoming_bytes = std::nullopt);

// The same plan without every entry in memory: `totals` sums all entries (evictable or
// not, as counted by limits.count_allocated), and `next_lru` yields the evictable ones
// least recently used first (ties: older id first), nullopt when there are no more. It
// is called only while the limits are exceeded, so a caller backed by a sorted query
// reads only as many rows as there are victims (plus one).
struct EvictionTotals {
  uint64_t count = 0;
  uint64_t bytes = 0;
};
EvictionPlan PlanEvictionLru(const EvictionTotals& totals,
                             const std::function<std::optional<EvictionCandidate>()>& next_lru,
                             const EvictionLimits& limits,
                             std::optional<uint64_t> incoming_bytes = std::nullopt);

}  // namespace cachemgr::policy
