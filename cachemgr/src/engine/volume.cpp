// The hit path and the public entry points that make volumes.
#include <SQLiteCpp/Transaction.h>
#include <spdlog/spdlog.h>

#include "engine/cache_impl.h"
#include "engine/naming.h"
#include "fetch/fetch.h"
#include "policy/clone_plan.h"

namespace cachemgr::engine {

namespace {

bool SourceUnreachable(const Error& e) {
  return e.code() == Errc::kSource || e.code() == Errc::kTimeout;
}

// Removes a half-made volume unless Commit() runs. Never throws.
class VolumeGuard {
 public:
  VolumeGuard(storage::Backend& backend, storage::ImageRef ref,
              std::shared_ptr<spdlog::logger> log)
      : backend_(backend), ref_(std::move(ref)), log_(std::move(log)) {}
  ~VolumeGuard() {
    if (!armed_ || committed_) return;
    try {
      backend_.Remove(ref_);
    } catch (const Error& e) {
      // Not found: the clone or copy failed before it made anything (an entry evicted
      // meanwhile, retried by CreateVolume), so nothing is half-made.
      if (e.code() != Errc::kNotFound) {
        log_->warn("half-made volume not removed volume={} error={}", ref_.name, e.what());
      }
    } catch (const std::exception& e) {
      log_->warn("half-made volume not removed volume={} error={}", ref_.name, e.what());
    }
  }
  void Arm() { armed_ = true; }
  void Commit() { committed_ = true; }

