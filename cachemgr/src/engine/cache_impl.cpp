#include "engine/cache_impl.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include "cachemgr/config.h"
#include "engine/digest_store.h"
#include "engine/naming.h"
#include "fetch/workdir.h"
#include "policy/eviction.h"
#include "policy/staleness.h"
#include "storage/factory.h"

namespace cachemgr {

std::string_view PlanName(Plan plan) noexcept {
  switch (plan) {
    case Plan::kClone: return "clone";
    case Plan::kCopy: return "copy";
    case Plan::kFlattenClone: return "flatten_clone";
    case Plan::kMiss: return "miss";
    case Plan::kDirect: return "direct";
    case Plan::kUncached: return "uncached";
    case Plan::kInstant: return "instant";
  }
  return "unknown";
}

std::string_view ImportOutcomeName(ImportOutcome outcome) noexcept {
  switch (outcome) {
    case ImportOutcome::kNone: return "none";
    case ImportOutcome::kCommitted: return "committed";
    case ImportOutcome::kBad: return "bad";
    case ImportOutcome::kBusy: return "busy";
  }
  return "unknown";
}

std::string_view EntryStateName(EntryState state) noexcept {
  switch (state) {
    case EntryState::kCreating: return "creating";
    case EntryState::kReady: return "ready";
    case EntryState::kEvicting: return "evicting";
  }
  return "unknown";
}

std::string_view PrefillOutcomeName(PrefillOutcome outcome) noexcept {
  switch (outcome) {
    case PrefillOutcome::kFilled: return "filled";
    case PrefillOutcome::kFresh: return "fresh";
    case PrefillOutcome::kReplaced: return "replaced";
    case PrefillOutcome::kDirect: return "direct";
  }
  return "unknown";
}

std::unique_ptr<Cache> Cache::Open(const Options& options, std::shared_ptr<spdlog::logger> logger) {
  if (!logger) logger = spdlog::get("cachemgr");
  if (!logger) {
    // Not registered: a logger with no sinks, so nothing is written anywhere.
    logger = std::make_shared<spdlog::logger>("cachemgr-null", spdlog::sinks_init_list{});
  }
  ValidateOptions(options);
  // The backend first: it refuses a root that is not the cache's before the index (or
  // anything else) is created.
  BackendOptions backend_options = options.backend;
  backend_options.rbd.host_id = options.host_id;
  engine::Parts parts;
  parts.backend = storage::MakeBackend(backend_options, logger);
  parts.index = index::Index::Open(
      options.index, {options.cache.events_max_age_days, options.cache.events_max_rows});
  parts.source = source::MakeSource(options.source, logger);
  parts.clock = std::make_shared<util::SystemClock>();
  return std::make_unique<engine::CacheImpl>(options, logger, std::move(parts));
}

namespace engine {

CacheImpl::CacheImpl(Options options, std::shared_ptr<spdlog::logger> logger, Parts parts)
    : options_(std::move(options)),
      log_(std::move(logger)),
      clock_(std::move(parts.clock)),
      backend_(std::move(parts.backend)),
      index_(std::move(parts.index)),
      source_(std::move(parts.source)),
      owner_(OwnerId()),
      host_id_(options_.host_id.empty() ? HostName() : options_.host_id) {
  if (!log_ || !clock_ || !backend_ || !source_ || !index_) {
    throw Error(Errc::kInvalidArgument,
                "cache engine: a part is missing (logger, clock, backend, source and index "
                "are all required)");
  }
  auto index_dir = std::filesystem::absolute(options_.index).parent_path();
  lock_dir_ = index_dir / "locks";
  std::error_code ec;
  std::filesystem::create_directories(lock_dir_, ec);
  if (ec) {
    throw Error(Errc::kIo, "lock dir " + lock_dir_.string() + ": " + ec.message());
  }
  use_lock_dir_ = backend_->SharedLockDir().value_or(lock_dir_);
  RequireOwnLockDir();
  backend_kind_ = backend_->kind();
  location_ = backend_->location();
  source_->SetDigestCache(MakeIndexDigestCache(index_mu_, *index_, clock_));
  log_->debug("cache opened backend={} location={} source={} index={}", backend_kind_, location_,
              source_->kind(), options_.index);
}

CacheImpl::~CacheImpl() {
  // Import threads use this object: they end first.
  try {
    WaitForImports();
  } catch (const std::exception& e) {
    log_->error("waiting for imports failed error={}", e.what());
  }
  if (adopted_relay_fd_ >= 0) ::close(adopted_relay_fd_);
}

std::optional<index::EntryRow> CacheImpl::FindLive(const std::string& image_id) {
  return WithIndex([&](index::Index& ix) { return ix.FindEntry(backend_kind_, location_, image_id); });
}

storage::ImageRef CacheImpl::EntryRef(const std::string& name) const {
  return {backend_->entry_pool(), name};
}

storage::SnapRef CacheImpl::EntrySnap(const index::EntryRow& row) const {
  return {EntryRef(row.cache_name), row.snap_name.empty() ? kSnapName : row.snap_name};
}

uint64_t CacheImpl::AccountedBytes(const index::EntryRow& row) const {
  return options_.cache.size_accounting == SizeAccounting::kAllocated ? row.allocated_bytes
                                                                       : row.virtual_size;
}

bool CacheImpl::IsStale(const index::EntryRow& row, const source::ImageMeta& meta) const {
  policy::ImageVersion cached{row.checksum, row.os_hash, row.image_updated_at};
  policy::ImageVersion now{meta.checksum, meta.OsHash(), meta.updated_at};
  return policy::CheckStaleness(cached, now, options_.cache.stale_on_updated_at) !=
         policy::Staleness::kFresh;
}

// The index-side lock folder is the cache's own: a link (or any other alias of the
// backend's shared lock folder) would make a pass create and remove lock files wherever it
// leads, and a lock taken on both sides would wait on itself.
void CacheImpl::RequireOwnLockDir() const {
  struct stat st {};
  if (::lstat(lock_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error(Errc::kIo, "lock folder " + lock_dir_.string() +
                               ": not a real folder (a symlink or another kind of file), where "
                               "the cache keeps lock files of its own; nothing was done: "
                               "remove it (it is made again as a folder) or move the index");
  }
  struct stat shared {};
  if (use_lock_dir_ != lock_dir_ && ::stat(use_lock_dir_.c_str(), &shared) == 0 &&
      shared.st_dev == st.st_dev && shared.st_ino == st.st_ino) {
    throw Error(Errc::kIo, "lock folder " + lock_dir_.string() + " is the backend's lock folder " +
                               use_lock_dir_.string() +
                               " under another name; nothing was done: give the index a "
                               "folder of its own");
  }
}

CacheImpl::ImageLocks CacheImpl::LockImage(const std::string& key,
                                           std::chrono::milliseconds timeout) {
  ImageLocks locks;
  LockImage(key, timeout, &locks);
  return locks;
}

CacheImpl::ImageLocks CacheImpl::PassLockImage(const std::string& key,
                                               std::chrono::milliseconds timeout) {
  try {
    return LockImage(key, timeout);
  } catch (const Error& e) {
    if (e.code() != Errc::kIo) throw;
    log_->warn("image lock cannot be taken, its image is passed over key={} error=\"{}\"", key,
               e.what());
    throw Error(Errc::kBusy, "image lock " + key + " cannot be taken: " + e.what());
  }
}

void CacheImpl::LockImage(const std::string& key, std::chrono::milliseconds timeout,
                          ImageLocks* locks) {
  auto start = clock_->SteadyNow();
  locks->file = FileLock::Acquire(lock_dir_ / (key + ".lock"), timeout, "image lock " + key);
  auto left = timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                            clock_->SteadyNow() - start);
  locks->backend = backend_->AcquireLock(key, std::max(left, std::chrono::milliseconds(0)));
}

void CacheImpl::Event(const std::string& kind, const std::string& image_id, uint64_t bytes,
                      std::chrono::microseconds micros, const std::string& reason) {
  try {
    WithIndex([&](index::Index& ix) {
      ix.RecordEvent({Now(), kind, image_id, bytes, micros.count(), reason});
    });
  } catch (const std::exception& e) {
    // Stats are not worth failing a volume for.
    log_->warn("event not recorded kind={} image={} error={}", kind, image_id, e.what());
  }
}

void CacheImpl::PruneEvents() {
  try {
    uint64_t pruned = 0;
    for (uint64_t n = index::Index::kPruneBatch; n == index::Index::kPruneBatch; pruned += n) {
      n = WithIndex([&](index::Index& ix) { return ix.PruneEventBatch(Now()); });
    }
    if (pruned > 0) log_->info("events pruned rows={}", pruned);
    // The fates misses are labelled by go with the events (schema/008).
    pruned = WithIndex([&](index::Index& ix) { return ix.PruneEntryFates(Now()); });
    if (pruned > 0) log_->info("entry fates pruned rows={}", pruned);
    PruneSharedFates();
  } catch (const std::exception& e) {
    log_->warn("events not pruned error={}", e.what());
  }
}

EntryInfo CacheImpl::ToInfo(const index::EntryRow& row) {
  EntryInfo info;
  info.image_id = row.image_id;
  info.backend = row.backend;
  info.pool = row.pool;
  info.cache_name = row.cache_name;
  info.state = row.state == index::State::kReady      ? EntryState::kReady
               : row.state == index::State::kCreating ? EntryState::kCreating
                                                      : EntryState::kEvicting;
  info.virtual_size = row.virtual_size;
  info.allocated_bytes = row.allocated_bytes;
  info.disk_format = row.disk_format;
  info.checksum = row.checksum;
  if (auto colon = row.os_hash.find(':'); colon != std::string::npos) {
    info.os_hash_algo = row.os_hash.substr(0, colon);
    info.os_hash_value = row.os_hash.substr(colon + 1);
  }
  info.image_updated_at = row.image_updated_at;
  info.depth = row.depth;
  info.created_at = row.created_at;
  info.last_used = row.last_used;
  info.hits = row.hits;
  info.pinned = row.pinned;
  info.volumes = WithIndex([&](index::Index& ix) { return ix.CountVolumes(row.id); });
  return info;
}

std::optional<EntryInfo> CacheImpl::Lookup(const std::string& image_id) {
  ValidateImageId(image_id);
  auto row = FindLive(image_id);
  if (!row) return std::nullopt;
  return ToInfo(*row);
}

std::vector<EntryInfo> CacheImpl::List() {
  auto rows =
      WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); });
  std::vector<EntryInfo> out;
  for (const auto& row : rows) out.push_back(ToInfo(row));
  return out;
}

