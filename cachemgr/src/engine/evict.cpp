// Eviction: one entry at a time, the limits, and the periodic pass (gc of half-made
// leftovers, purge of deferred deletes, stale and gone entries, background flatten).
// Over 600 lines for now: the pass's gc steps (GcLeftovers, GcVolumes, SweepLockFiles)
// are to move to a gc.cpp of their own with the engine split of the architecture work.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include "engine/cache_impl.h"
#include "engine/failpoints.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "fetch/workdir.h"
#include "policy/eviction.h"

namespace cachemgr::engine {

namespace {
// How long the pass waits for an image another caller is working on before skipping it.
constexpr auto kPassLockWait = std::chrono::milliseconds(200);
// Candidates read per query while choosing victims least recently used first.
constexpr size_t kLruPage = 64;
// How long a caller that already holds the image's locks (stale replacement, gc) waits
// for hits still cloning the entry: a copy of a large image takes minutes.
constexpr auto kLockedUseWait = std::chrono::minutes(30);

bool IgnoreNotFound(const std::function<void()>& fn) {
  try {
    fn();
    return true;
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
    return false;
  }
}
}  // namespace

void CacheImpl::RemoveImageFully(const storage::ImageRef& ref) {
  if (!backend_->Exists(ref)) {
    // Nothing at the name; the remove still takes what a kill may have left of it (a
    // local sidecar written before its image).
    IgnoreNotFound([&] { backend_->Remove(ref); });
    return;
  }
  for (const auto& snap : backend_->ListSnapshots(ref)) {
    storage::SnapRef sref{ref, snap.name};
    if (snap.is_protected) {
      backend_->UnprotectSnapshot(sref);
      Failpoint("after_unprotect");
    }
    IgnoreNotFound([&] { backend_->RemoveSnapshot(sref); });
    Failpoint("after_remove_snapshot");
  }
  IgnoreNotFound([&] { backend_->Remove(ref); });
  Failpoint("after_remove_image");
}

void CacheImpl::RemoveLeftObject(const storage::ImageRef& ref) {
  try {
    RemoveImageFully(ref);
    return;
  } catch (const Error& e) {
    if (e.code() != Errc::kBusy) throw;
    // Watched by the client killed with it open: cut that off, then remove (the OSDs
    // drop the watches once they see the new map).
    if (backend_->EvictWatchers(ref) == 0) throw;
  }
  for (auto wait = std::chrono::milliseconds(50);; wait *= 2) {
    try {
      RemoveImageFully(ref);
      return;
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy || wait > std::chrono::seconds(3)) throw;
    }
    std::this_thread::sleep_for(wait);
  }
}

