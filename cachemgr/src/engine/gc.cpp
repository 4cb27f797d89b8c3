// Gc of what dead fills, evictions and volume creates left: their rows, their staging
// objects, entry objects no row knows (adopted when ours and complete), and lock files of
// images no longer cached. Run by the eviction pass (pass.cpp).
#include <spdlog/spdlog.h>

#include <map>
#include <set>
#include <string_view>
#include <unordered_set>

#include "engine/cache_impl.h"
#include "engine/failpoints.h"
#include "engine/eviction_steps.h"
#include "engine/marks.h"
#include "engine/naming.h"

namespace cachemgr::engine {
namespace {
// The look (CacheImpl::PoolLook) when the gc of leftover objects last found none.
constexpr const char* kGcLook = "gc_objects_look";
}  // namespace

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
    // Made through a relay that died with its fill: served again before it is opened.
    if (!ServeRelayOf(row.cache_name, actions)) return;
    // A rename killed midway binds the entry's name to the staging image as well
    // (storage/rbd/rbd_leftovers.cpp): once that image is gone, the binding goes too,
    // only when it names that very image.
    std::string staging_identity;
    try {
      staging_identity = backend_->Identity(EntryRef(row.cache_name));
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
    }
    bool trashed =
        RemoveLeftObject(EntryRef(row.cache_name)) == storage::RemoveOutcome::kTrashed;
    if (!trashed && staging_identity.empty()) {
      // Killed after its move to the trash (for what read it): its random name is its own,
      // so the object there is this fill's, and goes the same way.
      if (auto t = TrashedCopy(row.cache_name, "", /*any=*/true)) {
        trashed = true;
        staging_identity = t->identity;
      }
    }
    ForgetRelayOf(row.cache_name, true);
    backend_->RemoveDanglingName(EntryRef(row.cache_name), "");  // see GcVolumes
    if (!staging_identity.empty()) {
      backend_->RemoveDanglingName(EntryRef(EntryName(row.image_id)), staging_identity);
    }
    if (trashed) {
      // Something still reads it (a disk another tool made on the file): it waits in the
      // trash, recorded by its row, now pinned, until the pass purges it.
      index::EntryRow pinned = row;
      pinned.state = index::State::kReady;
      pinned.pinned = true;
      pinned.owner.clear();
      pinned.identity = staging_identity;
      WithIndex([&](index::Index& ix) { ix.UpdateEntry(pinned); });
      ShareDeferred(pinned, AccountedBytes(pinned));
      log_->info("half-made entry kept in the trash for what reads it image={} staging={}",
                 row.image_id, row.cache_name);
      if (actions) {
        actions->push_back({"defer", row.image_id, row.cache_name, 0,
                            "fill by " + row.owner +
                                " did not finish; kept in the trash for the disks still reading it",
                            true});
      }
      return;
    }
  }
  WithIndex([&](index::Index& ix) { ix.DeleteEntry(row.id); });
  log_->info("removed half-made entry image={} staging={} owner={}", row.image_id,
             row.cache_name, row.owner);
  if (actions) {
    actions->push_back({"gc", row.image_id, row.cache_name, 0,
                        "fill by " + row.owner + " did not finish", true});
  }
}

void CacheImpl::GcLeftovers(bool dry_run, std::vector<EvictAction>* actions) {
  GcLeftoverRows(dry_run, actions);
  // Objects on the backend: staging ones no row names, entry-named ones no row knows.
  // Only ours go (a complete mark with the object's own identity); others are reported.
  GcLeftoverObjects(dry_run, actions);
}

void CacheImpl::GcLeftoverRows(bool dry_run, std::vector<EvictAction>* actions) {
  auto rows = WithIndex(
      [&](index::Index& ix) { return ix.ListUnsettledEntries(backend_kind_, location_); });
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
      auto locks = PassLockImage(EntryName(row.image_id), kPassLockWait);
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
}

bool CacheImpl::NamedByLiveRow(const std::string& name) {
  return WithIndex([&](index::Index& ix) { return ix.HasLiveName(backend_kind_, location_, name); });
}

