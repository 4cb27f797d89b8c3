// The miss path: make sure an image is cached, filling it once across threads,
// processes and hosts.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <exception>

#include "engine/cache_impl.h"
#include "engine/failpoints.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "fetch/fetch.h"
#include "policy/eviction.h"

namespace cachemgr::engine {

namespace {

uint64_t EstimatedSize(const source::ImageMeta& meta) {
  return meta.virtual_size.value_or(meta.size.value_or(0));
}

// The limits on what the source may claim about an image (source.max_image_gb,
// conversion.max_virtual_size_gb).
source::MetaLimits Limits(const Options& o) {
  const auto max_virtual = static_cast<uint64_t>(o.conversion.max_virtual_size_gb * (1ull << 30));
  const auto max_image = static_cast<uint64_t>(o.source.max_image_gb * (1ull << 30));
  return {max_image ? max_image : max_virtual, max_virtual};
}

// An rbd:// location of the image and why it may not be cloned (empty: it may).
struct Candidate {
  std::string url;
  std::optional<source::RbdLocation> loc;
  std::string refused;
};

// The snapshot Glance's rbd store makes of every image it stores.
constexpr const char* kGlanceSnap = "snap";

// 8-4-4-4-12 lowercase or uppercase hex: how Glance names images.
bool IsCanonicalUuid(const std::string& id) {
  if (id.size() != 36) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (id[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(id[i]))) return false;
  }
  return true;
}

// The rbd:// locations on the backend's cluster the source gives, each judged. A location
// may be cloned only when it is in a pool the operator allows, names the image by its
// id (Glance's rbd store names each image by its id, snapshot "snap"), and the image there
// has the size the source says: anything else could be another tenant's disk.
std::vector<Candidate> DirectCandidates(const source::ImageMeta& meta,
                                        const std::string& cluster_id, source::Source& source,
                                        storage::Backend& backend) {
  std::vector<Candidate> out;
  if (cluster_id.empty() || meta.disk_format != "raw") return out;
  std::vector<std::string> urls;
  if (!meta.direct_url.empty()) urls.push_back(meta.direct_url);
  for (const auto& url : meta.locations) {
    if (std::find(urls.begin(), urls.end(), url) == urls.end()) urls.push_back(url);
  }
  std::optional<std::vector<std::string>> pools;  // asked only when there is an rbd location
  for (const auto& url : urls) {
    auto loc = source::ParseRbdLocation(url);
    // file://, http://, rbd://<pool>/<image>, another cluster's store: fetched, and
    // nothing suspicious about them.
    if (!loc || loc->fsid != cluster_id) continue;
    Candidate c{url, loc, ""};
    if (!pools) pools = source.DirectPools();
    if (std::find(pools->begin(), pools->end(), loc->pool) == pools->end()) {
      std::string allowed;
      for (const auto& p : *pools) allowed += (allowed.empty() ? "" : ",") + p;
      c.refused = "pool " + loc->pool + " is not allowed (source.glance.direct_pools: " +
                  (allowed.empty() ? "none" : allowed) + ")";
    } else if (!IsCanonicalUuid(meta.id)) {
      // Glance names every image by a UUID it chose, and its rbd store names the RBD image
      // the same; a disk named otherwise (volume-<uuid>, <uuid>_disk, a chosen name) is
      // someone else's, whatever the source claims.
      c.refused = "image id " + meta.id + " is not a Glance image UUID";
    } else if (loc->image != meta.id) {
      c.refused = "RBD image " + loc->image + " is not named by the image id";
    } else if (loc->snap != kGlanceSnap) {
      c.refused = "snapshot " + loc->snap + " is not the one Glance's rbd store makes (" +
                  kGlanceSnap + ")";
    } else if (!meta.size) {
      c.refused = "the source gives no size to check the RBD image against";
    } else {
      try {
        const uint64_t size = backend.Stat({loc->pool, loc->image}).size;
        bool protected_snap = false;
        for (const auto& snap : backend.ListSnapshots({loc->pool, loc->image})) {
          if (snap.name == loc->snap) protected_snap = snap.is_protected;
        }
        if (size != *meta.size) {
          c.refused = "RBD image is " + std::to_string(size) + " bytes, the source says " +
                      std::to_string(*meta.size);
        } else if (!protected_snap) {
          // Glance protects the snapshot it makes; an unprotected one is still changing
          // hands, or was never Glance's.
          c.refused = "snapshot " + loc->snap + " is not protected";
        }
      } catch (const Error& e) {
        c.refused = std::string("cannot stat the RBD image: ") + e.what();
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

// Removes what a failed fill made unless Commit() runs: the staging (or renamed) image
// and the creating row. Never throws.
class FillGuard {
 public:
  FillGuard(storage::Backend& backend, std::function<void()> delete_row,
            std::shared_ptr<spdlog::logger> log)
      : backend_(backend), delete_row_(std::move(delete_row)), log_(std::move(log)) {}
  ~FillGuard() {
    if (committed_) return;
    if (image_ && backend_.Unresponsive()) {  // the fill's record names it for the pass
      log_->warn("failed fill left image={} for the pass: the backend did not answer in time",
                 image_->name);
    } else if (image_) {
      try {
        if (backend_.Exists(*image_)) {
          for (const auto& snap : backend_.ListSnapshots(*image_)) {
            storage::SnapRef ref{*image_, snap.name};
            if (snap.is_protected) backend_.UnprotectSnapshot(ref);
            backend_.RemoveSnapshot(ref);
          }
          backend_.Remove(*image_);
        }
      } catch (const std::exception& e) {
        log_->warn("failed fill left image={} behind for gc error={}", image_->name, e.what());
      }
    }
    try {
      delete_row_();
    } catch (const std::exception& e) {
      log_->warn("failed fill left its row behind for gc error={}", e.what());
    }
  }
  void Track(const storage::ImageRef& image) { image_ = image; }
  void Commit() { committed_ = true; }

 private:
  storage::Backend& backend_;
  std::function<void()> delete_row_;
  std::shared_ptr<spdlog::logger> log_;
  std::optional<storage::ImageRef> image_;
  bool committed_ = false;
};

}  // namespace

source::ImageMeta CacheImpl::DescribeActive(const std::string& image_id) {
  return RequireActive(describes_.Do(
                           image_id, [&] { return source_->Describe(image_id); }, nullptr),
                       image_id);
}

source::ImageMeta CacheImpl::RequireActive(source::ImageMeta meta, const std::string& image_id) {
  if (meta.status != "active") {
    throw Error(Errc::kNotFound,
                "image " + image_id + ": status is '" + meta.status + "', not active");
  }
  if (meta.id.empty()) meta.id = image_id;
  if (meta.size && *meta.size == 0) {
    throw Error(Errc::kRefused, "image " + image_id + ": it is empty (0 bytes); an image "
                                                      "holds at least its disk's first sector");
  }
  // Before the size decides anything (admission, eviction, an uncached volume's size).
  source::RequireBounded(meta, Limits(options_));
  return meta;
}

bool CacheImpl::Admits(const source::ImageMeta& meta) const {
  uint64_t max_bytes = policy::MaxBytes({options_.cache.max_size_gb, options_.cache.max_count,
                                         false});
  return max_bytes == 0 || EstimatedSize(meta) <= max_bytes;
}

CacheImpl::Ensured CacheImpl::EnsureEntry(const source::ImageMeta& meta,
                                          const ProgressFn& progress, bool instant) {
  const Stopwatch timer;
  bool leader = false;
  Ensured result = flights_.Do(
      meta.id, [&] { return EnsureEntryLocked(meta, progress, instant); }, &leader);
  if (!leader) {
    // A waiter: the fill was someone else's.
    result.filled = false;
    result.instant = false;
    result.replaced = false;
    result.bytes_downloaded = 0;
    result.fill = {};
    result.wait = timer.Elapsed();
  }
  return result;
}

CacheImpl::Ensured CacheImpl::EnsureEntryLocked(const source::ImageMeta& meta,
                                                const ProgressFn& progress, bool instant) {
  const std::string name = EntryName(meta.id);
  const Stopwatch timer;
  auto fill_timeout = std::chrono::seconds(std::max<uint32_t>(options_.conversion.timeout_s, 60) +
                                           600);
  ImageLocks locks = LockImage(name, fill_timeout);
  Failpoint(kFillLockedFailpoint);
  Ensured out;
  out.wait = timer.Elapsed();

  // Another process or host may have filled it while we waited for the locks.
  if (auto row = FindLive(meta.id)) {
    if (row->state == index::State::kReady && !IsStale(*row, meta)) {
      out.row = *row;
      out.direct = row->depth > 0;
      return out;
    }
    if (row->state == index::State::kReady) {
      const auto action =
          EvictEntry(*row, "stale", "source checksum or updated_at changed", /*locked=*/true);
      if (!action.done) {
        // Still in place (its import is not committed, or another process changed its row):
        // a fill under its name would take it over with its clones.
        throw Error(Errc::kBusy, "image " + meta.id + ": the cached entry " + row->cache_name +
                                     " is out of date but cannot be replaced now (" +
                                     action.reason + "); try again once that is over");
      }
      log_->info("stale entry replaced image={} cached_checksum={} source_checksum={}", meta.id,
                 row->checksum, meta.checksum);
      out.replaced = true;
    } else {
      // We hold the image's locks, so whoever made this row is gone.
      CleanupLeftover(*row, nullptr);
    }
  }
  if (backend_->Exists(EntryRef(name))) {
    // A ready image without a row: a crash after rename, a lost index, another host.
    if (auto adopted = AdoptOrphan(name, &meta, nullptr)) {
      out.row = *adopted;
      out.direct = adopted->depth > 0;
      return out;
    }
    auto own = CheckOwnership(*backend_, EntryRef(name), kMarkEntry, nullptr);
    if (own.exists) {
      // Not ours (AdoptOrphan removes ours it cannot use): the fill could never rename
      // into place, so it is not started.
      throw Error(Errc::kAlreadyExists,
                  "entry of image " + meta.id + ": its name " + EntryRef(name).pool + "/" + name +
                      " is taken by an object this cache did not make (" + own.why +
                      "); it is left untouched: move it away to cache this image");
    }
  }

  // Nothing is evicted for the limits before the image's real size is known: a source
  // that overstates it (or a fill that fails) must not empty the cache. The pass after the
  // fill makes room. (The free-space floor is the exception: the caller made room for the
  // declared size first, MakeRoomForFill, since a full disk fails the fill itself.)
  const Stopwatch fill_timer;
  const std::string miss_reason = MissReason(meta.id);  // before the fill notes "cached"
  try {
    out.row = Fill(meta, progress, &out, instant);
  } catch (...) {
    // Nothing cached for the image: its locks would only pile up.
    if (!FindLive(meta.id)) locks.Discard();
    throw;
  }
  out.fill = fill_timer.Elapsed();
  out.filled = true;
  NoteFate(meta.id, "cached");
  // A direct clone costs no download: not a miss, so no reason.
  Event(out.direct ? "direct" : "miss", meta.id, out.bytes_downloaded, out.fill,
        out.direct ? "" : miss_reason);
  if (out.instant) Event("instant", meta.id, 0, out.fill);
  // With allocated accounting the real size is known only now. The limits are the pool's:
  // enforced under its pass lock after a reconcile; a pass running on another host makes
  // room itself.
  try {
    auto pass = LockPass(std::chrono::milliseconds(0));
    Reconcile(false, nullptr);
    EnforceLimits(std::nullopt, out.row.id, false, nullptr);
    pass->Discard();
  } catch (const Error& e) {
    // The image is cached either way; the next pass enforces what this could not.
    if (e.code() == Errc::kBusy) {
      log_->info("limits left to the pass running elsewhere image={}", meta.id);
    } else {
      log_->warn("limits not enforced after the fill image={} error={}", meta.id, e.what());
    }
  }
  return out;
}

index::EntryRow CacheImpl::Fill(const source::ImageMeta& described, const ProgressFn& progress,
                                Ensured* out, bool instant) {
  // What an instant miss does not need, a normal fill does: the file's own digests.
  std::optional<InstantPlan> instant_plan;
  std::string why_not;
  if (instant) instant_plan = PlanInstant(described, &why_not);
  if (instant && !instant_plan) {
    log_->info("instant miss not possible, fetching image={} reason=\"{}\"", described.id, why_not);
  }
  // A relay made for a plan (Glance) serves nothing more once the fill fails.
  struct ForgetRelayOnThrow {
    CacheImpl* cache;
    std::string image_id;
    int exceptions = std::uncaught_exceptions();
    ~ForgetRelayOnThrow() {
      if (cache && std::uncaught_exceptions() > exceptions) cache->ForgetRelayed(image_id);
    }
  } forget_relay{instant_plan && instant_plan->relayed_size != 0 ? this : nullptr, described.id};
  const source::ImageMeta meta = described.digests_deferred && !instant_plan
                                     ? RequireActive(source_->Describe(described.id), described.id)
                                     : described;
  const std::string final_name = EntryName(meta.id);
  const std::string staging = StagingName(meta.id);
  const auto staging_ref = EntryRef(staging);
  index::EntryRow row = InsertFillRow(meta, staging);
  Failpoint("after_insert_row");

  FillGuard guard(
      *backend_,
      [&] {
        WithIndex([&](index::Index& ix) { ix.DeleteEntry(row.id); });
        ShareFill(staging, false);
      },
      log_);
  // The pool's intent record too: if this host dies, another host's pass knows the staging
  // object (unmarked until the fetch ends) is the cache's, and removes it.
  ShareFill(staging, true);
  guard.Track(staging_ref);

  if (instant_plan) {
    PrepareInstant(meta, *instant_plan, staging_ref, &row);
    out->instant = true;
  } else if (auto direct = CloneDirect(meta, staging_ref, &row)) {
    row.depth = backend_->Depth(staging_ref);  // walked once here, recorded for every clone
    out->direct = true;
    log_->info("direct clone image={} parent={}/{}@{}", meta.id, direct->pool, direct->image,
               direct->snap);
  } else {
    out->bytes_downloaded = FetchToStaging(meta, staging_ref, progress, &row);
  }
  Failpoint("after_fetch");
  CompleteEntryObject(staging_ref, meta, &row);
  // Before the entry can be found under its name: whoever finds it (any host's pass)
  // finds the import to finish as well.
  if (instant_plan) RecordImport(meta, *instant_plan, row);

  backend_->Rename(staging_ref, final_name);
  guard.Track(EntryRef(final_name));
  Failpoint("after_rename");

  row.cache_name = final_name;
  row.state = index::State::kReady;
  row.allocated_bytes = backend_->AllocatedBytes(EntryRef(final_name));
  row.owner.clear();
  Failpoint("before_ready");
  WithIndex([&](index::Index& ix) { ix.UpdateEntry(row); });
  guard.Commit();
  if (instant_plan && instant_plan->relayed_size != 0) {
    try {
      ForgetRelayOf(staging, false);  // the imports record names the relay from now on
    } catch (const Error& e) {
      log_->warn("relay record not removed (the pass removes it) staging={} error={}", staging,
                 e.what());
    }
  }
  ShareFill(staging, false);
  Failpoint("after_ready");
  log_->info("cached image={} entry={} bytes={} depth={}", meta.id, final_name,
             row.virtual_size, row.depth);
  return row;
}

index::EntryRow CacheImpl::InsertFillRow(const source::ImageMeta& meta,
                                         const std::string& staging) {
  const auto now = Now();
  index::EntryRow row;
  row.backend = backend_kind_;
  row.pool = location_;
  row.image_id = meta.id;
  row.cache_name = staging;
  row.snap_name = kSnapName;
  row.state = index::State::kCreating;
  row.disk_format = meta.disk_format;
  row.checksum = meta.checksum;
  row.os_hash = meta.OsHash();
  row.image_updated_at = meta.updated_at;
  row.created_at = now;
  row.last_used = now;
  row.owner = owner_;
  row.id = WithIndex([&](index::Index& ix) { return ix.InsertEntry(row); });
  return row;
}

std::optional<source::RbdLocation> CacheImpl::CloneDirect(const source::ImageMeta& meta,
                                                          const storage::ImageRef& staging_ref,
                                                          index::EntryRow* row) {
  for (auto& c : DirectCandidates(meta, backend_->cluster_id(), *source_, *backend_)) {
    if (c.refused.empty()) {
      storage::SnapRef parent{{c.loc->pool, c.loc->image}, c.loc->snap};
      backend_->Clone(parent, staging_ref);
      const uint64_t size = backend_->Stat(staging_ref).size;
      if (size == *meta.size) {
        row->virtual_size = size;
        return c.loc;
      }
      // The snapshot is not the image head: its size is what the clone shows.
      backend_->Remove(staging_ref);
      c.refused = "snapshot " + c.loc->snap + " is " + std::to_string(size) +
                  " bytes, the source says " + std::to_string(*meta.size);
    }
    log_->warn("direct clone refused, fetching instead image={} location={} reason=\"{}\"", meta.id,
               c.url, c.refused);
    Event("direct_refused", meta.id, 0, {});
  }
  return std::nullopt;
}

uint64_t CacheImpl::FetchToStaging(const source::ImageMeta& meta,
                                   const storage::ImageRef& staging_ref,
                                   const ProgressFn& progress, index::EntryRow* row) {
  fetch::FetchOptions fetch_options;
  fetch_options.conversion = options_.conversion;
  fetch_options.max_image_bytes = Limits(options_).max_image_bytes;
  fetch_options.allow_unverified = options_.source.allow_unverified;
  if (progress) {
    fetch_options.progress = [&](const std::string& stage, uint64_t done, uint64_t total) {
      progress(Progress{meta.id, stage, done, total});
    };
  }
  // The floor's room was made for the size the source declared; a converted image can be
  // larger (a compressed qcow2 with no declared virtual size): room for the rest, or refused.
  std::optional<FloorReservations::Hold> larger;  // until the fill is done
  fetch_options.before_import = [&](uint64_t virtual_size) {
    if (virtual_size <= EstimatedSize(meta)) return;
    auto real = meta;
    real.virtual_size = virtual_size;
    larger.emplace(MakeRoomForFill(real, /*with_volume=*/false).hold);
  };
  auto fetched = fetch::FetchInto(*source_, meta, *backend_, staging_ref, fetch_options, log_);
  row->virtual_size = fetched.virtual_size;
  row->depth = 0;
  if (row->checksum.empty()) row->checksum = fetched.md5;
  if (row->os_hash.empty() && !fetched.os_hash_value.empty()) {
    row->os_hash = fetched.os_hash_algo + ":" + fetched.os_hash_value;
  }
  return fetched.bytes_downloaded;
}

void CacheImpl::CompleteEntryObject(const storage::ImageRef& staging_ref,
                                    const source::ImageMeta& meta, index::EntryRow* row) {
  // The mark first: from here on the object carries its claim as well as its name.
  row->identity = Mark(*backend_, staging_ref, kMarkEntry);
  const std::map<std::string, std::string> metadata = {
      {kMetaImageId, meta.id},
      {kMetaUpdatedAt, row->image_updated_at},
      {kMetaChecksum, row->checksum},
      {kMetaOsHash, row->os_hash},
      {kMetaDiskFormat, row->disk_format},
      {kMetaDepth, std::to_string(row->depth)},
      {kMetaCreatedAt, std::to_string(row->created_at)},
  };
  for (const auto& [key, value] : metadata) backend_->SetMetadata(staging_ref, key, value);
  backend_->SetMetadata(staging_ref, kMetaSchema, kMetaSchemaVersion);  // last: complete
  Failpoint("after_metadata");

  storage::SnapRef snap{staging_ref, kSnapName};
  backend_->CreateSnapshot(snap);
  Failpoint("after_snapshot");
  backend_->ProtectSnapshot(snap);
  Failpoint("after_protect");
}

std::optional<index::EntryRow> CacheImpl::RowFromMetadata(const std::string& name) {
  auto ref = EntryRef(name);
  auto own = CheckOwnership(*backend_, ref, kMarkEntry, nullptr);
  if (!own.ours) return std::nullopt;
  std::map<std::string, std::string> md;
  try {
    md = backend_->GetMetadata(ref);
  } catch (const Error&) {
    return std::nullopt;
  }
  auto get = [&](const char* key) -> std::string {
    auto it = md.find(key);
    return it == md.end() ? "" : it->second;
  };
  if (get(kMetaSchema) != kMetaSchemaVersion) return std::nullopt;
  if (!get(kMetaBad).empty()) return std::nullopt;  // its import found other bytes
  const std::string image_id = get(kMetaImageId);
  if (image_id.empty() || EntryName(image_id) != name) return std::nullopt;
  bool protected_snap = false;
  for (const auto& s : backend_->ListSnapshots(ref)) {
    if (s.name == kSnapName && s.is_protected) protected_snap = true;
  }
  if (!protected_snap) return std::nullopt;

  index::EntryRow row;
  row.backend = backend_kind_;
  row.pool = location_;
  row.image_id = image_id;
  row.cache_name = name;
  row.snap_name = kSnapName;
  row.state = index::State::kReady;
  row.identity = own.identity;
  row.virtual_size = backend_->Stat(ref).size;
  row.allocated_bytes = backend_->AllocatedBytes(ref);
  row.disk_format = get(kMetaDiskFormat);
  row.checksum = get(kMetaChecksum);
  row.os_hash = get(kMetaOsHash);
  row.image_updated_at = get(kMetaUpdatedAt);
  try {
    row.depth = static_cast<uint32_t>(std::stoul(get(kMetaDepth)));
    row.created_at = std::stoll(get(kMetaCreatedAt));
  } catch (...) {
    return std::nullopt;
  }
  // Not "now": an adopted entry is as old as its last use the pool knows (the reconcile
  // merges that in), else as its fill; adopting must not make it the most recent.
  row.last_used = row.created_at;
  return row;
}

std::optional<index::EntryRow> CacheImpl::AdoptOrphan(const std::string& name,
                                                      const source::ImageMeta* meta,
                                                      std::vector<EvictAction>* actions) {
  auto ref = EntryRef(name);
  auto own = CheckOwnership(*backend_, ref, kMarkEntry, nullptr);
  if (!own.exists) return std::nullopt;
  if (!own.ours) {
    LeaveAlone(name, own.why, actions);
    return std::nullopt;
  }
  auto row = RowFromMetadata(name);
  if (row && (!meta || !IsStale(*row, *meta))) {
    row->id = WithIndex([&](index::Index& ix) { return ix.InsertEntry(*row); });
    log_->info("adopted entry image={} entry={}", row->image_id, name);
    NoteFate(row->image_id, "cached", /*share=*/false);  // its filler shared it
    if (actions) {
      actions->push_back({"gc", row->image_id, name, row->virtual_size,
                          "ready entry without a row: adopted", true});
    }
    return row;
  }
  // Ours, but incomplete or stale: it goes (deferred if something was cloned from it).
  bool has_children = false;
  try {
    has_children = !backend_->Children({ref, kSnapName}).empty();
  } catch (const Error&) {
  }
  // Moved to the trash for its clones, or by the removal itself for what else reads it
  // (a disk another tool made on the file): either way a pinned row keeps the record of
  // it, so the pass purges it (by its identity) once nothing reads it. The row goes in
  // first: a kill after the move leaves it, and one before leaves a row the purge drops
  // (its object is not in the trash) and the orphan for the next pass.
  index::EntryRow pinned = row.value_or(index::EntryRow{});
  pinned.backend = backend_kind_;
  pinned.pool = location_;
  if (pinned.image_id.empty()) pinned.image_id = name;
  pinned.cache_name = name;
  pinned.snap_name = kSnapName;
  pinned.state = index::State::kReady;
  pinned.identity = own.identity;
  pinned.pinned = true;
  pinned.id = WithIndex([&](index::Index& ix) { return ix.InsertEntry(pinned); });
  const bool trashed = has_children
                           ? backend_->Remove(ref) == storage::RemoveOutcome::kTrashed
                           : RemoveLeftObject(ref) == storage::RemoveOutcome::kTrashed;
  if (trashed) {
    ShareDeferred(pinned, AccountedBytes(pinned));
  } else {
    WithIndex([&](index::Index& ix) { ix.DeleteEntry(pinned.id); });
  }
  log_->info("removed orphan entry image={} entry={}", row ? row->image_id : "", name);
  if (actions) {
    actions->push_back({"gc", row ? row->image_id : "", name, 0,
                        row ? "stale entry without a row" : "incomplete entry without a row",
                        true});
  }
  return std::nullopt;
}

}  // namespace cachemgr::engine
