// A volume of an image the cache does not keep (larger than cache.max_size_gb, no room
// above the free-space floor, or a stale entry that cannot be replaced while its
// instant-miss import runs): fetched straight into the volume, no entry made.
#include <spdlog/spdlog.h>

#include "engine/cache_impl.h"
#include "engine/volume_guard.h"
#include "fetch/fetch.h"

namespace cachemgr::engine {

CreateVolumeResult CacheImpl::MakeUncached(const source::ImageMeta& meta,
                                           const CreateVolumeRequest& request,
                                           index::VolumeRow* claim, VolumeGuardRef guard,
                                           const char* why) {
  const storage::ImageRef volume{claim->pool, claim->staging_name};
  log_->info("fetching straight into the volume, no entry made image={} volume={} reason=\"{}\"",
             meta.id, request.volume, why);
  fetch::FetchOptions fetch_options;
  fetch_options.conversion = options_.conversion;
  fetch_options.allow_unverified = options_.source.allow_unverified;
  if (options_.source.max_image_gb > 0) {
    fetch_options.max_image_bytes =
        static_cast<uint64_t>(options_.source.max_image_gb * (1ull << 30));
  }
  if (request.progress) {
    fetch_options.progress = [&](const std::string& stage, uint64_t done, uint64_t total) {
      request.progress(Progress{meta.id, stage, done, total});
    };
  }
  // As for a fill (FetchToStaging): room for a converted image larger than declared.
  std::optional<FloorReservations::Hold> larger;
  fetch_options.before_import = [&](uint64_t virtual_size) {
    if (virtual_size <= meta.virtual_size.value_or(meta.size.value_or(0))) return;
    auto real = meta;
    real.virtual_size = virtual_size;
    larger.emplace(MakeRoomForFill(real, /*with_volume=*/true, /*cacheable=*/false).hold);
  };
  const Stopwatch timer;
  guard->Track(volume);
  auto fetched = fetch::FetchInto(*source_, meta, *backend_, volume, fetch_options, log_);
  const uint64_t size = request.size_bytes ? request.size_bytes : fetched.virtual_size;
  if (size < fetched.virtual_size) {
    throw Error(Errc::kInvalidArgument, "volume " + request.volume + ": size " +
                                            std::to_string(size) + " is smaller than image " +
                                            meta.id);
  }
  PlaceVolume(claim, guard, size, fetched.virtual_size);
  index::VolumeRow& row = *claim;
  row.image_id = meta.id;
  row.created_at = Now();
  row.depth = 0;
  row.plan = "uncached";
  row.size_bytes = size;
  row.state = index::State::kReady;
  row.owner.clear();
  WithIndex([&](index::Index& ix) { ix.UpdateVolume(row); });
  // too_big only for what the cache never admits (max_size_gb); served uncached for want of
  // room above the free-space floor, the miss has the reason any miss would have.
  Event("uncached", meta.id, fetched.bytes_downloaded, timer.Elapsed(),
        Admits(meta) ? MissReason(meta.id) : "too_big");

  CreateVolumeResult result;
  result.volume = request.volume;
  result.image_id = meta.id;
  result.plan = Plan::kUncached;
  result.depth = 0;
  result.size_bytes = size;
  result.bytes_downloaded = fetched.bytes_downloaded;
  result.fill = timer.Elapsed();
  return result;
}

}  // namespace cachemgr::engine
