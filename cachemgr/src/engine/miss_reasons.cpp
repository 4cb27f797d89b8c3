// Why each miss happened. Every way an entry ends notes its fate (what last happened to
// it: "cached" once ready, "capacity" or "stale" when evicted), in this host's index and,
// for fills and evictions, in the pool's table `fates` that every host sharing the pool
// reads; the image's next miss takes the newer of the two: none is a cold miss, an
// eviction's fate is its reason, and a fate still "cached" means the entry vanished
// without any host's cache removing it (removed by hand): lost. Too large images are the
// uncached path's, which labels its misses itself.
//
//   fates   entry name -> "<unix seconds> <fate> <host>"; pruned by the pass like the
//           events (age, then count), never while the entry's object is there.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <sstream>
#include <vector>

#include "engine/cache_impl.h"
#include "engine/naming.h"
#include "engine/shared_tables.h"

namespace cachemgr::engine {

namespace {

constexpr const char* kFates = kFatesTable;
// The index's pass state: when this host last pruned the pool's fates (unix seconds).
constexpr const char* kFatesPrunedAt = "fates_pruned_at";
constexpr int64_t kFatesPruneEvery = int64_t{60} * 60;
constexpr const char* kFateCached = "cached";
// Every reason a miss can have, in the order `stats` lists them.
constexpr const char* kMissReasons[] = {"cold", "capacity", "stale", "too_big", "lost"};
constexpr int64_t kSecondsPerDay = 86400;

// The fate an eviction of `kind` leaves: the source's verdicts are stale; every other
// eviction (max_size, max_count, free space) was made by a limit.
std::string FateOf(const std::string& what) {
  if (what == kFateCached) return kFateCached;
  if (what == "stale" || what == "gone") return "stale";
  return "capacity";
}

// "<unix seconds> <fate> <host>" as the pool's table holds it; nullopt if unreadable.
std::optional<index::EntryFateRow> ParseShared(const std::string& value) {
  std::istringstream in(value);
  index::EntryFateRow row;
  if (!(in >> row.ts >> row.fate)) return std::nullopt;
  return row;
}

// Whether `a` happened after `b`. In one second, an end (an eviction) comes after the
// caching it ends.
bool Later(const index::EntryFateRow& a, const index::EntryFateRow& b) {
  if (a.ts != b.ts) return a.ts > b.ts;
  return a.fate != kFateCached && b.fate == kFateCached;
}

}  // namespace

std::string CacheImpl::MissReason(const std::string& image_id) {
  std::optional<index::EntryFateRow> fate;
  try {
    fate = WithIndex(
        [&](index::Index& ix) { return ix.EntryFate(backend_kind_, location_, image_id); });
  } catch (const std::exception& e) {
    log_->warn("miss reason not read from the index image={} error={}", image_id, e.what());
  }
  try {
    // Another host's eviction (or its fill, since this host's record) may be newer.
    // One key: the table holds a row per image ever cached.
    if (const auto value = backend_->ReadTableValue(kFates, EntryName(image_id))) {
      auto pool = ParseShared(*value);
      if (pool && (!fate || Later(*pool, *fate))) fate = pool;
    }
  } catch (const std::exception& e) {
    log_->warn("miss reason not read from the pool image={} error={}", image_id, e.what());
  }
  if (!fate) return "cold";
  const std::string reason = fate->fate == kFateCached ? "lost" : fate->fate;
  return std::find(std::begin(kMissReasons), std::end(kMissReasons), reason) !=
                 std::end(kMissReasons)
             ? reason
             : "cold";
}

void CacheImpl::NoteFate(const std::string& image_id, const std::string& what, bool share) {
  const std::string fate = FateOf(what);
  const int64_t now = Now();
  try {
    WithIndex([&](index::Index& ix) {
      ix.NoteEntryFate(backend_kind_, location_, image_id, now, fate);
    });
  } catch (const std::exception& e) {
    log_->warn("entry fate not recorded image={} fate={} error={}", image_id, fate, e.what());
  }
  if (!share) return;
  try {
    backend_->WriteTable(kFates, {{EntryName(image_id),
                                   std::to_string(now) + " " + fate + " " + host_id_}});
  } catch (const std::exception& e) {
    log_->warn("entry fate not shared with the other hosts image={} fate={} error={}", image_id,
               fate, e.what());
  }
}

void CacheImpl::PruneSharedFates() {
  const auto& c = options_.cache;
  // The pool's fates hold a row per image ever cached (a fill shares its own): reading
  // them and listing the pool costs seconds at 100,000 entries, and the limits are days
  // and a row count, so a host prunes them once an hour, not every pass.
  const int64_t now = Now();
  const int64_t last = LeadingSeconds(
      WithIndex([&](index::Index& ix) { return ix.GetPassState(kFatesPrunedAt); }));
  if (now >= last && now - last < kFatesPruneEvery) return;
  try {
    // Recorded once pruned (below): a prune that failed is tried again by the next pass.
    auto pruned = [&] {
      WithIndex([&](index::Index& ix) { ix.SetPassState(kFatesPrunedAt, std::to_string(now)); });
    };
    const auto fates = backend_->ReadTable(kFates);
    if (fates.empty()) return pruned();
    const auto objects = backend_->ListIdentities(backend_->entry_pool());
    std::vector<std::pair<int64_t, std::string>> unheld;  // newest first, below
    for (const auto& [name, value] : fates) {
      if (objects.count(name)) continue;
      auto row = ParseShared(value);
      unheld.emplace_back(row ? row->ts : 0, name);
    }
    std::sort(unheld.begin(), unheld.end(), std::greater<>());
    const int64_t cutoff = Now() - static_cast<int64_t>(c.events_max_age_days) * kSecondsPerDay;
    std::vector<std::string> forget;
    for (size_t i = 0; i < unheld.size(); ++i) {
      if ((c.events_max_age_days > 0 && unheld[i].first < cutoff) ||
          (c.events_max_rows > 0 && i >= c.events_max_rows)) {
        forget.push_back(unheld[i].second);
      }
    }
    if (!forget.empty()) {
      backend_->WriteTable(kFates, {}, forget);
      log_->info("pool entry fates pruned rows={}", forget.size());
    }
    pruned();
  } catch (const std::exception& e) {
    log_->warn("pool entry fates not pruned error={}", e.what());
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