EvictAction CacheImpl::EvictEntry(index::EntryRow row, const std::string& kind,
                                  const std::string& reason, bool locked) {
  EvictAction action{kind, row.image_id, row.cache_name, AccountedBytes(row), reason, false};
  ImageLocks locks;
  std::unique_ptr<FileLock> use;
  try {
    if (!locked) locks = LockImage(row.cache_name, kPassLockWait);
    // Exclusive use lock: hits cloning the entry finish first, and later ones see it
    // no longer ready (they re-check the row under their shared lock).
    use = FileLock::Acquire(UseLockPath(use_lock_dir_, row.cache_name),
                            locked ? kLockedUseWait : kPassLockWait,
                            "entry use lock " + row.cache_name);
  } catch (const Error& e) {
    if (e.code() != Errc::kBusy || locked) throw;
    action.reason += "; skipped: image busy";
    return action;
  }
  if (row.state == index::State::kReady) {
    if (!WithIndex([&](index::Index& ix) {
          return ix.TransitionEntry(row.id, index::State::kReady, index::State::kEvicting, owner_);
        })) {
      action.reason += "; skipped: entry changed meanwhile";
      return action;
    }
    row.state = index::State::kEvicting;
    row.owner = owner_;
  }
  Failpoint("after_mark_evicting");

  const auto ref = EntryRef(row.cache_name);
  const auto snap = EntrySnap(row);
  if (auto own = CheckOwnership(*backend_, ref, kMarkEntry, &row.identity);
      own.exists && !own.ours) {
    // Something else holds the entry's name now: the entry is gone, that object stays.
    WithIndex([&](index::Index& ix) { ix.DeleteEntry(row.id); });
    LeaveAlone(row.cache_name, own.why, nullptr);
    action.kind = "left alone";
    action.reason += "; " + own.why + ": the entry's record is dropped, the object untouched";
    action.bytes = 0;
    action.done = true;
    return action;
  }
  std::vector<storage::ImageRef> children;
  if (backend_->Exists(ref)) {
    try {
      children = backend_->Children(snap);
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
    }
  }
  bool deferred = !children.empty();
  bool in_trash = false;
  if (!deferred && !backend_->Exists(ref)) {
    // A crash after the move to the trash: the object lives on there for its clones.
    for (const auto& t : backend_->ListTrash()) {
      if (t.original.name == row.cache_name && t.has_children) in_trash = true;
    }
    deferred = in_trash;
  }
  if (!deferred) {
    try {
      // An eviction a dead owner began: its killed client's watches are cut off.
      const bool left = row.state == index::State::kEvicting && row.owner != owner_ &&
                        !OwnerAlive(row.owner);
      left ? RemoveLeftObject(ref) : RemoveImageFully(ref);
    } catch (const Error& e) {
      // A clone made (on this host or another) between the children check and the
      // unprotect or snapshot removal keeps it: the clone is attached, so the image goes
      // to the trash for it (Remove trashes an image any of whose snapshots has a child).
      if (!backend_->Exists(ref)) throw;
      bool children_now = true;
      try {
        children_now = !backend_->Children(snap).empty();
      } catch (const Error&) {
        // The snapshot is gone (moved to the trash namespace with its clone): Remove decides.
      }
      if (!children_now) throw;
      deferred = true;
    }
  }
  if (deferred) {
    auto outcome = in_trash ? storage::RemoveOutcome::kTrashed : backend_->Remove(ref);
    if (outcome == storage::RemoveOutcome::kTrashed) ShareDeferred(row, action.bytes);
    Failpoint("after_trash");
    row.pinned = true;
    row.owner.clear();
    WithIndex([&](index::Index& ix) { ix.UpdateEntry(row); });
    action.kind = "defer";
    action.reason += "; kept for " + std::to_string(children.size()) + " clone(s)" +
                     (outcome == storage::RemoveOutcome::kTrashed ? " in the trash" : "");
    log_->info("entry deferred image={} entry={} clones={} bytes={}", row.image_id,
               row.cache_name, children.size(), action.bytes);
  } else {
    Failpoint("before_delete_row");
    WithIndex([&](index::Index& ix) { ix.DeleteEntry(row.id); });
    // The image is no longer cached: its locks go with it (a refill makes new ones).
    locks.Discard();
    if (use) use->Discard();
    log_->info("entry evicted image={} entry={} kind={} bytes={}", row.image_id, row.cache_name,
               kind, action.bytes);
  }
  action.done = true;
  Event(kind, row.image_id, action.bytes, {});
  if (action.kind == "defer") Event("defer", row.image_id, action.bytes, {});
  return action;
}

void CacheImpl::CleanupLeftover(const index::EntryRow& row, std::vector<EvictAction>* actions) {
  if (row.state == index::State::kEvicting) {
    // An eviction died half-way: finish it.
    auto action = EvictEntry(row, "gc", "eviction by " + row.owner + " did not finish", true);
    if (actions) actions->push_back(action);
    return;
  }
  // A fill died: remove its staging image (the row recorded its random name before it
  // was made: the row is the intent record). An image renamed into place before the row
  // went ready is handled as an orphan: adopted if its mark says it is ours.
  if (StagingKey(row.cache_name)) {
    RemoveLeftObject(EntryRef(row.cache_name));
    backend_->RemoveDanglingName(EntryRef(row.cache_name), "");  // see GcVolumes
  }
  WithIndex([&](index::Index& ix) { ix.DeleteEntry(row.id); });
  log_->info("removed half-made entry image={} staging={} owner={}", row.image_id,
             row.cache_name, row.owner);
  if (actions) {
    actions->push_back({"gc", row.image_id, row.cache_name, 0,
                        "fill by " + row.owner + " did not finish", true});
  }
}

