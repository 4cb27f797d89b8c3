// The pass's flatten step: first the clones that pin evicted entries (those that free
// the most bytes per byte copied first, at most cache.flatten_pinned_max of them within
// cache.flatten_pinned_budget_s), then the entries they freed are purged; then volumes
// older than `evict --flatten-older-than`. Only volumes this cache made are flattened.
#include <spdlog/spdlog.h>

#include <map>

#include "engine/cache_impl.h"
#include "engine/marks.h"
#include "policy/pinned_flatten.h"

namespace cachemgr::engine {

void CacheImpl::FlattenStep(const EvictOptions& options, bool dry_run,
                            std::vector<EvictAction>* actions) {
  const uint32_t max = options.flatten_pinned_max.value_or(options_.cache.flatten_pinned_max);
  // The purge ran before the limits; it runs again for the entries whose last clone this
  // step flattened, so their bytes come back in this pass.
  if (max > 0 && FlattenPinnedClones(max, dry_run, actions) > 0) PurgeDeferred(dry_run, actions);
  if (options.flatten_older_than.count() > 0) {
    FlattenOldVolumes(options.flatten_older_than, dry_run, actions);
  }
}

void CacheImpl::FlattenVolume(index::VolumeRow v, EvictAction* action) {
  try {
    auto own = CheckOwnership(*backend_, {v.pool, v.name}, kMarkVolume, &v.identity);
    if (!own.ours) throw Error(Errc::kNotFound, own.exists ? own.why : "volume is gone");
    const Stopwatch timer;
    backend_->Flatten({v.pool, v.name}, {});
    // A backend may make a new object to flatten: the mark and the row follow it.
    if (!v.identity.empty()) v.identity = Mark(*backend_, {v.pool, v.name}, kMarkVolume);
    v.flattened = true;
    v.depth = 0;
    WithIndex([&](index::Index& ix) { ix.UpdateVolume(v); });
    action->done = true;
    log_->info("volume flattened volume={} image={} why=\"{}\" ms={}", v.name, v.image_id,
               action->reason, timer.Elapsed().count() / 1000);
  } catch (const Error& e) {
    action->reason += std::string("; flatten failed: ") + e.what();
    log_->warn("flatten failed volume={} image={} error=\"{}\"", v.name, v.image_id, e.what());
  }
}

std::map<int64_t, std::vector<index::VolumeRow>> CacheImpl::PinningVolumes(
    const std::vector<index::EntryRow>& pinned) {
  std::map<int64_t, std::vector<index::VolumeRow>> by_entry;
  for (const auto& row : pinned) by_entry[row.id];
  for (auto& v : WithIndex([&](index::Index& ix) { return ix.ListVolumes(); })) {
    // The clones this cache made of the entry (its volumes rows) that still depend on it.
    auto it = by_entry.find(v.entry_id);
    if (it == by_entry.end() || v.pool != backend_->volume_pool() ||
        v.state != index::State::kReady || v.flattened || v.depth == 0) {
      continue;
    }
    it->second.push_back(std::move(v));
  }
  return by_entry;
}

size_t CacheImpl::FlattenPinnedClones(uint32_t max, bool dry_run,
                                      std::vector<EvictAction>* actions) {
  std::vector<index::EntryRow> pinned;
  for (auto& row :
       WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
    if (row.pinned) pinned.push_back(std::move(row));
  }
  if (pinned.empty()) return 0;
  auto by_entry = PinningVolumes(pinned);
  std::map<int64_t, const index::EntryRow*> rows;
  for (const auto& row : pinned) rows[row.id] = &row;

  if (!backend_->FlattensInPlace()) {
    // The local backend flattens by writing a new file and renaming it over the old one:
    // a VM with the volume open would write on into the old file and lose those writes.
    // Reported for as many clones as the pass would have flattened, not every one.
    size_t reported = 0;
    for (const auto& [entry_id, volumes] : by_entry) {
      for (const auto& v : volumes) {
        if (reported++ >= max) return 0;
        actions->push_back({"flatten", v.image_id, v.name, v.size_bytes,
                            "pins evicted entry " + rows[entry_id]->cache_name +
                                "; skipped: this backend's flatten is not safe while a VM "
                                "uses the volume (rbd only)",
                            false});
      }
    }
    return 0;
  }

  std::map<int64_t, index::VolumeRow> volume_rows;
  std::vector<policy::PinnedEntry> entries;
  for (auto& [entry_id, volumes] : by_entry) {
    const auto& row = *rows[entry_id];
    policy::PinnedEntry e{entry_id, AccountedBytes(row), row.virtual_size, {}};
    for (auto& v : volumes) {
      try {
        e.clones.push_back({v.id, v.size_bytes, backend_->OwnBytes({v.pool, v.name})});
        volume_rows[v.id] = v;
      } catch (const Error& err) {
        // Gone or unreadable: not flattened now; the entry waits (its purge needs it gone).
        log_->warn("pinned flatten: cannot measure volume={} error=\"{}\"", v.name, err.what());
      }
    }
    // An entry with a clone that could not be measured cannot be freed in this pass.
    if (e.clones.size() == volumes.size()) entries.push_back(std::move(e));
  }

  const auto plan = policy::PlanPinnedFlatten(std::move(entries), max);
  const auto budget = std::chrono::seconds(options_.cache.flatten_pinned_budget_s);
  const Stopwatch timer;
  size_t flattened = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const auto& step = plan[i];
    const auto& row = *rows[step.entry_id];
    const auto& v = volume_rows[step.volume_id];
    EvictAction action{"flatten", v.image_id, v.name, v.size_bytes,
                       "pins evicted entry " + row.cache_name + " (" +
                           std::to_string(AccountedBytes(row)) + " bytes)" +
                           (step.frees_entry ? ", its last clone here" : ""),
                       false};
    // The first flatten always runs, so every pass makes progress.
    if (i > 0 && timer.Elapsed() >= budget) {
      action.reason += "; skipped: the pass's flatten_pinned_budget_s (" +
                       std::to_string(budget.count()) + " s) is spent";
    } else if (!dry_run) {
      FlattenVolume(v, &action);
      flattened += action.done;
    }
    actions->push_back(std::move(action));
  }
  if (!plan.empty()) {
    log_->info("pinned flatten planned={} flattened={} ms={}", plan.size(), flattened,
               timer.Elapsed().count() / 1000);
  }
  return flattened;
}

}  // namespace cachemgr::engine