void CacheImpl::GcLeftoverObjects(bool dry_run, std::vector<EvictAction>* actions) {
  // Nothing to find while no fill is recorded and the pools and the index are as they
  // were when this step last found nothing at all (reconcile.cpp: the look). Taken first:
  // a fill records itself before it makes anything, and what it makes moves the look.
  const std::string look = PoolLook();
  const auto fills = SharedFills();
  if (fills.empty() && LookUnchanged(kGcLook, look)) return;
  bool clean = fills.empty();  // no staging, orphan or volume staging name seen
  // Hashed, and the listing's names looked up in place: at 100,000 entries the ordered
  // sets and their copies were a third of this step.
  auto live_list =
      WithIndex([&](index::Index& ix) { return ix.ListLiveNames(backend_kind_, location_); });
  std::unordered_set<std::string> live_names;
  live_names.reserve(live_list.size());
  for (auto& [cache_name, image_id] : live_list) live_names.insert(std::move(cache_name));
  live_list.clear();
  std::set<std::string> volume_staging;
  for (const auto& v : WithIndex([&](index::Index& ix) { return ix.ListVolumes(); })) {
    if (v.state == index::State::kCreating) volume_staging.insert(v.staging_name);
  }
  if (backend_->volume_pool() != backend_->entry_pool()) {
    for (const auto& name : backend_->List(backend_->volume_pool())) {
      if (IsVolumeStagingName(name)) {
        clean = false;
        ReportVolumeStaging({backend_->volume_pool(), name}, volume_staging, actions);
      }
    }
  }
  const auto listed_names = backend_->List(backend_->entry_pool());
  std::unordered_set<std::string_view> listed;
  listed.reserve(listed_names.size());
  for (const auto& name : listed_names) listed.insert(name);
  if (!dry_run) ForgetEndedFills(fills, listed);
  for (const auto& name : listed_names) {
    auto key = StagingKey(name);
    if (IsVolumeStagingName(name)) {
      clean = false;
      ReportVolumeStaging(EntryRef(name), volume_staging, actions);
      continue;
    }
    const bool live = live_names.count(name) != 0;
    const bool orphan_entry = IsEntryName(name) && !live;
    if ((!key || live) && !orphan_entry) continue;
    clean = false;
    if (dry_run) {
      ReportLeftObject(name, key.has_value(), fills, actions);
      continue;
    }
    try {
      auto locks = PassLockImage(key ? *key : name, kPassLockWait);
      if (key) {
        RemoveFillStaging(name, *key, live_names, fills, &locks, actions);
      } else if (!NamedByLiveRow(name) && backend_->Exists(EntryRef(name))) {
        AdoptOrphan(name, nullptr, actions);
      }
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
    }
  }
  if (clean && !dry_run) RecordLook(kGcLook, look);
}

void CacheImpl::ReportVolumeStaging(const storage::ImageRef& ref,
                                    const std::set<std::string>& volume_staging,
                                    std::vector<EvictAction>* actions) {
  // Volume staging objects no row names: a volume being made through another index, or
  // left by one that was lost; no row of ours says it is ours to remove.
  if (volume_staging.count(ref.name)) return;
  auto own = CheckOwnership(*backend_, ref, kMarkVolume, nullptr);
  if (own.exists) {
    LeaveAlone(ref.name, own.ours ? "volume staging object no row of this index names" : own.why,
               actions);
  }
}

void CacheImpl::ForgetEndedFills(const std::map<std::string, std::string>& fills,
                                 const std::unordered_set<std::string_view>& listed) {
  // Fill records whose staging object is gone (the fill ended, and its host died before
  // forgetting it): nothing to remove but the record. A fill still running holds the
  // image's lock, and its object may not exist yet: those are left.
  for (const auto& entry : fills) {
    const std::string& staging = entry.first;
    if (listed.count(staging)) continue;
    auto key = StagingKey(staging);
    if (!key) continue;
    try {
      auto locks = PassLockImage(*key, std::chrono::milliseconds(0));
      if (!backend_->Exists(EntryRef(staging))) ForgetFill(staging);
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
    }
  }
}

