// Deleting a volume the cache made: only its own (the mark and identity its row
// recorded), never one with snapshots or clones someone else made.
#include <spdlog/spdlog.h>

#include "engine/cache_impl.h"
#include "engine/marks.h"

namespace cachemgr::engine {

void CacheImpl::DeleteVolume(const std::string& volume) {
  storage::ValidateName("volume", volume);
  const std::string pool = backend_->volume_pool();
  auto row = WithIndex([&](index::Index& ix) { return ix.FindVolume(pool, volume); });
  // A volume of an entry whose import came through a relay that died with its runner
  // cannot even be opened (nor removed) until the relay is served again.
  std::vector<std::string> relayed_here;
  if (row && !options_.cache.instant_relay.empty()) relayed_here = ServePendingRelays();
  struct StopRelays {  // served for this delete alone
    CacheImpl* cache;
    const std::vector<std::string>* ids;
    ~StopRelays() {
      for (const auto& id : *ids) cache->ForgetRelayed(id);
    }
  } stop_relays{this, &relayed_here};
  if (!row) throw Error(Errc::kNotFound, "volume " + volume + ": not made by this cache");
  if (row->state != index::State::kReady) {
    throw Error(Errc::kBusy, "volume " + volume + ": being created by " + row->owner +
                                 " (if that process is gone, `cachemgr evict` clears it)");
  }
  const storage::ImageRef ref{pool, volume};
  auto own = CheckOwnership(*backend_, ref, kMarkVolume, &row->identity);
  if (own.exists && !own.ours) {
    // The volume the cache made is gone and something else has the name now: that is
    // someone else's, and the record of ours is dropped.
    WithIndex([&](index::Index& ix) { ix.DeleteVolumeRow(*row); });
    log_->warn("volume not deleted: not the cache's volume={} cause={}", volume, own.why);
    throw Error(Errc::kAlreadyExists,
                "volume " + volume + ": not deleted: " + own.why +
                    "; the object is left untouched and the cache's record of its own volume "
                    "(gone) is dropped");
  }
  if (own.exists) {
    // Snapshots and clones of the volume are someone else's (a backup, a template): the
    // cache made none. The volume stays until they are gone, as Cinder refuses too.
    std::string snaps;
    for (const auto& snap : backend_->ListSnapshots(ref)) {
      snaps += (snaps.empty() ? "" : ", ") + snap.name;
    }
    if (!snaps.empty()) {
      throw Error(Errc::kAlreadyExists,
                  "volume " + volume + ": not deleted: it has snapshots the cache did not make (" +
                      snaps + "); remove them (and their clones) first");
    }
    try {
      backend_->Remove(ref);
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;
    }
  }
  WithIndex([&](index::Index& ix) { ix.DeleteVolumeRow(*row); });
  log_->info("volume deleted volume={} image={}", volume, row->image_id);
}

}  // namespace cachemgr::engine