 private:
  storage::Backend& backend_;
  storage::ImageRef ref_;
  std::shared_ptr<spdlog::logger> log_;
  bool armed_ = false;
  bool committed_ = false;
};

}  // namespace

CreateVolumeResult CacheImpl::CreateVolume(const CreateVolumeRequest& request) {
  auto start = std::chrono::steady_clock::now();
  ValidateImageId(request.image_id);
  ValidateVolumeName(request.volume);
  const std::string pool = backend_->volume_pool();
  if (WithIndex([&](index::Index& ix) { return ix.FindVolume(pool, request.volume); })) {
    throw Error(Errc::kAlreadyExists, "volume " + request.volume + ": already exists");
  }
  try {
    for (int attempt = 0;; ++attempt) {
      auto row = FindLive(request.image_id);
      std::optional<source::ImageMeta> meta;
      const bool ready = row && row->state == index::State::kReady;
      // A ready entry confirmed by the source within the interval is served without
      // asking again (a Glance GET costs more than the clone); eviction passes still
      // check every entry. A file source answers from a stat: asked on every hit.
      const int64_t interval = options_.source.type == SourceType::kFile
                                   ? 0
                                   : options_.cache.source_check_interval_s;
      const int64_t now = NowSeconds();
      const bool recently_checked = ready && interval > 0 && row->source_checked_at <= now &&
                                    now - row->source_checked_at < interval;
      try {
        if (!recently_checked) meta = DescribeActive(request.image_id);
      } catch (const Error& e) {
        if (!(row && row->state == index::State::kReady && SourceUnreachable(e))) throw;
        log_->warn("source unreachable, serving cached entry image={} error={}",
                   request.image_id, e.what());
      }

      CreateVolumeResult result;
      try {
        if (row && row->state == index::State::kReady && (!meta || !IsStale(*row, *meta))) {
          result = MakeVolume(*row, request, std::nullopt, meta ? now : 0);
        } else if (!Admits(*meta)) {
          result = MakeUncached(*meta, request);
        } else {
          Ensured ensured = EnsureEntry(*meta, request.progress);
          std::optional<Plan> fill_plan;
          if (ensured.filled) fill_plan = ensured.direct ? Plan::kDirect : Plan::kMiss;
          result = MakeVolume(ensured.row, request, fill_plan, now);
          result.bytes_downloaded = ensured.bytes_downloaded;
          result.fill = ensured.fill;
          result.wait = ensured.wait;
        }
      } catch (const Error& e) {
        // The entry was evicted between the lookup and the clone: look again.
        if (e.code() == Errc::kNotFound && attempt < 2 &&
            !backend_->Exists({pool, request.volume})) {
          log_->info("entry vanished during clone, retrying image={}", request.image_id);
          continue;
        }
        throw;
      }
      result.elapsed = Since(start);
      Event("plan:" + std::string(PlanName(result.plan)), request.image_id,
            result.bytes_downloaded, result.elapsed);
      log_->info("volume made image={} volume={} plan={} depth={} ms={}", request.image_id,
                 request.volume, PlanName(result.plan), result.depth,
                 result.elapsed.count() / 1000);
      return result;
    }
  } catch (const Error& e) {
    Event("error", request.image_id, 0, Since(start));
    log_->error("volume failed image={} volume={} error={}", request.image_id, request.volume,
                e.what());
    throw;
  }
}

CreateVolumeResult CacheImpl::MakeVolume(const index::EntryRow& entry,
                                         const CreateVolumeRequest& request,
                                         std::optional<Plan> fill_plan,
                                         int64_t source_checked_at) {
  const uint64_t size = request.size_bytes ? request.size_bytes : entry.virtual_size;
  if (size < entry.virtual_size) {
    throw Error(Errc::kInvalidArgument,
                "volume " + request.volume + ": size " + std::to_string(size) +
                    " is smaller than image " + entry.image_id + " (" +
                    std::to_string(entry.virtual_size) + " bytes)");
  }
  auto decision = policy::PlanClone(options_.cache.max_clone_depth, entry.depth);
  const storage::ImageRef volume{backend_->volume_pool(), request.volume};
  const auto snap = EntrySnap(entry);
  VolumeGuard guard(*backend_, volume, log_);
  // Shared use lock while the clone is made and recorded: an eviction waits for it and
  // then sees the entry no longer ready (see UseLockPath). Taken after any flatten,
  // which needs the image's exclusive locks.
  std::unique_ptr<FileLock> use;
  auto hold_entry = [&] {
    use = FileLock::Acquire(UseLockPath(lock_dir_, entry.cache_name), std::chrono::minutes(5),
                            "entry use lock " + entry.cache_name, FileLock::Mode::kShared);
    auto now = WithIndex([&](index::Index& ix) { return ix.GetEntry(entry.id); });
    if (!now || now->state != index::State::kReady || now->cache_name != entry.cache_name) {
      throw Error(Errc::kNotFound, "entry of image " + entry.image_id + ": evicted meanwhile");
    }
  };
  Plan plan = Plan::kClone;
  switch (decision.plan) {
    case policy::ClonePlan::kClone:
      hold_entry();
      guard.Arm();
      backend_->Clone(snap, volume);
      plan = Plan::kClone;
      break;
    case policy::ClonePlan::kCopy: {
      storage::ProgressFn progress;
      if (request.progress) {
        progress = [&](uint64_t done, uint64_t total) {
          request.progress(Progress{entry.image_id, "copy", done, total});
        };
      }
      hold_entry();
      guard.Arm();
      backend_->Copy(snap, volume, progress);
      plan = Plan::kCopy;
      break;
    }
    case policy::ClonePlan::kFlattenClone:
      FlattenEntry(entry);
      hold_entry();
      guard.Arm();
      backend_->Clone(snap, volume);
      plan = Plan::kFlattenClone;
      break;
  }
  if (size > entry.virtual_size) backend_->Resize(volume, size);

  index::VolumeRow row;
  row.entry_id = entry.id;
  row.image_id = entry.image_id;
  row.name = request.volume;
  row.pool = volume.pool;
  row.created_at = NowSeconds();
  row.depth = decision.volume_depth;
  row.plan = std::string(PlanName(fill_plan.value_or(plan)));
  row.size_bytes = size;
  // One write transaction for the volume row, the entry's use (and source check) and
  // the hit event.
  WithIndex([&](index::Index& ix) {
    SQLite::Transaction tx(ix.db());
    ix.InsertVolume(row);
    ix.TouchEntry(entry.id, row.created_at);
    if (source_checked_at != 0) ix.SetSourceChecked(entry.id, source_checked_at);
    if (!fill_plan) {
      // Bytes not copied thanks to the cache: the whole image, unless this was a copy.
      ix.RecordEvent({row.created_at, "hit", entry.image_id,
                      plan == Plan::kCopy ? 0 : entry.virtual_size, 0});
    }
    tx.commit();
  });
  guard.Commit();

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
  auto start = std::chrono::steady_clock::now();
  backend_->Flatten(EntryRef(row->cache_name), {});
  row->depth = 0;
  row->allocated_bytes = backend_->AllocatedBytes(EntryRef(row->cache_name));
  backend_->SetMetadata(EntryRef(row->cache_name), kMetaDepth, "0");
  WithIndex([&](index::Index& ix) { ix.UpdateEntry(*row); });
  log_->info("flattened entry image={} entry={} ms={}", row->image_id, row->cache_name,
             Since(start).count() / 1000);
}

CreateVolumeResult CacheImpl::MakeUncached(const source::ImageMeta& meta,
                                           const CreateVolumeRequest& request) {
  const storage::ImageRef volume{backend_->volume_pool(), request.volume};
  log_->info("image larger than the cache, fetching straight into the volume image={} volume={}",
             meta.id, request.volume);
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
  auto start = std::chrono::steady_clock::now();
  auto fetched = fetch::FetchInto(*source_, meta, *backend_, volume, fetch_options, log_);
  VolumeGuard guard(*backend_, volume, log_);
  guard.Arm();
  const uint64_t size = request.size_bytes ? request.size_bytes : fetched.virtual_size;
  if (size < fetched.virtual_size) {
    throw Error(Errc::kInvalidArgument,
                "volume " + request.volume + ": size " + std::to_string(size) +
                    " is smaller than image " + meta.id);
  }
  if (size > fetched.virtual_size) backend_->Resize(volume, size);
  index::VolumeRow row;
  row.image_id = meta.id;
  row.name = request.volume;
  row.pool = volume.pool;
  row.created_at = NowSeconds();
  row.depth = 0;
  row.plan = "uncached";
  row.size_bytes = size;
  WithIndex([&](index::Index& ix) { ix.InsertVolume(row); });
  guard.Commit();
  Event("uncached", meta.id, fetched.bytes_downloaded, Since(start));

  CreateVolumeResult result;
  result.volume = request.volume;
  result.image_id = meta.id;
  result.plan = Plan::kUncached;
  result.depth = 0;
  result.size_bytes = size;
  result.bytes_downloaded = fetched.bytes_downloaded;
  result.fill = Since(start);
  return result;
}

void CacheImpl::DeleteVolume(const std::string& volume) {
  storage::ValidateName("volume", volume);
  const std::string pool = backend_->volume_pool();
  auto row = WithIndex([&](index::Index& ix) { return ix.FindVolume(pool, volume); });
  if (!row) throw Error(Errc::kNotFound, "volume " + volume + ": not made by this cache");
  try {
    backend_->Remove({pool, volume});
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
  }
  WithIndex([&](index::Index& ix) { ix.DeleteVolume(row->id); });
  log_->info("volume deleted volume={} image={}", volume, row->image_id);
}

PrefillResult CacheImpl::Prefill(const std::string& image_id, const ProgressFn& progress) {
  auto start = std::chrono::steady_clock::now();
  ValidateImageId(image_id);
  auto meta = DescribeActive(image_id);
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
    Ensured ensured = EnsureEntry(meta, progress);
    result.outcome = ensured.replaced ? PrefillOutcome::kReplaced
                     : ensured.direct && ensured.filled ? PrefillOutcome::kDirect
                     : ensured.filled                   ? PrefillOutcome::kFilled
                                                        : PrefillOutcome::kFresh;
    result.bytes_downloaded = ensured.bytes_downloaded;
    result.virtual_size = ensured.row.virtual_size;
  }
  result.elapsed = Since(start);
  return result;
}

}  // namespace cachemgr::engine