void CacheImpl::EnforceLimits(std::optional<uint64_t> incoming, int64_t exclude_id, bool dry_run,
                              std::vector<EvictAction>* actions) {
  const auto& c = options_.cache;
  if (c.max_count == 0 && c.max_size_gb <= 0) return;
  policy::EvictionLimits limits{c.max_size_gb, c.max_count,
                                c.size_accounting == SizeAccounting::kAllocated};
  // Totals from an aggregate and candidates from a sorted walk that stops once the
  // limits hold: the pass reads as many rows as it evicts, not the whole cache.
  std::map<int64_t, index::EntryRow> by_id;
  auto plan = WithIndex([&](index::Index& ix) {
    const auto sums = ix.LiveTotals(backend_kind_, location_);
    policy::EvictionTotals totals{
        sums.count, limits.count_allocated ? sums.allocated_bytes : sums.virtual_bytes};
    std::vector<index::LruRow> page;
    size_t pos = 0;
    bool last_page = false;
    auto next = [&]() -> std::optional<policy::EvictionCandidate> {
      if (pos == page.size()) {
        if (last_page) return std::nullopt;
        page = page.empty() ? ix.ReadyByLastUsed(backend_kind_, location_, kLruPage)
                            : ix.ReadyByLastUsed(backend_kind_, location_, kLruPage,
                                                 page.back().last_used, page.back().id);
        pos = 0;
        last_page = page.size() < kLruPage;
        if (page.empty()) return std::nullopt;
      }
      const auto& r = page[pos++];
      return policy::EvictionCandidate{r.id, r.virtual_size, r.allocated_bytes, r.last_used,
                                       r.id != exclude_id};
    };
    auto p = policy::PlanEvictionLru(totals, next, limits, incoming);
    for (int64_t id : p.victims) {
      if (auto row = ix.GetEntry(id)) by_id[id] = *row;
    }
    return p;
  });
  std::string reason = c.max_count != 0 && plan.count_before + (incoming ? 1 : 0) > c.max_count
                           ? "over max_count " + std::to_string(c.max_count)
                           : "over max_size_gb " + std::to_string(c.max_size_gb);
  for (int64_t id : plan.victims) {
    auto it = by_id.find(id);
    if (it == by_id.end()) continue;  // removed meanwhile
    const auto& row = it->second;
    if (dry_run) {
      if (actions) {
        actions->push_back({"evict", row.image_id, row.cache_name, AccountedBytes(row), reason,
                            false});
      }
      continue;
    }
    auto action = EvictEntry(row, "evict", reason, false);
    if (actions) actions->push_back(action);
  }
  if (!plan.limits_hold) {
    log_->warn("cache limits cannot hold: the rest is busy bytes={} count={}", plan.bytes_after,
               plan.count_after);
  }
}