void CacheImpl::ReportLeftObject(const std::string& name, bool staging,
                                 const std::map<std::string, std::string>& fills,
                                 std::vector<EvictAction>* actions) {
  if (staging && !ServeRelayOf(name, actions)) return;
  auto own = CheckOwnership(*backend_, EntryRef(name), kMarkEntry, nullptr);
  if (own.exists && !own.ours && !(staging && !own.marked && fills.count(name))) {
    LeaveAlone(name, own.why, actions);
  } else if (own.exists && !staging && RowFromMetadata(name)) {
    // A complete entry another host made: the pass adopts it, nothing to remove.
  } else if (own.exists) {
    actions->push_back(
        {"gc", "", name, 0, staging ? "staging object" : "entry without a row", false});
  }
}

void CacheImpl::RemoveFillStaging(const std::string& name, const std::string& key,
                                  const std::unordered_set<std::string>& live_names,
                                  const std::map<std::string, std::string>& fills,
                                  ImageLocks* locks, std::vector<EvictAction>* actions) {
  if (NamedByLiveRow(name)) return;
  if (!ServeRelayOf(name, actions)) return;
  auto own = CheckOwnership(*backend_, EntryRef(name), kMarkEntry, nullptr);
  if (!own.exists) return;
  // A fill killed before its fetch ended left an unmarked object: the cache's if the
  // pool's record of fills names it (recorded before the object was made).
  const bool recorded_fill = !own.marked && fills.count(name) > 0;
  if (!own.ours && !recorded_fill) {
    LeaveAlone(name, own.why, actions);
    return;
  }
  RemoveLeftObject(EntryRef(name));
  ForgetRelayOf(name, true);
  if (fills.count(name)) ForgetFill(name);
  if (!live_names.count(key)) locks->Discard();
  actions->push_back({"gc", "", name, 0, "staging object of a fill that did not finish", true});
  log_->info("removed staging object name={}", name);
}

void CacheImpl::GcVolumes(bool dry_run, std::vector<EvictAction>* actions) {
  const std::string pool = backend_->volume_pool();
  const auto rows = WithIndex([&](index::Index& ix) { return ix.ListVolumes(); });
  Failpoint(kVolumesListedFailpoint);
  for (const auto& listed : rows) {
    if (listed.pool != pool || listed.state != index::State::kCreating ||
        OwnerAlive(listed.owner)) {
      continue;
    }
    ClearHalfMadeVolume(listed, dry_run, actions);
  }
}

bool CacheImpl::ClearHalfMadeVolume(const index::VolumeRow& listed, bool dry_run,
                                    std::vector<EvictAction>* actions) {
  const std::string& pool = listed.pool;
  // Read again now that its owner is known to be gone: a create that finished between
  // the listing and that check left its row ready and its volume whole, and must not be
  // taken for a half-made one (its volume would be removed under a ready row). Only a
  // row still this claim's is half-made; a dead owner writes nothing more, so this
  // read is the row's last state.
  const auto now = WithIndex([&](index::Index& ix) { return ix.FindVolume(pool, listed.name); });
  if (!now || now->id != listed.id || now->state != index::State::kCreating ||
      now->owner != listed.owner || now->staging_name != listed.staging_name) {
    return false;
  }
  const index::VolumeRow& v = *now;
  const std::string reason = "create of volume " + v.name + " by " + v.owner + " did not finish";
  if (dry_run) {
    actions->push_back({"gc", v.image_id, v.name, 0, reason, false});
    return false;
  }
  // The staging object is this row's: its random name was recorded before it was made.
  // (A pass and a create of the same name may both clear it: what one removed the other
  // finds gone.)
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
      IgnoreNotFound([&] { RemoveLeftObject({pool, v.name}); });
    } else if (own.exists) {
      LeaveAlone(v.name, own.why, actions);
    } else {
      // A rename killed midway may have bound the name to this row's (now removed)
      // object: unbound, or the name could never be made again.
      backend_->RemoveDanglingName({pool, v.name}, v.identity);
    }
  }
  // (Not dropped: the row changed since it was read; the next pass looks again.)
  if (!WithIndex([&](index::Index& ix) { return ix.DeleteVolumeClaim(v); })) return false;
  log_->info("removed half-made volume volume={} staging={} owner={}", v.name, v.staging_name,
             v.owner);
  actions->push_back({"gc", v.image_id, v.name, 0, reason, true});
  return true;
}

