// A volume's name: claimed in the index before anything is made (ClaimVolume), and taken
// on the backend once the volume is whole (PlaceVolume). The hit path is volume.cpp.
#include <spdlog/spdlog.h>

#include <chrono>

#include "engine/cache_impl.h"
#include "engine/eviction_steps.h"
#include "engine/failpoints.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "engine/volume_guard.h"

namespace cachemgr::engine {

// How long a create whose name a dead create still holds waits for this host's pass lock
// to clear it (a pass that holds it clears such rows itself).
constexpr auto kClearHalfMadeWait = std::chrono::seconds(30);

Error CacheImpl::VolumeNameTaken(const std::string& volume, const Error& e) {
  return Error(Errc::kAlreadyExists, "volume " + volume +
                                         ": already exists on the backend, and nothing there is "
                                         "touched: choose another name (" + e.what() + ")");
}

index::VolumeRow CacheImpl::ClaimVolume(const CreateVolumeRequest& request) {
  index::VolumeRow claim;
  claim.image_id = request.image_id;
  claim.name = request.volume;
  claim.pool = backend_->volume_pool();
  claim.created_at = Now();
  claim.state = index::State::kCreating;
  claim.owner = owner_;
  claim.staging_name = VolumeStagingName();
  auto insert = [&]() -> bool {
    try {
      claim.id = WithIndex([&](index::Index& ix) { return ix.InsertVolume(claim); });
      return true;
    } catch (const Error& e) {
      if (e.code() != Errc::kAlreadyExists) throw;
      return false;
    }
  };
  auto find = [&] {
    return WithIndex([&](index::Index& ix) { return ix.FindVolume(claim.pool, claim.name); });
  };
  if (insert()) return claim;
  auto held = find();
  // A ready row whose volume is gone (a `delete` killed between the two, or removed
  // outside the cache) holds the name for nothing: dropped, and the name claimed.
  if (held && held->state == index::State::kReady &&
      !backend_->Exists({claim.pool, claim.name})) {
    // Only that row: another create may have dropped it and claimed the name meanwhile.
    if (!WithIndex([&](index::Index& ix) { return ix.DeleteVolumeRow(*held); })) {
      throw Error(Errc::kAlreadyExists, "volume " + request.volume + ": already exists");
    }
    log_->info("dropped the row of a volume that no longer exists volume={}", claim.name);
    if (insert()) return claim;
    throw Error(Errc::kAlreadyExists, "volume " + request.volume +
                                          ": already exists: another create claimed the "
                                          "name at the same moment");
  }
  // A create of this name that died on this host (a crash, a kill) left its claim: what
  // it made is cleared as the pass clears it, and the name claimed, so that running the
  // command again is all it takes. Under this host's pass lock: one clearer at a time
  // (other creates run again, a pass), or one could remove the volume another has just
  // put at the name. A row gone meanwhile (a pass cleared it) frees the name too.
  if (!held || (held->state == index::State::kCreating && !OwnerAlive(held->owner))) {
    std::unique_ptr<FileLock> clearing;
    try {
      clearing = FileLock::Acquire(lock_dir_ / kHostPassLockFile, kClearHalfMadeWait,
                                   "eviction pass");
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
      throw Error(Errc::kBusy, "volume " + request.volume + ": a create of it died and an "
                                   "eviction pass is running on this host; it clears what that "
                                   "create left: run the command again once it ends");
    }
    held = find();
    if (held && held->state == index::State::kCreating && !OwnerAlive(held->owner)) {
      std::vector<EvictAction> cleared;
      ClearHalfMadeVolume(*held, /*dry_run=*/false, &cleared);
      held = find();
    }
    if (!held && insert()) return claim;
    if (!held) held = find();
  }
  if (held && held->state == index::State::kCreating) {
    throw Error(Errc::kAlreadyExists,
                "volume " + request.volume + ": already exists: being created by " + held->owner +
                    (OwnerAlive(held->owner)
                         ? std::string(" (if that process is gone, `cachemgr evict` clears it)")
                         : std::string(" (gone; what it left could not be cleared: `cachemgr "
                                       "evict` names it)")));
  }
  throw Error(Errc::kAlreadyExists, "volume " + request.volume + ": already exists");
}

void CacheImpl::PlaceVolume(index::VolumeRow* claim, VolumeGuardRef guard, uint64_t size,
                            uint64_t current_size) {
  const storage::ImageRef staging{claim->pool, claim->staging_name};
  claim->identity = Mark(*backend_, staging, kMarkVolume);
  guard->Identify(claim->identity);
  if (size > current_size) backend_->Resize(staging, size);
  // The row records the identity before the volume takes its name, so a crash after the
  // rename leaves a row that says which object at the name is this create's.
  WithIndex([&](index::Index& ix) { ix.UpdateVolume(*claim); });
  Failpoint("volume_before_rename");
  try {
    backend_->Rename(staging, claim->name);
  } catch (const Error& e) {
    if (e.code() != Errc::kAlreadyExists) throw;
    throw VolumeNameTaken(claim->name, e);
  }
  guard->Track({claim->pool, claim->name}, claim->identity);
  Failpoint("volume_after_rename");
}

}  // namespace cachemgr::engine