void CacheImpl::GcLeftovers(bool dry_run, std::vector<EvictAction>* actions) {
  auto rows =
      WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); });
  // Rows of fills and evictions: if we can take the image's locks, their owner is gone.
  for (const auto& row : rows) {
    if (row.pinned || row.state == index::State::kReady) continue;
    if (dry_run) {
      actions->push_back({"gc", row.image_id, row.cache_name, 0,
                          std::string(index::StateName(row.state)) + " row of " + row.owner,
                          false});
      continue;
    }
    try {
      auto locks = LockImage(EntryName(row.image_id), kPassLockWait);
      auto fresh = WithIndex([&](index::Index& ix) { return ix.GetEntry(row.id); });
      if (fresh && !fresh->pinned && fresh->state != index::State::kReady) {
        CleanupLeftover(*fresh, actions);
        // In the same pass: the image a dead fill renamed into place before its row went
        // ready (ours if its mark says so, else left alone).
        const std::string final_name = EntryName(fresh->image_id);
        if (fresh->state == index::State::kCreating && !FindLive(fresh->image_id) &&
            backend_->Exists(EntryRef(final_name))) {
          AdoptOrphan(final_name, nullptr, actions);
        }
        if (!FindLive(fresh->image_id)) locks.Discard();
      }
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;  // in progress: not a leftover
    }
  }
  // Objects on the backend: staging ones no row names, entry-named ones no row knows.
  // Only ours go (a complete mark with the object's own identity); others are reported.
  std::set<std::string> live_names;
  for (const auto& row :
       WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
    if (!row.pinned) live_names.insert(row.cache_name);
  }
  std::set<std::string> volume_staging;
  for (const auto& v : WithIndex([&](index::Index& ix) { return ix.ListVolumes(); })) {
    if (v.state == index::State::kCreating) volume_staging.insert(v.staging_name);
  }
  // Volume staging objects no row names: a volume being made through another index, or
  // left by one that was lost; no row of ours says it is ours to remove.
  auto report_volume_staging = [&](const storage::ImageRef& ref) {
    if (volume_staging.count(ref.name)) return;
    auto own = CheckOwnership(*backend_, ref, kMarkVolume, nullptr);
    if (own.exists) {
      LeaveAlone(ref.name, own.ours ? "volume staging object no row of this index names" : own.why,
                 actions);
    }
  };
  if (backend_->volume_pool() != backend_->entry_pool()) {
    for (const auto& name : backend_->List(backend_->volume_pool())) {
      if (IsVolumeStagingName(name)) report_volume_staging({backend_->volume_pool(), name});
    }
  }
  const auto fills = SharedFills();
  const auto listed_names = backend_->List(backend_->entry_pool());
  const std::set<std::string> listed(listed_names.begin(), listed_names.end());
  // Fill records whose staging object is gone (the fill ended, and its host died before
  // forgetting it): nothing to remove but the record. A fill still running holds the
  // image's lock, and its object may not exist yet: those are left.
  if (!dry_run) {
    for (const auto& [staging, value] : fills) {
      if (listed.count(staging)) continue;
      auto key = StagingKey(staging);
      if (!key) continue;
      try {
        auto locks = LockImage(*key, std::chrono::milliseconds(0));
        if (!backend_->Exists(EntryRef(staging))) ForgetFill(staging);
      } catch (const Error& e) {
        if (e.code() != Errc::kBusy) throw;
      }
    }
  }
  for (const auto& name : listed_names) {
    auto key = StagingKey(name);
    if (IsVolumeStagingName(name)) {
      report_volume_staging(EntryRef(name));
      continue;
    }
    bool orphan_entry = IsEntryName(name) && !live_names.count(name);
    if ((!key || live_names.count(name)) && !orphan_entry) continue;
    if (dry_run) {
      auto own = CheckOwnership(*backend_, EntryRef(name), kMarkEntry, nullptr);
      if (own.exists && !own.ours && !(key && !own.marked && fills.count(name))) {
        LeaveAlone(name, own.why, actions);
      } else if (own.exists && !key && RowFromMetadata(name)) {
        // A complete entry another host made: the pass adopts it, nothing to remove.
      } else if (own.exists) {
        actions->push_back(
            {"gc", "", name, 0, key ? "staging object" : "entry without a row", false});
      }
      continue;
    }
    try {
      auto locks = LockImage(key ? *key : name, kPassLockWait);
      if (key) {
        bool now_named = false;
        for (const auto& row : WithIndex(
                 [&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
          if (!row.pinned && row.cache_name == name) now_named = true;
        }
        if (now_named) continue;
        auto own = CheckOwnership(*backend_, EntryRef(name), kMarkEntry, nullptr);
        if (!own.exists) continue;
        // A fill killed before its fetch ended left an unmarked object: the cache's if the
        // pool's record of fills names it (recorded before the object was made).
        const bool recorded_fill = !own.marked && fills.count(name) > 0;
        if (!own.ours && !recorded_fill) {
          LeaveAlone(name, own.why, actions);
          continue;
        }
        RemoveLeftObject(EntryRef(name));
        if (fills.count(name)) ForgetFill(name);
        if (!live_names.count(*key)) locks.Discard();
        actions->push_back({"gc", "", name, 0, "staging object of a fill that did not finish",
                            true});
        log_->info("removed staging object name={}", name);
      } else {
        bool now_known = false;
        for (const auto& row : WithIndex(
                 [&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
          if (!row.pinned && row.cache_name == name) now_known = true;
        }
        if (!now_known && backend_->Exists(EntryRef(name))) AdoptOrphan(name, nullptr, actions);
      }
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
    }
  }
}

void CacheImpl::GcVolumes(bool dry_run, std::vector<EvictAction>* actions) {
  const std::string pool = backend_->volume_pool();
  for (const auto& v : WithIndex([&](index::Index& ix) { return ix.ListVolumes(); })) {
    if (v.pool != pool || v.state != index::State::kCreating || OwnerAlive(v.owner)) continue;
    const std::string reason = "create of volume " + v.name + " by " + v.owner + " did not finish";
    if (dry_run) {
      actions->push_back({"gc", v.image_id, v.name, 0, reason, false});
      continue;
    }
    // The staging object is this row's: its random name was recorded before it was made.
    if (!v.staging_name.empty()) {
      IgnoreNotFound([&] { RemoveLeftObject({pool, v.staging_name}); });
      // A clone killed between its directory entry and its header leaves a listing that
      // nothing opens: the name was this row's alone.
      backend_->RemoveDanglingName({pool, v.staging_name}, "");
    }
    // At the name: only the object whose mark and identity say it is this row's (renamed
    // into place just before the owner died); anything else there is someone else's.
    if (!v.identity.empty()) {
      auto own = CheckOwnership(*backend_, {pool, v.name}, kMarkVolume, &v.identity);
      if (own.ours) {
        RemoveLeftObject({pool, v.name});
      } else if (own.exists) {
        LeaveAlone(v.name, own.why, actions);
      } else {
        // A rename killed midway may have bound the name to this row's (now removed)
        // object: unbound, or the name could never be made again.
        backend_->RemoveDanglingName({pool, v.name}, v.identity);
      }
    }
    WithIndex([&](index::Index& ix) { ix.DeleteVolume(v.id); });
    log_->info("removed half-made volume volume={} staging={} owner={}", v.name, v.staging_name,
               v.owner);
    actions->push_back({"gc", v.image_id, v.name, 0, reason, true});
  }
}

void CacheImpl::SweepLockFiles(bool dry_run) {
  if (dry_run) return;
  std::set<std::string> live;
  for (const auto& row :
       WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
    if (!row.pinned) live.insert(EntryName(row.image_id));
  }
  std::error_code ec;
  for (const auto& file : std::filesystem::directory_iterator(lock_dir_, ec)) {
    const std::string name = file.path().filename().string();
    const std::string key = name.substr(0, 40);
    if (!IsEntryName(key) || live.count(key)) continue;
    if (name != key + ".lock" && name != key + ".use.lock") continue;
    try {
      auto lock = FileLock::Acquire(file.path(), std::chrono::milliseconds(0), "lock file " + name);
      lock->Discard();
    } catch (const Error&) {
      // Held: in use.
    }
  }
  // The backend's lock objects (RBD) or files (local) of keys no longer cached: a holder
  // discards its own, a crashed one leaves it. Taken with no wait (held: in use), the
  // key checked again under the lock (a fill may have made it live meanwhile).
  for (const auto& key : backend_->ListLocks()) {
    if (!IsEntryName(key) || live.count(key)) continue;
    try {
      auto locks = LockImage(key, std::chrono::milliseconds(0));
      bool now_live = false;
      for (const auto& row :
           WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
        if (!row.pinned && EntryName(row.image_id) == key) now_live = true;
      }
      if (now_live) continue;
      locks.Discard();
      log_->info("removed lock of an image no longer cached key={}", key);
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
    }
  }
}

void CacheImpl::LeaveAlone(const std::string& name, const std::string& why,
                           std::vector<EvictAction>* actions) {
  log_->warn("left alone: not the cache's object name={} cause={}", name, why);
  if (actions) actions->push_back({"left alone", "", name, 0, why, true});
}

void CacheImpl::PurgeDeferred(bool dry_run, std::vector<EvictAction>* actions) {
  std::vector<storage::TrashEntry> remaining;
  // The trash entries that are ours: those a pinned row recorded (by identity; by name
  // for rows made before identities were recorded). A name alone proves nothing.
  auto pinned_rows =
      WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); });
  // And those another host deferred (the pool's `deferred` table): any host purges them.
  const auto shared = SharedDeferred();
  auto recorded = [&](const storage::TrashEntry& t) {
    if (!t.identity.empty() && IsEntryName(t.original.name)) {
      auto it = shared.find(Sha1Hex(t.identity));
      if (it != shared.end() && it->second.starts_with(t.original.name + " " + t.identity + " ")) {
        return true;
      }
    }
    for (const auto& row : pinned_rows) {
      if (!row.pinned) continue;
      if (row.identity.empty() ? row.cache_name == t.original.name
                               : (row.identity == t.identity && row.cache_name == t.original.name))
        return true;
    }
    return false;
  };
  for (const auto& t : backend_->ListTrash()) {
    const auto& name = t.original.name;
    if (!recorded(t)) continue;  // not ours
    if (t.has_children || dry_run) {
      if (!t.has_children) actions->push_back({"purge", "", name, 0, "no clones left", false});
      remaining.push_back(t);
      continue;
    }
    if (backend_->PurgeTrash(t)) {
      if (!t.identity.empty() && shared.count(Sha1Hex(t.identity))) ForgetDeferred(t.identity);
      actions->push_back({"purge", "", name, 0, "no clones left", true});
      log_->info("purged deferred entry name={}", name);
    } else {
      remaining.push_back(t);
    }
  }
  // Records of deferred entries no longer in the trash (purged by their host, or by hand).
  if (!dry_run) {
    for (const auto& [key, value] : shared) {
      bool in_trash = false;
      for (const auto& t : remaining) in_trash = in_trash || Sha1Hex(t.identity) == key;
      const auto space = value.find(' ');
      const auto end = value.find(' ', space == std::string::npos ? 0 : space + 1);
      if (!in_trash && space != std::string::npos && end != std::string::npos) {
        ForgetDeferred(value.substr(space + 1, end - space - 1));
      }
    }
  }
  // Pinned rows whose object is gone from the trash are done.
  auto rows =
      WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); });
  for (const auto& row : rows) {
    if (!row.pinned) continue;
    bool still = false;
    for (const auto& t : remaining) still = still || t.original.name == row.cache_name;
    if (still || dry_run) continue;
    WithIndex([&](index::Index& ix) { ix.DeleteEntry(row.id); });
    Event("purge", row.image_id, AccountedBytes(row), {});
    for (auto& a : *actions) {
      if (a.kind == "purge" && a.name == row.cache_name && a.image_id.empty()) {
        a.image_id = row.image_id;
        a.bytes = AccountedBytes(row);
      }
    }
  }
}

