// Eviction of entries: one at a time (removed, or deferred to the trash while it has
// clones), the limits (least recently used first), and the purge of deferred entries
// whose clones are gone. The pass that runs them is in pass.cpp, its gc in gc.cpp.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "engine/cache_impl.h"
#include "engine/eviction_steps.h"
#include "engine/failpoints.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "policy/eviction.h"

namespace cachemgr::engine {

namespace {
// Candidates read per query while choosing victims least recently used first.
constexpr size_t kLruPage = 64;
// How long a caller that already holds the image's locks (stale replacement, gc) waits
// for hits still cloning the entry: a copy of a large image takes minutes.
constexpr auto kLockedUseWait = std::chrono::minutes(30);
}  // namespace

storage::RemoveOutcome CacheImpl::RemoveImageFully(const storage::ImageRef& ref) {
  auto outcome = storage::RemoveOutcome::kRemoved;
  if (!backend_->Exists(ref)) {
    // Nothing at the name; the remove still takes what a kill may have left of it (a
    // local sidecar written before its image).
    IgnoreNotFound([&] { backend_->Remove(ref); });
    return outcome;
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
  // Trashed even without a snapshot: disks other tools made on the file (local backend)
  // are no clones of a snapshot, yet they read it.
  IgnoreNotFound([&] { outcome = backend_->Remove(ref); });
  Failpoint("after_remove_image");
  return outcome;
}

storage::RemoveOutcome CacheImpl::RemoveLeftObject(const storage::ImageRef& ref) {
  try {
    return RemoveImageFully(ref);
  } catch (const Error& e) {
    if (e.code() != Errc::kBusy) throw;
    // Watched by the client killed with it open: cut that off, then remove (the OSDs
    // drop the watches once they see the new map).
    if (backend_->EvictWatchers(ref) == 0) throw;
  }
  for (auto wait = std::chrono::milliseconds(50);; wait *= 2) {
    try {
      return RemoveImageFully(ref);
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy || wait > std::chrono::seconds(3)) throw;
    }
    std::this_thread::sleep_for(wait);
  }
}

EvictAction CacheImpl::EvictEntry(index::EntryRow row, const std::string& kind,
                                  const std::string& reason, bool locked) {
  VictimLocks held;
  if (auto skipped = LockVictim(row, kind, reason, locked, &held)) return *skipped;
  return EvictLocked(std::move(row), kind, reason, std::move(held));
}

std::vector<EvictAction> CacheImpl::EvictEntries(const std::vector<Victim>& victims) {
  std::vector<EvictAction> out;
  out.reserve(victims.size());
  const size_t limit = backend_->RemovalBatchLimit();
  if (limit <= 1) {
    // No batches: each victim's locks are held only for its own eviction.
    for (const auto& v : victims) out.push_back(EvictEntry(v.row, v.kind, v.reason, false));
    return out;
  }
  for (size_t begin = 0; begin < victims.size(); begin += limit) {
    const size_t n = std::min(limit, victims.size() - begin);
    std::vector<std::optional<EvictAction>> skipped(n);
    std::vector<VictimLocks> held(n);
    std::vector<storage::ImageRef> refs;
    for (size_t i = 0; i < n; ++i) {
      const auto& v = victims[begin + i];
      skipped[i] = LockVictim(v.row, v.kind, v.reason, false, &held[i]);
      if (!skipped[i]) refs.push_back(EntryRef(v.row.cache_name));
    }
    // Every image of the batch is locked: the backend may decide their clones from one
    // look at the store (the local backend reads every overlay header for a look).
    const auto batch = refs.empty() ? nullptr : backend_->BeginRemovals(refs);
    for (size_t i = 0; i < n; ++i) {
      const auto& v = victims[begin + i];
      out.push_back(skipped[i] ? std::move(*skipped[i])
                               : EvictLocked(v.row, v.kind, v.reason, std::move(held[i])));
    }
  }
  return out;
}

std::optional<EvictAction> CacheImpl::LockVictim(const index::EntryRow& row,
                                                 const std::string& kind,
                                                 const std::string& reason, bool locked,
                                                 VictimLocks* held) {
  EvictAction action{kind, row.image_id, row.cache_name, AccountedBytes(row), reason, false};
  if (ImportPending(row.cache_name)) {
    // Neither removable nor movable to the trash until its import is committed.
    action.reason += "; skipped: its instant-miss import is not finished";
    return action;
  }
  try {
    if (!locked) held->image = LockImage(row.cache_name, kPassLockWait);
    // Exclusive use lock: hits cloning the entry finish first, and later ones see it
    // no longer ready (they re-check the row under their shared lock).
    held->use = FileLock::Acquire(UseLockPath(use_lock_dir_, row.cache_name),
                                  locked ? kLockedUseWait : kPassLockWait,
                                  "entry use lock " + row.cache_name);
  } catch (const Error& e) {
    if ((e.code() != Errc::kBusy && e.code() != Errc::kIo) || locked) throw;
    *held = {};
    if (e.code() == Errc::kIo) {
      // Something that is not a lock file at a lock's name (a folder, a link): the entry
      // is passed over and the pass goes on; doctor names the file.
      log_->warn("entry lock cannot be taken, its entry is passed over entry={} error=\"{}\"",
                 row.cache_name, e.what());
      action.reason += "; skipped: its lock cannot be taken: " + std::string(e.what());
    } else {
      action.reason += "; skipped: image busy";
    }
    return action;
  }
  return std::nullopt;
}

EvictAction CacheImpl::EvictLocked(index::EntryRow row, const std::string& kind,
                                   const std::string& reason, VictimLocks held) {
  EvictAction action{kind, row.image_id, row.cache_name, AccountedBytes(row), reason, false};
  const std::string made_by = row.state == index::State::kReady ? row.owner : "";
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
  EntryClones clones;
  bool deferred = false;
  try {
    clones = FindClones(row, ref, snap);
    deferred = clones.count > 0 || clones.in_trash;
    if (!deferred) {
      const auto removal = RemoveUnlessCloned(row, ref, snap);
      deferred = removal != storage::RemoveOutcome::kRemoved;
      // Moved to the trash by the removal itself, for users that are no clones of its
      // snapshot (disks other tools made on it): deferred like a cloned entry, so that its
      // trash folder stays the cache's and is purged once they are gone.
      clones.in_trash = removal == storage::RemoveOutcome::kTrashed;
    }
    if (deferred) DeferEntry(&row, clones, &action);
  } catch (const Error&) {
    // Refused before anything changed (the local backend when it cannot tell what reads
    // the file): the entry is whole, so it is ready again rather than stuck evicting.
    RestoreIfWhole(row, ref, snap, made_by);
    throw;
  }
  if (!deferred) {
    Failpoint("before_delete_row");
    WithIndex([&](index::Index& ix) { ix.DeleteEntry(row.id); });
    // The image is no longer cached: its locks go with it (a refill makes new ones).
    held.image.Discard();
    if (held.use) held.use->Discard();
    log_->info("entry evicted image={} entry={} kind={} bytes={}", row.image_id, row.cache_name,
               kind, action.bytes);
  }
  action.done = true;
  // The reason of the image's next miss. A dead eviction finished by the gc left no
  // reason: its entry counts as lost.
  if (kind != "gc") NoteFate(row.image_id, kind);
  Event(kind, row.image_id, action.bytes, {});
  if (action.kind == "defer") Event("defer", row.image_id, action.bytes, {});
  return action;
}

CacheImpl::EntryClones CacheImpl::FindClones(const index::EntryRow& row,
                                             const storage::ImageRef& ref,
                                             const storage::SnapRef& snap) {
  EntryClones clones;
  if (backend_->Exists(ref)) {
    try {
      clones.count = backend_->Children(snap).size();
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
    }
  }
  if (clones.count == 0 && !backend_->Exists(ref)) {
    // A crash after the move to the trash: the object lives on there, for its clones or
    // for what else read it when it moved. That very object (its identity) is deferred
    // whatever reads it now, so that the purge takes it; rows without an identity (made
    // before identities were recorded) by name, when it still has clones.
    clones.in_trash = TrashedCopy(row.cache_name, row.identity).has_value();
  }
  return clones;
}

void CacheImpl::RestoreIfWhole(const index::EntryRow& row, const storage::ImageRef& ref,
                               const storage::SnapRef& snap, const std::string& made_by) {
  try {
    if (row.state != index::State::kEvicting || row.identity.empty()) return;
    if (backend_->Identity(ref) != row.identity) return;
    bool is_protected = false;
    for (const auto& s : backend_->ListSnapshots(ref))
      is_protected = is_protected || (s.name == snap.snap && s.is_protected);
    if (!is_protected) return;
    if (WithIndex([&](index::Index& ix) {
          return ix.TransitionEntry(row.id, index::State::kEvicting, index::State::kReady, made_by);
        })) {
      log_->warn("eviction refused before any change: the entry is ready again image={} entry={}",
                 row.image_id, row.cache_name);
    }
  } catch (const std::exception&) {
    // Left evicting: the next pass finishes (or restores) it.
  }
}

std::optional<storage::TrashEntry> CacheImpl::TrashedCopy(const std::string& name,
                                                          const std::string& identity, bool any) {
  for (auto& t : backend_->ListTrash()) {
    if (t.original.name != name) continue;
    if (any || (identity.empty() ? t.has_children : t.identity == identity)) return std::move(t);
  }
  return std::nullopt;
}

std::optional<storage::RemoveOutcome> CacheImpl::RemoveUnlessCloned(
    const index::EntryRow& row, const storage::ImageRef& ref, const storage::SnapRef& snap) {
  try {
    // An eviction a dead owner began: its killed client's watches are cut off.
    const bool left = row.state == index::State::kEvicting && row.owner != owner_ &&
                      !OwnerAlive(row.owner);
    return left ? RemoveLeftObject(ref) : RemoveImageFully(ref);
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
    return std::nullopt;
  }
}

void CacheImpl::DeferEntry(index::EntryRow* row, const EntryClones& clones, EvictAction* action) {
  auto outcome = clones.in_trash ? storage::RemoveOutcome::kTrashed
                                 : backend_->Remove(EntryRef(row->cache_name));
  if (outcome == storage::RemoveOutcome::kTrashed) ShareDeferred(*row, action->bytes);
  Failpoint("after_trash");
  row->pinned = true;
  row->owner.clear();
  WithIndex([&](index::Index& ix) { ix.UpdateEntry(*row); });
  action->kind = "defer";
  const bool trashed = outcome == storage::RemoveOutcome::kTrashed;
  action->reason += clones.count == 0 && trashed
                        ? "; kept in the trash for the disks still reading it"
                        : "; kept for " + std::to_string(clones.count) + " clone(s)" +
                              (trashed ? " in the trash" : "");
  log_->info("entry deferred image={} entry={} clones={} bytes={}", row->image_id,
             row->cache_name, clones.count, action->bytes);
}

void CacheImpl::EnforceLimits(std::optional<uint64_t> incoming, int64_t exclude_id, bool dry_run,
                              std::vector<EvictAction>* actions) {
  const auto& c = options_.cache;
  if (c.max_count == 0 && c.max_size_gb <= 0) {
    RestoreFloor(0, exclude_id, dry_run, actions);  // the free-space floor (floor.cpp)
    return;
  }
  policy::EvictionLimits limits{c.max_size_gb, c.max_count,
                                c.size_accounting == SizeAccounting::kAllocated};
  // Totals from an aggregate and candidates from a sorted walk that stops once the
  // limits hold: the pass reads as many rows as it evicts, not the whole cache.
  std::map<int64_t, index::EntryRow> by_id;
  const auto importing = PendingImports();  // never victims (EvictEntry would skip them)
  auto plan = WithIndex([&](index::Index& ix) {
    std::set<int64_t> importing_ids;
    for (const auto& [name, image_id] : importing) {
      if (auto r = ix.FindEntry(backend_kind_, location_, image_id)) importing_ids.insert(r->id);
    }
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
                                       r.id != exclude_id && !importing_ids.count(r.id)};
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
  uint64_t freed = 0;
  std::vector<Victim> victims;
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
    victims.push_back({row, "evict", reason});
  }
  const auto done = EvictEntries(victims);
  for (size_t i = 0; i < done.size(); ++i) {
    // What the free-space floor may count as given back (a deferred entry frees nothing).
    if (done[i].done && done[i].kind == "evict") freed += victims[i].row.allocated_bytes;
    if (actions) actions->push_back(done[i]);
  }
  if (!plan.limits_hold) {
    log_->warn("cache limits cannot hold: the rest is busy bytes={} count={}", plan.bytes_after,
               plan.count_after);
  }
  RestoreFloor(freed, exclude_id, dry_run, actions);  // the free-space floor (floor.cpp)
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
  auto pinned_rows = WithIndex(
      [&](index::Index& ix) { return ix.ListUnsettledEntries(backend_kind_, location_); });
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
  auto rows = WithIndex(
      [&](index::Index& ix) { return ix.ListUnsettledEntries(backend_kind_, location_); });
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

}  // namespace cachemgr::engine
