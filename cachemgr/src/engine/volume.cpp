// The hit path and the public entry points that make volumes (the volume's name:
// volume_claim.cpp; the uncached volume: uncached.cpp; deleting one: volume_delete.cpp).
#include <spdlog/spdlog.h>

#include <functional>
#include <future>
#include <system_error>

#include "engine/cache_impl.h"
#include "engine/eviction_steps.h"
#include "engine/failpoints.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "engine/volume_guard.h"
#include "index/transaction.h"
#include "policy/clone_plan.h"

namespace cachemgr::engine {

namespace {

// Thrown by ConfirmedBySource through MakeVolume: the entry a hit cloned is stale by the
// source's answer. Not an Error: no caller's handler of errors may take it for one.
struct StaleHit {};

bool SourceUnreachable(const Error& e) {
  return e.code() == Errc::kSource || e.code() == Errc::kTimeout;
}

}  // namespace

CreateVolumeResult CacheImpl::CreateVolume(const CreateVolumeRequest& request) {
  const Stopwatch timer;
  ValidateImageId(request.image_id);
  ValidateVolumeName(request.volume);
  // Neither librbd nor qemu-img makes a disk near 2^63 bytes: refused before any work.
  constexpr uint64_t kMaxVolumeBytes = uint64_t{1} << 60;  // 1 EiB
  if (request.size_bytes > kMaxVolumeBytes) {
    throw Error(Errc::kInvalidArgument, "volume " + request.volume + ": size " +
                                            std::to_string(request.size_bytes) +
                                            " bytes is over 1 EiB; give the disk size in bytes");
  }
  // A disk is whole 512-byte sectors: a qcow2 overlay could only round it up, and the
  // volume would not be the size recorded.
  if (request.size_bytes % 512 != 0) {
    throw Error(Errc::kInvalidArgument,
                "volume " + request.volume + ": size " + std::to_string(request.size_bytes) +
                    " bytes is not a whole number of 512-byte sectors; give a multiple of 512 "
                    "(e.g. " + std::to_string((request.size_bytes / 512 + 1) * 512) + ")");
  }
  const std::string pool = backend_->volume_pool();
  try {
    // The name is claimed before anything is made; a name taken on the backend by anyone
    // is refused with nothing made and nothing touched.
    index::VolumeRow claim = ClaimVolume(request);
    VolumeGuard guard(
        *backend_,
        // The claim as made (MakeVolume clears its owner once it is ready): only that row.
        [this, claimed = claim] {
          WithIndex([&](index::Index& ix) { ix.DeleteVolumeClaim(claimed); });
        },
        log_);
    Failpoint("volume_after_claim");
    // A name taken on the backend (by anything: Backend::NameTaken) is refused before
    // anything costly is done for it (a download, a copy). A cheap clone of a ready entry
    // does not ask: the backend takes a name only if it is free (Rename, CloneInPlace), so
    // a taken one is refused at the clone's rename, the clone undone, and nothing at the
    // name touched; one look fewer per hit.
    bool name_free = false;
    auto require_free_name = [&] {
      if (name_free) return;
      if (backend_->NameTaken({pool, request.volume})) {
        throw Error(Errc::kAlreadyExists,
                    "volume " + request.volume + ": already exists on the backend (" + pool +
                        "/" + request.volume +
                        ") and was not made by this cache; it is left untouched: choose "
                        "another name");
      }
      name_free = true;
    };
    const storage::ImageRef staging{pool, claim.staging_name};
    // Set once a hit served the relay of an import whose runner died (ServeRelayForHit).
    // From then on this process serves it until the import's runner takes it, whatever
    // becomes of this call: other processes and threads may already read through it, and
    // the guard above removes a half-made volume (whose removal opens the entry) while it
    // is still served.
    bool relay_resumed = false;
    struct RunImportIfServed {
      CacheImpl* cache;
      const CreateVolumeRequest& request;
      const bool* resumed;
      bool handled = false;
      ~RunImportIfServed() {
        // A failed call's relay: run here, or left to the caller (HandOverRelay).
        if (!*resumed || handled || request.defer_import) return;
        try {
          cache->StartImportThread(request.image_id);
        } catch (const std::exception&) {  // no thread: the next pass serves and runs it
        }
      }
    } run_import{this, request, &relay_resumed};
    // The source's answer of an attempt that found its entry stale once the clone was
    // made: the next attempt fills with it instead of asking again.
    std::optional<source::ImageMeta> known;
    for (int attempt = 0;; ++attempt) {
      auto row = UsableRow(request.image_id);
      std::optional<source::ImageMeta> meta;
      meta.swap(known);  // known is empty again
      const bool ready = row && row->state == index::State::kReady;
      const bool clone_of_ready =
          ready && backend_->CheapClone() &&
          policy::PlanClone(options_.cache.max_clone_depth, row->depth).plan ==
              policy::ClonePlan::kClone;
      if (!clone_of_ready) require_free_name();
      // A ready entry confirmed by the source within the interval is served without
      // asking again (a Glance GET costs more than the clone); eviction passes still
      // check every entry. A file source answers from a stat: asked on every hit.
      const int64_t interval =
          options_.source.type == SourceType::kFile ? 0 : options_.cache.source_check_interval_s;
      const int64_t now = Now();
      const bool recently_checked = ready && interval > 0 && row->source_checked_at <= now &&
                                    now - row->source_checked_at < interval;
      // With instant misses, a miss (and a hit of an entry whose digests its import has not
      // computed yet) asks without reading the whole file for digests (DescribeForInstant).
      const bool instant = InstantWanted();
      const bool lazy =
          instant && (!ready || (row->checksum.empty() && row->os_hash.empty()));
      // A hit that clones asks a network source on a thread of its own while the clone is
      // made: the hit costs the slower of the two, not their sum. The volume takes its
      // name only once the answer confirms the entry (ConfirmedBySource); a stale entry's
      // clone is removed and the next attempt fills. (Nothing that writes the image's
      // bytes, WritesImage, is started on an entry the answer may condemn.)
      std::future<source::ImageMeta> asked;
      if (ready && !recently_checked && !lazy && !meta &&
          options_.source.type != SourceType::kFile &&
          !WritesImage(policy::PlanClone(options_.cache.max_clone_depth, row->depth).plan)) {
        try {
          asked = std::async(std::launch::async,
                             [this, id = request.image_id] { return DescribeActive(id); });
        } catch (const std::system_error&) {
          // No thread to be had: asked here, before the clone.
        }
      }
      try {
        if (recently_checked || meta || asked.valid()) {
          // answered already, or being answered
        } else if (lazy) {
          meta = RequireActive(source_->DescribeForInstant(request.image_id), request.image_id);
        } else {
          meta = DescribeActive(request.image_id);
        }
      } catch (const Error& e) {
        if (!(row && row->state == index::State::kReady && SourceUnreachable(e))) throw;
        log_->warn("source unreachable, serving cached entry image={} error={}", request.image_id,
                   e.what());
      }

      // A hit opens the entry, which reads through its import's relay while the import
      // lasts: a relay whose runner died is served here first (where this host has its
      // address), or the clone fails to connect.
      if (!relay_resumed && ready && (asked.valid() || !meta || !IsStale(*row, *meta)) &&
          ServeRelayForHit(row->cache_name)) {
        relay_resumed = true;
      }
      // The entry is not served as it is (stale, or none): a fill or a download comes.
      if (!asked.valid() && !(ready && (!meta || !IsStale(*row, *meta)))) require_free_name();
      CreateVolumeResult result;
      try {
        if (asked.valid()) {
          result = MakeVolume(*row, request, &claim, &guard, std::nullopt, 0,
                              [&] { return ConfirmedBySource(*row, asked, now, &known); });
        } else if (row && row->state == index::State::kReady && (!meta || !IsStale(*row, *meta))) {
          result = MakeVolume(*row, request, &claim, &guard, std::nullopt, meta ? now : 0);
        } else if (const bool stale_importing = row && row->state == index::State::kReady &&
                                                ImportPending(row->cache_name);
                   stale_importing) {
          // A ready entry that reaches here is stale. While its instant-miss import runs it
          // can be neither removed nor replaced (the clones made from it read through it):
          // this volume is fetched from the source, and the first miss after the commit
          // replaces the entry.
          const auto room = MakeRoomForFill(*meta, /*with_volume=*/true, /*cacheable=*/false);
          result = MakeUncached(*meta, request, &claim, &guard,
                                "cached entry out of date and its import still running");
        } else if (auto room = MakeRoomForFill(*meta, /*with_volume=*/true, Admits(*meta));
                   room.room == Room::kUncached) {  // too large for the cache, or the floor
          result = MakeUncached(*meta, request, &claim, &guard,
                                Admits(*meta) ? "no room above the free-space floor"
                                              : "image larger than the cache");
        } else {
          Ensured ensured = EnsureEntry(*meta, request.progress, instant);
          std::optional<Plan> fill_plan;
          if (ensured.filled) {
            fill_plan = ensured.direct    ? Plan::kDirect
                        : ensured.instant ? Plan::kInstant
                                          : Plan::kMiss;
          }
          result = MakeVolume(ensured.row, request, &claim, &guard, fill_plan, now);
          result.bytes_downloaded = ensured.bytes_downloaded;
          result.fill = ensured.fill;
          result.wait = ensured.wait;
        }
      } catch (const StaleHit&) {
        // The source changed the image since the entry was made: its clone goes, and the
        // next attempt fills the entry again with the answer (known).
        try {
          backend_->Remove(staging);
        } catch (const Error& e) {
          if (e.code() != Errc::kNotFound) throw;
        }
        log_->info("entry stale by the source's answer, clone removed, filling image={}",
                   request.image_id);
        continue;
      } catch (const Error& e) {
        // The entry was evicted between the lookup and the clone: look again. A row still
        // ready names an entry another host left half-evicted (its snapshot gone): the
        // row goes, and the next attempt adopts or fills the image under its locks.
        // (Not once the volume took its name: a record that failed after the rename is
        // not a vanished entry, and the guard removes the volume.)
        if (e.code() == Errc::kNotFound && attempt < 2 && !backend_->Exists(staging) &&
            !backend_->Exists({pool, request.volume})) {
          log_->info("entry vanished during clone, retrying image={}", request.image_id);
          if (row && row->state == index::State::kReady) {
            WithIndex([&](index::Index& ix) {
              auto still = ix.GetEntry(row->id);
              if (still && !still->pinned && still->state == index::State::kReady) {
                ix.DeleteEntry(row->id);
              }
            });
          }
          continue;
        }
        throw;
      }
      guard.Commit();
      result.elapsed = timer.Elapsed();
      Event("plan:" + std::string(PlanName(result.plan)), request.image_id, result.bytes_downloaded,
            result.elapsed);
      log_->info("volume made image={} volume={} plan={} depth={} ms={}", request.image_id,
                 request.volume, PlanName(result.plan), result.depth,
                 result.elapsed.count() / 1000);
      // The import goes on: here on an engine thread, or where the caller runs it.
      const bool to_run = result.plan == Plan::kInstant || relay_resumed;
      run_import.handled = true;
      if (to_run && !request.defer_import) {
        StartImportThread(request.image_id);
      } else if (to_run) {
        result.import_to_run = true;
      }
      return result;
    }
  } catch (const Error& e) {
    Event("error", request.image_id, 0, timer.Elapsed());
    // The caller gets the error (the tool prints it once); the log keeps it at info, and
    // the index counts it.
    log_->info("volume failed image={} volume={} error={}", request.image_id, request.volume,
               e.what());
    throw;
  }
}

int64_t CacheImpl::ConfirmedBySource(const index::EntryRow& row,
                                     std::future<source::ImageMeta>& asked, int64_t asked_at,
                                     std::optional<source::ImageMeta>* stale_meta) {
  source::ImageMeta meta;
  try {
    meta = asked.get();
  } catch (const Error& e) {
    if (!SourceUnreachable(e)) throw;
    log_->warn("source unreachable, serving cached entry image={} error={}", row.image_id,
               e.what());
    return 0;  // not confirmed: the next hit asks again
  }
  if (IsStale(row, meta)) {
    *stale_meta = std::move(meta);
    throw StaleHit{};
  }
  return asked_at;
}

void CacheImpl::RequireEntryObject(const index::EntryRow& row) {
  // The object at the entry's name must be the one this row recorded (its identity: the
  // RBD image id, the local inode and birth time): another host's pass may have removed
  // it, or someone may have put another object there. A clone of it would serve a VM
  // whatever that object holds. Rows from before identities were recorded are trusted.
  if (row.identity.empty()) return;
  const auto ref = EntryRef(row.cache_name);
  if (backend_->HasIdentity(ref, row.identity)) return;  // the hit's case, in few round trips
  std::string identity;
  try {
    identity = backend_->Identity(ref);
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
  }
  if (identity == row.identity) return;
  // Another host evicted ours and filled the image again: that entry is the cache's (its
  // mark carries its own identity), so the row goes and the caller adopts it. Other hosts'
  // passes and fills go on meanwhile: the object is judged on one consistent reading (its
  // identity the same before and after its mark was read), and one gone by then is gone.
  bool replaced_by_ours = false;
  for (int reading = 0; !identity.empty(); ++reading) {
    const auto own = CheckOwnership(*backend_, ref, kMarkEntry, nullptr);
    identity = own.exists ? own.identity : "";
    if (identity.empty() || own.ours) {
      replaced_by_ours = own.ours;
      break;
    }
    std::string again;
    try {
      again = backend_->Identity(ref);
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
    }
    if (again == identity || reading == 2) break;  // the same object: not the cache's
    identity = again;
  }
  // Ours is gone: the row goes, so the caller fills the image again (a miss, not an error).
  WithIndex([&](index::Index& ix) {
    auto still = ix.GetEntry(row.id);
    if (still && !still->pinned && still->cache_name == row.cache_name) ix.DeleteEntry(row.id);
  });
  if (identity.empty() || replaced_by_ours) {
    log_->info(
        "cache entry {} on the backend image={} entry={}",
        identity.empty() ? "gone (evicted by another host, or lost)" : "made again by another host",
        row.image_id, row.cache_name);
    throw Error(Errc::kNotFound, "entry of image " + row.image_id + ": changed on the backend");
  }
  log_->warn(
      "cache entry name holds an object the cache did not make image={} entry={} "
      "recorded={} found={}",
      row.image_id, row.cache_name, row.identity, identity);
  throw Error(Errc::kAlreadyExists,
              "image " + row.image_id + ": its cache entry " + ref.pool + "/" + ref.name +
                  " is not the object the cache made (identity " + identity + ", recorded " +
                  row.identity +
                  "); it is left untouched and no volume is cloned from it: move it away, "
                  "then create again");
}

std::unique_ptr<FileLock> CacheImpl::HoldEntry(const index::EntryRow& entry) {
  auto use =
      FileLock::Acquire(UseLockPath(use_lock_dir_, entry.cache_name), std::chrono::minutes(5),
                        "entry use lock " + entry.cache_name, FileLock::Mode::kShared);
  auto now = WithIndex([&](index::Index& ix) { return ix.GetEntry(entry.id); });
  if (!now || now->state != index::State::kReady || now->cache_name != entry.cache_name) {
    throw Error(Errc::kNotFound, "entry of image " + entry.image_id + ": evicted meanwhile");
  }
  RequireEntryObject(*now);
  return use;
}

void CacheImpl::FromEntrySnapshot(const index::EntryRow& entry, const std::function<void()>& make) {
  // A clone or copy refused because another host left the entry half-evicted (its snapshot
  // unprotected or gone, that host killed midway) is the entry gone, not an error: the
  // caller drops the row and adopts or fills the image under its locks.
  const auto snap = EntrySnap(entry);
  try {
    make();
  } catch (const Error& e) {
    if (e.code() == Errc::kNotFound) throw;
    bool intact = false;
    try {
      for (const auto& s : backend_->ListSnapshots(snap.image)) {
        intact = intact || (s.name == snap.snap && s.is_protected);
      }
    } catch (const Error&) {
    }
    if (intact) throw;
    log_->info("entry half-evicted by another host image={} entry={} error={}", entry.image_id,
               entry.cache_name, e.what());
    throw Error(Errc::kNotFound, "entry of image " + entry.image_id +
                                     ": its snapshot is no longer protected (being evicted)");
  }
}

Plan CacheImpl::MakeFromEntry(const index::EntryRow& entry, const CreateVolumeRequest& request,
                              policy::ClonePlan how, const storage::ImageRef& volume,
                              VolumeGuardRef guard, std::unique_ptr<FileLock>* use,
                              InPlace* in_place) {
  const auto snap = EntrySnap(entry);
  switch (how) {
    case policy::ClonePlan::kClone:
      *use = HoldEntry(entry);
      FromEntrySnapshot(entry, [&] { CloneVolume(snap, volume, in_place, guard); });
      return Plan::kClone;
    case policy::ClonePlan::kCopy: {
      storage::ProgressFn progress;
      if (request.progress) {
        progress = [&](uint64_t done, uint64_t total) {
          request.progress(Progress{entry.image_id, "copy", done, total});
        };
      }
      *use = HoldEntry(entry);
      guard->Track(volume);
      FromEntrySnapshot(entry, [&] { backend_->Copy(snap, volume, progress); });
      return Plan::kCopy;
    }
    case policy::ClonePlan::kFlattenClone:
      // The use lock is taken after the flatten, which needs the image's exclusive locks.
      FlattenEntry(entry);
      *use = HoldEntry(entry);
      FromEntrySnapshot(entry, [&] { CloneVolume(snap, volume, in_place, guard); });
      return Plan::kFlattenClone;
  }
  throw Error(Errc::kInvalidArgument, "entry of image " + entry.image_id + ": unknown clone plan");
}

void CacheImpl::CloneVolume(const storage::SnapRef& snap, const storage::ImageRef& staging,
                            InPlace* in_place, VolumeGuardRef guard) {
  // Tracked first: what a failed call or a failed undo leaves under the staging name goes.
  guard->Track(staging);
  if (in_place != nullptr) {
    bool placed = false;
    try {
      placed = backend_->CloneInPlace(snap, staging, in_place->at, in_place->size,
                                      in_place->publish);
    } catch (const Error& e) {
      if (e.code() != Errc::kAlreadyExists) throw;
      throw VolumeNameTaken(in_place->at.name, e);
    }
    if (placed) {
      in_place->placed = true;
      guard->Track(in_place->at, in_place->identity);
      return;
    }
  }
  backend_->Clone(snap, staging);
}

CreateVolumeResult CacheImpl::MakeVolume(const index::EntryRow& entry,
                                         const CreateVolumeRequest& request,
                                         index::VolumeRow* claim, VolumeGuardRef guard,
                                         std::optional<Plan> fill_plan, int64_t source_checked_at,
                                         const std::function<int64_t()>& confirm) {
  const uint64_t size = request.size_bytes ? request.size_bytes : entry.virtual_size;
  if (size < entry.virtual_size) {
    throw Error(Errc::kInvalidArgument, "volume " + request.volume + ": size " +
                                            std::to_string(size) + " is smaller than image " +
                                            entry.image_id + " (" +
                                            std::to_string(entry.virtual_size) + " bytes)");
  }
  auto decision = policy::PlanClone(options_.cache.max_clone_depth, entry.depth);
  // A hit that copies the image: room above the free-space floor first (a miss made room
  // for its volume with its fill).
  [[maybe_unused]] const auto room =
      fill_plan ? FloorReservations::Hold() : MakeRoomForVolume(entry, decision.plan, size);
  // Shared use lock while the clone is made and recorded: an eviction waits for it and
  // then sees the entry no longer ready (see UseLockPath).
  std::unique_ptr<FileLock> use;
  // Where the backend can, the clone takes the volume's name in one call, already marked
  // and of its size: the same order as PlaceVolume's (the source's answer, the identity
  // recorded in the row, then the name), with the same failpoints, and no mark, resize or
  // rename after. Otherwise (a copy; the local copy and reflink modes) it is made under
  // the staging name and placed.
  InPlace in_place;
  in_place.at = {claim->pool, claim->name};
  in_place.size = size > entry.virtual_size ? size : 0;  // 0: the entry's own size
  in_place.publish = [&](const std::string& identity) {
    Failpoint("volume_after_clone");
    // The source's answer asked while the clone was made: a stale entry's clone never
    // takes the volume's name (throws StaleHit).
    if (confirm) source_checked_at = confirm();
    claim->identity = identity;
    in_place.identity = identity;
    guard->Identify(identity);  // from here, only this object is this call's to remove
    WithIndex([&](index::Index& ix) { ix.UpdateVolume(*claim); });
    Failpoint("volume_before_rename");
    return std::map<std::string, std::string>{{kMetaMark, MarkValue(kMarkVolume, identity)}};
  };
  const Plan plan = MakeFromEntry(entry, request, decision.plan,
                                  {claim->pool, claim->staging_name}, guard, &use, &in_place);
  if (in_place.placed) {
    Failpoint("volume_after_rename");
  } else {
    Failpoint("volume_after_clone");
    if (confirm) source_checked_at = confirm();
    PlaceVolume(claim, guard, size, entry.virtual_size);
  }

  index::VolumeRow& row = *claim;
  row.entry_id = entry.id;
  row.image_id = entry.image_id;
  row.created_at = Now();
  row.depth = decision.volume_depth;
  row.plan = std::string(PlanName(fill_plan.value_or(plan)));
  row.size_bytes = size;
  row.state = index::State::kReady;
  row.owner.clear();
  // One write transaction for the volume row, the entry's use (and source check) and
  // the hit event.
  WithIndex([&](index::Index& ix) {
    index::Transaction tx(ix, "record volume " + request.volume);
    ix.UpdateVolume(row);
    ix.TouchEntry(entry.id, row.created_at);
    if (source_checked_at != 0) ix.SetSourceChecked(entry.id, source_checked_at);
    if (!fill_plan) {
      // Bytes not copied thanks to the cache: the whole image, unless this was a copy.
      ix.RecordEvent({row.created_at, "hit", entry.image_id,
                      plan == Plan::kCopy ? 0 : entry.virtual_size, 0, ""});
    }
    RecordReuse(ix, entry, !fill_plan);  // for `stats --what-if`
    tx.Commit();
  });
  ShareUse(entry, row.created_at);

  CreateVolumeResult result;
  result.volume = request.volume;
  result.image_id = entry.image_id;
  result.plan = fill_plan.value_or(plan);
  result.depth = decision.volume_depth;
  result.size_bytes = size;
  return result;
}

void CacheImpl::FlattenEntry(const index::EntryRow& entry) {
  // Under the image's locks, so two callers do not flatten one entry at once and an
  // eviction does not remove it meanwhile.
  auto locks = LockImage(entry.cache_name, std::chrono::minutes(30));
  auto row = WithIndex([&](index::Index& ix) { return ix.GetEntry(entry.id); });
  if (!row || row->state != index::State::kReady) {
    throw Error(Errc::kNotFound, "entry of image " + entry.image_id + ": evicted meanwhile");
  }
  if (row->depth == 0) return;
  RequireEntryObject(*row);  // never flatten (write into) an object the cache did not make
  const Stopwatch timer;
  backend_->Flatten(EntryRef(row->cache_name), {});
  // A backend may make a new object to flatten (the local one writes a new file): the
  // mark and the row follow it.
  row->identity = Mark(*backend_, EntryRef(row->cache_name), kMarkEntry);
  row->depth = 0;
  row->allocated_bytes = backend_->AllocatedBytes(EntryRef(row->cache_name));
  backend_->SetMetadata(EntryRef(row->cache_name), kMetaDepth, "0");
  WithIndex([&](index::Index& ix) { ix.UpdateEntry(*row); });
  log_->info("flattened entry image={} entry={} ms={}", row->image_id, row->cache_name,
             timer.Elapsed().count() / 1000);
}

PrefillResult CacheImpl::Prefill(const std::string& image_id, const ProgressFn& progress) {
  const Stopwatch timer;
  ValidateImageId(image_id);
  std::optional<source::ImageMeta> listed;
  {
    std::lock_guard lock(listed_mu_);
    if (auto it = listed_.find(image_id); it != listed_.end()) {
      listed = std::move(it->second);
      listed_.erase(it);
    }
  }
  auto meta = listed ? RequireActive(std::move(*listed), image_id) : DescribeActive(image_id);
  PrefillResult result;
  result.image_id = image_id;
  if (!Admits(meta)) {
    throw Error(Errc::kInvalidArgument,
                "image " + image_id + ": larger than cache.max_size_gb, never cached");
  }
  auto row = FindLive(image_id);
  if (row && row->state == index::State::kReady && !IsStale(*row, meta)) {
    result.outcome = PrefillOutcome::kFresh;
    result.virtual_size = row->virtual_size;
  } else {
    // The free-space floor; throws if no room. Held (reserved) until the fill is done.
    [[maybe_unused]] const auto room = MakeRoomForFill(meta, /*with_volume=*/false);
    Ensured ensured = EnsureEntry(meta, progress);
    result.outcome = ensured.replaced                   ? PrefillOutcome::kReplaced
                     : ensured.direct && ensured.filled ? PrefillOutcome::kDirect
                     : ensured.filled                   ? PrefillOutcome::kFilled
                                                        : PrefillOutcome::kFresh;
    result.bytes_downloaded = ensured.bytes_downloaded;
    result.virtual_size = ensured.row.virtual_size;
  }
  result.elapsed = timer.Elapsed();
  return result;
}

}  // namespace cachemgr::engine