EvictReport CacheImpl::RunEvictionPass(const EvictOptions& options) {
  auto start = std::chrono::steady_clock::now();
  auto pass_lock = FileLock::Acquire(lock_dir_ / "eviction-pass.lock", std::chrono::milliseconds(0),
                                     "eviction pass");
  // One pass per pool across every host that shares it (a RADOS lock with a lease on RBD:
  // a killed host's lock runs out by itself).
  auto pool_pass_lock = LockPass(std::chrono::milliseconds(0));
  Failpoint(kPassLockedFailpoint);
  EvictReport report;
  auto measure = [&](uint64_t* count, uint64_t* bytes, uint64_t* pinned) {
    *count = 0;
    *bytes = 0;
    if (pinned) *pinned = 0;
    for (const auto& row :
         WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
      if (row.pinned) {
        if (pinned) *pinned += AccountedBytes(row);
      } else if (row.state == index::State::kReady) {
        *count += 1;
        *bytes += AccountedBytes(row);
      }
    }
  };
  measure(&report.entries_before, &report.bytes_before, nullptr);

  GcLeftovers(options.dry_run, &report.actions);
  GcVolumes(options.dry_run, &report.actions);
  SweepLockFiles(options.dry_run);
  for (const auto& l : backend_->SweepTemporaries(options.dry_run)) {
    report.actions.push_back(
        {"gc", "", l.path, l.bytes, "temporary of a writer that died", l.removed});
    if (l.removed) log_->info("removed temporary path={} bytes={}", l.path, l.bytes);
  }
  PurgeDeferred(options.dry_run, &report.actions);
  std::vector<fetch::LeftAlone> left_alone;
  for (const auto& dir :
       fetch::SweepWorkDirs(options_.conversion.dir, options.dry_run, log_, &left_alone)) {
    report.actions.push_back(
        {"gc", "", dir.string(), 0, "working dir of a fill that died", !options.dry_run});
  }
  for (const auto& l : left_alone) {
    report.actions.push_back({"left alone", "", l.path.string(), 0, l.why, true});
  }

  const uint64_t requests_before = source_->Requests();
  if (options.check_source) {
    auto rows =
        WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); });
    // One listing answers for every entry (a few pages, not a GET per entry); an image it
    // does not show is asked about alone, which tells gone from hidden.
    std::map<std::string, source::ImageMeta> listed;
    const bool any = std::any_of(rows.begin(), rows.end(), [](const index::EntryRow& r) {
      return !r.pinned && r.state == index::State::kReady;
    });
    bool listing_failed = false;
    if (any) {
      try {
        if (auto all = source_->ListForCheck()) {
          for (auto& m : *all) {
            std::string id = m.id;
            listed.emplace(std::move(id), std::move(m));
          }
        }
      } catch (const Error& e) {
        listing_failed = true;
        log_->warn("source list failed, asking per entry error={}", e.what());
      }
    }
    for (const auto& row : rows) {
      if (row.pinned || row.state != index::State::kReady) continue;
      std::string kind, reason;
      try {
        backend_->RequireIntact(EntryRef(row.cache_name));
        auto it = listed.find(row.image_id);
        auto meta = it != listed.end() ? it->second : source_->Describe(row.image_id);
        if (meta.status == "deleted" || meta.status == "killed" ||
            meta.status == "pending_delete") {
          kind = "gone";
          reason = "source status " + meta.status;
        } else if (IsStale(row, meta)) {
          kind = "stale";
          reason = "source checksum or updated_at changed";
        }
      } catch (const Error& e) {
        if (e.code() == Errc::kNotFound && listing_failed) {
          // A source whose listing failed may be mis-addressed (every answer a 404): an
          // entry is called gone only by a source that can list its images.
          log_->warn("source check skipped image={} error=\"{}\" (the listing failed too)",
                     row.image_id, e.what());
        } else if (e.code() == Errc::kNotFound) {
          kind = "gone";
          reason = "image no longer in the source";
        } else if (e.code() == Errc::kCorrupt) {
          kind = "stale";  // refused as it is; fetched again on the next miss
          reason = e.what();
        } else {
          log_->warn("source check skipped image={} error={}", row.image_id, e.what());
        }
      }
      if (kind.empty()) continue;
      if (options.dry_run) {
        report.actions.push_back({kind, row.image_id, row.cache_name, AccountedBytes(row), reason,
                                  false});
      } else {
        report.actions.push_back(EvictEntry(row, kind, reason, false));
      }
    }
  }

  // The limits and the LRU order are the pool's: every entry any host made, each with its
  // last use by any host.
  Reconcile(options.dry_run, &report.actions);
  EnforceLimits(std::nullopt, 0, options.dry_run, &report.actions);

  if (options.flatten_older_than.count() > 0) {
    const int64_t cutoff = NowSeconds() - options.flatten_older_than.count();
    for (auto v : WithIndex([&](index::Index& ix) { return ix.ListVolumes(); })) {
      if (v.pool != backend_->volume_pool() || v.state != index::State::kReady || v.flattened ||
          v.depth == 0 || v.created_at > cutoff) {
        continue;
      }
      EvictAction action{"flatten", v.image_id, v.name, v.size_bytes, "older than cutoff", false};
      if (!options.dry_run) {
        try {
          auto own = CheckOwnership(*backend_, {v.pool, v.name}, kMarkVolume, &v.identity);
          if (!own.ours) {
            throw Error(Errc::kNotFound, own.exists ? own.why : "volume is gone");
          }
          backend_->Flatten({v.pool, v.name}, {});
          // A backend may make a new object to flatten: the mark and the row follow it.
          if (!v.identity.empty()) v.identity = Mark(*backend_, {v.pool, v.name}, kMarkVolume);
          v.flattened = true;
          v.depth = 0;
          WithIndex([&](index::Index& ix) { ix.UpdateVolume(v); });
          action.done = true;
        } catch (const Error& e) {
          action.reason = std::string("flatten failed: ") + e.what();
        }
      }
      report.actions.push_back(action);
    }
  }

  measure(&report.entries_after, &report.bytes_after, &report.pinned_bytes);
  if (!options.dry_run) {
    uint64_t left_alone = 0;
    for (const auto& a : report.actions) left_alone += a.kind == "left alone";
    Event(kEventLeftAlone, "", left_alone, {});
    PruneEvents();
    PublishTotals(report);
  }
  report.source_requests = source_->Requests() - requests_before;
  // The lock object goes with the pass (a waiter makes a new one): a pool keeps no lock
  // objects between passes.
  pool_pass_lock->Discard();
  report.elapsed = Since(start);
  log_->info("eviction pass actions={} entries={} bytes={} pinned={} source_requests={} ms={}",
             report.actions.size(), report.entries_after, report.bytes_after, report.pinned_bytes,
             report.source_requests, report.elapsed.count() / 1000);
  return report;
}

}  // namespace cachemgr::engine
