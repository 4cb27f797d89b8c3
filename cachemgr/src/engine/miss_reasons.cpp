// Why each miss happened. Every way an entry ends notes its fate in the index (what last
// happened to it: "cached" once ready, "capacity" or "stale" when evicted); the image's
// next miss reads it: no fate is a cold miss, an eviction's fate is its reason, and a
// fate still "cached" means the entry vanished without this cache removing it (removed
// by hand, or by another host sharing the pool): lost. Too large images are the
// uncached path's, which labels its misses itself.
#include <spdlog/spdlog.h>

#include "engine/cache_impl.h"

namespace cachemgr::engine {

namespace {

constexpr const char* kFateCached = "cached";
// Every reason a miss can have, in the order `stats` lists them.
constexpr const char* kMissReasons[] = {"cold", "capacity", "stale", "too_big", "lost"};

// The fate an eviction of `kind` leaves: the source's verdicts are stale; every other
// eviction (max_size, max_count, free space) was made by a limit.
std::string FateOf(const std::string& what) {
  if (what == kFateCached) return kFateCached;
  if (what == "stale" || what == "gone") return "stale";
  return "capacity";
}

}  // namespace

std::string CacheImpl::MissReason(const std::string& image_id) {
  std::optional<std::string> fate;
  try {
    fate = WithIndex(
        [&](index::Index& ix) { return ix.EntryFate(backend_kind_, location_, image_id); });
  } catch (const std::exception& e) {
    log_->warn("miss reason not read image={} error={}", image_id, e.what());
  }
  if (!fate) return "cold";
  if (*fate == kFateCached) return "lost";
  return *fate;
}

void CacheImpl::NoteFate(const std::string& image_id, const std::string& what) {
  const std::string fate = FateOf(what);
  try {
    WithIndex([&](index::Index& ix) {
      ix.NoteEntryFate(backend_kind_, location_, image_id, Now(), fate);
    });
  } catch (const std::exception& e) {
    log_->warn("entry fate not recorded image={} fate={} error={}", image_id, fate, e.what());
  }
}

void CacheImpl::MissReasonStatsInto(Stats* stats) {
  const auto totals = WithIndex([&](index::Index& ix) { return ix.MissTotalsByReason(); });
  for (const char* reason : kMissReasons) {
    MissReasonStats m;
    for (const auto& t : totals) {
      if (t.reason == reason) m = {t.count, t.bytes};
    }
    stats->misses_by_reason.emplace_back(reason, m);
  }
  // Misses recorded before reasons were (schema 008), so the reasons add up to misses.
  for (const auto& t : totals) {
    if (t.reason == "unknown") stats->misses_by_reason.push_back({"unknown", {t.count, t.bytes}});
  }
}

}  // namespace cachemgr::engine