namespace {
Plan ParsePlan(const std::string& s) {
  for (Plan p : {Plan::kClone, Plan::kCopy, Plan::kFlattenClone, Plan::kMiss, Plan::kDirect,
                 Plan::kUncached, Plan::kInstant}) {
    if (PlanName(p) == s) return p;
  }
  return Plan::kClone;
}
}  // namespace

std::vector<VolumeInfo> CacheImpl::Volumes(const std::string& image_id) {
  if (!image_id.empty()) ValidateImageId(image_id);
  auto rows = WithIndex([&](index::Index& ix) { return ix.ListVolumes(); });
  std::vector<VolumeInfo> out;
  for (const auto& v : rows) {
    // A volume still being made (its name claimed) is not one yet.
    if (v.pool != backend_->volume_pool() || v.state != index::State::kReady) continue;
    if (!image_id.empty() && v.image_id != image_id) continue;
    out.push_back({v.name, v.image_id, ParsePlan(v.plan), v.depth, v.size_bytes, v.created_at});
  }
  return out;
}

Stats CacheImpl::GetStats() {
  Stats stats;
  auto totals = WithIndex([&](index::Index& ix) { return ix.EventTotalsByKind(); });
  for (const auto& t : totals) {
    if (t.kind == "hit") {
      stats.hits += t.count;
      stats.bytes_saved += t.bytes;
    } else if (t.kind == "miss" || t.kind == "uncached") {
      stats.misses += t.count;
      stats.bytes_downloaded += t.bytes;
    } else if (t.kind == "direct") {
      stats.direct += t.count;
      stats.bytes_saved += t.bytes;
    } else if (t.kind == "direct_refused") {
      stats.direct_refused += t.count;
    } else if (t.kind == "instant") {
      stats.instant += t.count;
    } else if (t.kind == "evict") {
      stats.evictions += t.count;
    } else if (t.kind == "stale") {
      stats.stale += t.count;
    } else if (t.kind == "error") {
      stats.errors += t.count;
    } else if (t.kind.starts_with("plan:")) {
      stats.by_plan.push_back(
          {t.kind.substr(5), PathStats{t.count, std::chrono::microseconds(t.micros)}});
    }
  }
  auto rows =
      WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); });
  for (const auto& row : rows) {
    if (row.pinned) {
      stats.pinned_bytes += AccountedBytes(row);
    } else if (row.state == index::State::kReady) {
      stats.entries += 1;
      stats.cached_bytes += AccountedBytes(row);
    }
  }
  stats.volumes = Volumes("").size();
  for (const auto& row : rows) {
    if (!row.pinned && row.state != index::State::kReady) stats.half_made += 1;
  }
  for (const auto& v : WithIndex([&](index::Index& ix) { return ix.ListVolumes(); })) {
    if (v.pool == backend_->volume_pool() && v.state == index::State::kCreating) {
      stats.half_made += 1;
    }
  }
  // Recorded by each eviction pass (bytes = how many): a count, not a scan of the backend.
  if (auto last = WithIndex([&](index::Index& ix) { return ix.LastEvent(kEventLeftAlone); })) {
    stats.left_alone = last->bytes;
  }
  for (const auto& l : backend_->SweepTemporaries(true)) {
    stats.leftovers += 1;
    stats.leftover_bytes += l.bytes;
  }
  stats.dead_work_dirs = fetch::ListDeadWorkDirs(options_.conversion.dir).size();
  if (backend_->CanImportInstantly()) {
    try {
      stats.imports_pending = PendingImports().size();
      for (const auto& bad : BadEntries()) {
        stats.bad_entries += 1;
        stats.bad_volumes += bad.volumes.size();
      }
    } catch (const Error& e) {
      log_->warn("instant miss records not read error={}", e.what());
    }
  }
  MissReasonStatsInto(&stats);
  stats.max_size_gb = options_.cache.max_size_gb;
  stats.max_count = options_.cache.max_count;
  try {
    stats.pool = ReadTotals();
  } catch (const Error& e) {
    log_->warn("pool totals not read error={}", e.what());
  }
  return stats;
}

}  // namespace engine
}  // namespace cachemgr