void CacheImpl::SweepLockFiles(bool dry_run) {
  if (dry_run) return;
  // Whether a key is cached: asked of the index one key at a time while few are asked
  // (the lock folders of an idle pool hold a handful of files), and every live row read
  // once past that (a pass at 100,000 entries read them all for none).
  LiveKeys live(
      [&](const std::string& key) {
        return WithIndex([&](index::Index& ix) {
          return ix.HasLiveName(backend_kind_, location_, key, kStagingPrefix + key + "-");
        });
      },
      [&] {
        std::set<std::string> all;
        for (const auto& [cache_name, image_id] : WithIndex(
                 [&](index::Index& ix) { return ix.ListLiveNames(backend_kind_, location_); })) {
          all.insert(EntryName(image_id));
        }
        return all;
      });
  // This host's lock files, and the use locks in the backend's shared lock folder when
  // it has one (there, `<key>.lock` is the backend's lock: the loop below). A folder that
  // is a link is not swept: its files are not the cache's to remove (the open refuses an
  // index-side one already: RequireOwnLockDir).
  std::vector<std::pair<std::filesystem::path, bool>> dirs{{lock_dir_, true}};
  if (use_lock_dir_ != lock_dir_) dirs.emplace_back(use_lock_dir_, false);
  for (const auto& [dir, image_locks_too] : dirs) {
    std::error_code ec;
    if (std::filesystem::is_symlink(dir, ec)) {
      log_->warn("lock folder is a symlink, not swept path={}", dir.string());
      continue;
    }
    for (const auto& file : std::filesystem::directory_iterator(dir, ec)) {
      SweepLockFile(file.path(), live, image_locks_too);
    }
  }
  // The backend's lock objects (RBD) or files (local) of keys no longer cached: a holder
  // discards its own, a crashed one leaves it. Taken with no wait (held: in use), the
  // key checked again under the lock (a fill may have made it live meanwhile).
  for (const auto& key : backend_->ListLocks()) {
    if (!IsEntryName(key) || live(key)) continue;
    ImageLocks locks;
    try {
      LockImage(key, std::chrono::milliseconds(0), &locks);
      // A row of the key's image: its entry name, or a fill's staging name (naming.cpp).
      const bool now_live = WithIndex([&](index::Index& ix) {
        return ix.HasLiveName(backend_kind_, location_, key, kStagingPrefix + key + "-");
      });
      if (now_live) continue;
      if (locks.Discard()) {
        log_->info("removed lock of an image no longer cached key={}", key);
      } else {
        log_->warn("lock of an image no longer cached left alone: not a file a lock makes key={}",
                   key);
      }
    } catch (const Error& e) {
      // This host's lock file, made by the try above for a key no longer cached, goes
      // again when the backend's lock could not be had: else every pass would make one.
      if (locks.file) locks.file->Discard();
      // Held: in use. Anything else (a lock file that is a symlink, unreadable) is not
      // the cache's to act on, and stops no pass: named, and left.
      if (e.code() != Errc::kBusy) {
        log_->warn("lock of an image no longer cached left alone key={} error=\"{}\"", key,
                   e.what());
      }
    }
  }
}

// One file of a lock folder: a lock file of a key no longer cached goes when it can be taken
// at once and is one a lock makes (FileLock::Discard). `image_locks_too`: `<key>.lock`
// files too, else only `<key>.use.lock`.
void CacheImpl::SweepLockFile(const std::filesystem::path& path, LiveKeys& live,
                              bool image_locks_too) {
  const std::string name = path.filename().string();
  const std::string key = name.substr(0, 40);
  if (!IsEntryName(key)) return;
  if (name != key + ".use.lock" && !(image_locks_too && name == key + ".lock")) return;
  if (live(key)) return;
  try {
    auto lock = FileLock::Acquire(path, std::chrono::milliseconds(0), "lock file " + name);
    if (!lock->Discard()) log_->warn("lock file not made by the cache left alone path={}", path.string());
  } catch (const Error& e) {
    // Held: in use. Anything else (a symlink, unreadable) is named and left.
    if (e.code() != Errc::kBusy) {
      log_->warn("lock file left alone path={} error=\"{}\"", path.string(), e.what());
    }
  }
}

}  // namespace cachemgr::engine
