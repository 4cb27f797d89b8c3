// engine/cache_impl.h: the Cache behind the public API, split by responsibility:
//   cache_impl.cpp   Open, wiring, lookups, stats
//   fill.cpp         the miss path: single flight, staging, metadata, snapshot, rename
//   volume.cpp       the hit path: clone plan, clone/copy/flatten, resize, volume rows
//   evict.cpp        evicting one entry, the limits, purging deferred entries
//   gc.cpp           what dead fills, evictions and volume creates left
//   pass.cpp         the periodic eviction pass, step by step
//   maintenance.cpp  verify, rebuild-index, doctor, source listing
//   shared.cpp       what the hosts sharing the pool keep on it; reconciling with it
//   floor.cpp        the free-space floor (cache.min_free_*): room before a miss, the pass
//   instant.cpp      the instant miss: which images qualify, the entry made as an import
//   instant_import.cpp  the import's end: copy, check, commit or mark bad; resume; records
//   instant_relay.cpp   Glance images through the relay: what qualifies, the relay's life
// Over 600 lines: it is the one declaration of CacheImpl, whose members the files above
// share; each section below names the file that defines it.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cachemgr/cache.h"
#include "engine/live_keys.h"
#include "engine/floor_reservations.h"
#include "engine/instant_records.h"
#include "engine/single_flight.h"
#include "index/index.h"
#include "policy/clone_plan.h"
#include "policy/free_space.h"
#include "source/relay.h"
#include "source/source.h"
#include "storage/backend.h"
#include "util/clock.h"

namespace cachemgr::engine {

class VolumeGuard;  // volume.cpp
using VolumeGuardRef = VolumeGuard*;

// Keys of the metadata written on every entry image (RBD image-meta; a sidecar file
// locally). kMetaSchema is written last: its presence marks the metadata complete.
inline constexpr const char* kMetaImageId = "cachemgr.image_id";
inline constexpr const char* kMetaUpdatedAt = "cachemgr.updated_at";
inline constexpr const char* kMetaChecksum = "cachemgr.checksum";
inline constexpr const char* kMetaOsHash = "cachemgr.os_hash";
inline constexpr const char* kMetaDiskFormat = "cachemgr.disk_format";
inline constexpr const char* kMetaDepth = "cachemgr.depth";
inline constexpr const char* kMetaCreatedAt = "cachemgr.created_at";
inline constexpr const char* kMetaSchema = "cachemgr.schema";
inline constexpr const char* kMetaSchemaVersion = "1";
// Set on an entry whose instant-miss import found bytes other than the image's: never
// adopted, never cloned again (instant_import.cpp).
inline constexpr const char* kMetaBad = "cachemgr.bad";
// The event each eviction pass records with, as its bytes, how many objects it left alone.
inline constexpr const char* kEventLeftAlone = "pass_left_alone";

// What the engine works with, made by Cache::Open from the options, or by a test (a
// fault-injecting backend, a fake clock). Every part is required.
struct Parts {
  std::unique_ptr<storage::Backend> backend;
  std::unique_ptr<source::Source> source;
  std::unique_ptr<index::Index> index;
  std::shared_ptr<const util::Clock> clock;
};

class CacheImpl final : public Cache {
 public:
  // The engine's own constructor (not the public API): `options` validated by the caller,
  // `logger` non-null.
  CacheImpl(Options options, std::shared_ptr<spdlog::logger> logger, Parts parts);
  ~CacheImpl() override;

  CreateVolumeResult CreateVolume(const CreateVolumeRequest& request) override;
  void DeleteVolume(const std::string& volume) override;
  PrefillResult Prefill(const std::string& image_id, const ProgressFn& progress) override;
  EvictReport RunEvictionPass(const EvictOptions& options) override;
  std::optional<EntryInfo> Lookup(const std::string& image_id) override;
  std::vector<EntryInfo> List() override;
  std::vector<VolumeInfo> Volumes(const std::string& image_id) override;
  Stats GetStats() override;
  WhatIfReport WhatIf(double target_hit_ratio) override;  // reuse.cpp
  VerifyResult Verify(const std::string& image_id) override;
  RebuildReport RebuildIndex() override;
  std::vector<std::string> SourceImages() override;
  std::vector<Check> Doctor() override;
  ImportResult FinishImport(const std::string& image_id, const ProgressFn& progress) override;
  // `drain_here` false (the pass): a relayed import's drain is left to DrainDeferredRelays.
  ImportResult FinishImport(const std::string& image_id, const ProgressFn& progress,
                            bool drain_here);
  std::vector<ImportResult> WaitForImports() override;
  int HandOverRelay(const std::string& image_id) override;
  void AdoptRelay(int fd) override;
  std::vector<BadEntry> BadEntries() override;

 private:
  Check SecretFilesCheck() const;
  // What EnsureEntry did to make sure an image is cached.
  struct Ensured {
    index::EntryRow row;
    bool filled = false;    // this caller fetched (or direct-cloned) the entry
    bool direct = false;    // the entry is a clone of the source's own RBD image
    bool instant = false;   // the entry was made as an import still running (instant.cpp)
    bool replaced = false;  // a stale entry was replaced
    uint64_t bytes_downloaded = 0;
    std::chrono::microseconds fill{}, wait{};
  };
  // The per-image locks across processes and hosts, held together.
  struct ImageLocks {
    std::unique_ptr<FileLock> file;
    std::unique_ptr<storage::Lock> backend;
    // For an image no longer cached: its lock file and backend lock object go when the
    // locks are released (they would pile up otherwise). False when either stays (a
    // file at its name that is not one a lock makes).
    bool Discard() {
      const bool file_gone = !file || file->Discard();
      const bool backend_gone = !backend || backend->Discard();
      return file_gone && backend_gone;
    }
  };

  // --- shared helpers (cache_impl.cpp)
  template <class F>
  auto WithIndex(F&& f) {
    std::lock_guard lock(index_mu_);
    return f(*index_);
  }
  std::optional<index::EntryRow> FindLive(const std::string& image_id);
  storage::ImageRef EntryRef(const std::string& name) const;
  storage::SnapRef EntrySnap(const index::EntryRow& row) const;
  uint64_t AccountedBytes(const index::EntryRow& row) const;
  bool IsStale(const index::EntryRow& row, const source::ImageMeta& meta) const;
  // Locks key (an entry name) in this host's lock dir and on the backend.
  ImageLocks LockImage(const std::string& key, std::chrono::milliseconds timeout);
  // For a pass: a lock that cannot be taken for what is at its name (kIo: a folder, a FIFO,
  // a link where a lock file goes) is logged and reported busy, so the pass passes over
  // that one image and goes on; doctor names the file.
  ImageLocks PassLockImage(const std::string& key, std::chrono::milliseconds timeout);
  // Throws when the index-side lock folder is not a real folder of its own.
  void RequireOwnLockDir() const;
  // The same into `locks`: when the backend's lock is not had, the file lock stays held
  // there (a caller that made it for a key no longer cached discards it).
  void LockImage(const std::string& key, std::chrono::milliseconds timeout, ImageLocks* locks);
  // `reason`: why a miss happened (MissReason), for the kinds miss and uncached only.
  void Event(const std::string& kind, const std::string& image_id, uint64_t bytes,
             std::chrono::microseconds micros, const std::string& reason = "");
  // Deletes the events cache.events_max_age_days / events_max_rows no longer keep, a
  // bounded batch per hold of the index; logs a failure (stats are not worth a pass).
  void PruneEvents();
  EntryInfo ToInfo(const index::EntryRow& row);
  // Records an access of the entry (hit or not) in the reuse-distance histograms, inside
  // the caller's transaction on `ix` but in a savepoint of its own: a failure is logged
  // and never fails the volume (reuse.cpp).
  void RecordReuse(index::Index& ix, const index::EntryRow& entry, bool hit);
  // Unix seconds from the engine's clock: every time the engine records or compares.
  int64_t Now() const { return clock_->WallSeconds(); }

  // --- why misses happen (miss_reasons.cpp)
  // The reason of a miss of `image_id` now, from what last happened to its entry (here,
  // or on any host sharing the pool, the newer): "cold", "capacity", "stale" or "lost"
  // (too_big is the uncached path's own).
  std::string MissReason(const std::string& image_id);
  // Records what happened to the image's entry: "cached" when it became ready (filled or
  // adopted), or the kind of an eviction ("evict" and other limits: capacity; "stale",
  // "gone": stale); `share`: in the pool's table too, for the other hosts. Never throws:
  // a reason is not worth failing a fill or an eviction.
  void NoteFate(const std::string& image_id, const std::string& what, bool share = true);
  // Bounds the pool's table of fates as the events are (the pass, under its lock).
  void PruneSharedFates();
  void MissReasonStatsInto(Stats* stats);

  // --- miss path (fill.cpp)
  source::ImageMeta DescribeActive(const std::string& image_id);
  // The checks DescribeActive makes, on an answer got otherwise (a listing).
  source::ImageMeta RequireActive(source::ImageMeta meta, const std::string& image_id);
  bool Admits(const source::ImageMeta& meta) const;
  // `instant`: the caller can serve an instant miss (CreateVolume, cache.instant_miss).
  Ensured EnsureEntry(const source::ImageMeta& meta, const ProgressFn& progress,
                      bool instant = false);
  Ensured EnsureEntryLocked(const source::ImageMeta& meta, const ProgressFn& progress,
                            bool instant);
  index::EntryRow Fill(const source::ImageMeta& meta, const ProgressFn& progress, Ensured* out,
                       bool instant = false);
  // Fill's steps: the creating row (the intent record, naming the staging object before
  // it is made); a clone of the source's own RBD image when one may be cloned (its
  // location; nullopt: fetch instead); the fetch and conversion (bytes downloaded); the
  // mark, metadata and protected snapshot that make the object an entry.
  index::EntryRow InsertFillRow(const source::ImageMeta& meta, const std::string& staging);
  std::optional<source::RbdLocation> CloneDirect(const source::ImageMeta& meta,
                                                 const storage::ImageRef& staging_ref,
                                                 index::EntryRow* row);
  uint64_t FetchToStaging(const source::ImageMeta& meta, const storage::ImageRef& staging_ref,
                          const ProgressFn& progress, index::EntryRow* row);
  void CompleteEntryObject(const storage::ImageRef& staging_ref, const source::ImageMeta& meta,
                           index::EntryRow* row);
  // An entry-named image with no live row (a crash after rename, a lost index, another
  // host's fill): adopted as a ready row when its metadata is complete (and, given
  // `meta`, fresh); removed otherwise. Caller holds the image's locks.
  std::optional<index::EntryRow> AdoptOrphan(const std::string& name,
                                             const source::ImageMeta* meta,
                                             std::vector<EvictAction>* actions);
  std::optional<index::EntryRow> RowFromMetadata(const std::string& name);

  // --- the instant miss (instant.cpp, instant_import.cpp)
  // Whether misses may be instant here: cache.instant_miss on a backend that can.
  bool InstantWanted() const;
  // How an image qualifies: its file's shared path and version, the librbd source spec.
  struct InstantPlan {
    std::string spec;           // librbd migration source spec
    std::string path;           // the file every host reads through
    std::string format;         // "raw" | "qcow2"
    std::string file_identity;  // util::FileIdentity of the file when planned
                                // (Glance: its version, RelayedIdentity)
    uint64_t relayed_size = 0;  // Glance through the relay: the image's bytes (path: its URL)
    uint64_t virtual_size = 0;  // relayed: the disk's bytes librbd must see
  };
  // nullopt (with `why_not`) when the image does not qualify; kRefused when the image is
  // unsafe whatever the path (the same checks as a normal fill's).
  std::optional<InstantPlan> PlanInstant(const source::ImageMeta& meta, std::string* why_not);
  // Fill's instant step: the staging object made as an import of the plan, and the pool's
  // record of the import (written before the entry can be renamed into place).
  void PrepareInstant(const source::ImageMeta& meta, const InstantPlan& plan,
                      const storage::ImageRef& staging_ref, index::EntryRow* row);
  void RecordImport(const source::ImageMeta& meta, const InstantPlan& plan,
                    const index::EntryRow& row);
  // Glance through the relay (instant_relay.cpp): whether the image qualifies (nullopt
  // with `why_not` when not); the relay made to serve the plan (PrepareInstant); the relay
  // of a record made ready to serve again (a resumed import); its image forgotten.
  std::optional<InstantPlan> PlanRelayed(const source::ImageMeta& meta, std::string* why_not);
  // True when this call made `image_id` served here (it was not before).
  bool ServeRelayed(const std::string& image_id, const std::string& url, uint64_t size);
  // HOST:PORT of every relay the pool's records name (a new relay never takes one).
  std::set<std::string> RecordedRelayAddresses();
  void ForgetRelayed(const std::string& image_id);
  source::Relay::Reader RelayReader();  // the source's Range reads
  // The pool's `relays` table: a staging object made through a relay, recorded before it
  // exists; ServeRelayOf serves its relay before anything opens it (false, with an
  // action, when only the relay's host can: the object is left to that host's pass).
  void RecordRelay(const std::string& object, const std::string& url, uint64_t size);
  bool ServeRelayOf(const std::string& object, std::vector<EvictAction>* actions);
  // Erases its record (and, with `stop_serving`, stops serving its image here).
  void ForgetRelayOf(const std::string& object, bool stop_serving);
  // The pass: records whose object is gone and whose fill ended.
  void SweepRelayRecords(bool dry_run);
  // The pass's first step: the relays of pending imports (the pool's records) and of dead
  // fills' staging objects that this host can serve; and its last, after its locks are
  // let go: the drains FinishImport left to it.
  std::vector<std::string> ServePendingRelays();  // the images it newly served
  // A hit's: the relay of the import pending on `cache_name`, when nobody serves it and
  // this host has its address. True when this process newly serves it (its import is
  // then to run); false, with a warning, on any error (the clone tries all the same).
  bool ServeRelayForHit(const std::string& cache_name);
  // Why a relayed import can never finish (Glance lost, changed or cannot serve the image
  // it described); nullopt when it may yet (Glance unreachable: the next pass retries).
  std::optional<std::string> RelayedSourceGone(const ImportRecord& rec);
  void DrainDeferredRelays();
  // After the commit of a relayed import: waits while a volume made from the entry before
  // it is open elsewhere (its client may still read through the relay), then forgets it.
  void DrainRelayed(const std::string& image_id, const std::vector<storage::ImageRef>& volumes);
  // Runs FinishImport on an engine thread (CreateVolume without defer_import).
  void StartImportThread(const std::string& image_id);
  // The pass's step: imports nobody runs are resumed (and finished) here; bad entries
  // whose volumes are all gone are forgotten.
  void ResumeImports(bool dry_run, std::vector<EvictAction>* actions);
  // FindLive, except that a ready row of an entry an import found bad (on any host) is
  // evicted and not returned (kBusy when it cannot be evicted now).
  std::optional<index::EntryRow> UsableRow(const std::string& image_id);
  // A row with no digests (an instant miss's import computes them, maybe on another
  // host) takes them from the entry's metadata once they are there.
  void RefreshDigests(index::EntryRow* row);
  // Whether the entry `name` has an import not finished (never evicted meanwhile).
  bool ImportPending(const std::string& name);
  // The imports not finished: entry name -> image id.
  std::map<std::string, std::string> PendingImports();

  // --- hit path (volume.cpp)
  // `source_checked_at`: when the source confirmed the entry current for this call
  // (unix seconds), recorded with the volume; 0 when it was not asked.
  // Both make the volume under the claim's staging name and then place it (PlaceVolume),
  // or, for a clone the backend makes in one step, at its name directly (InPlace).
  CreateVolumeResult MakeVolume(const index::EntryRow& entry, const CreateVolumeRequest& request,
                                index::VolumeRow* claim, VolumeGuardRef guard,
                                std::optional<Plan> fill_plan, int64_t source_checked_at = 0,
                                const std::function<int64_t()>& confirm = {});
  // The answer of a source asked while a hit's clone was made (CreateVolume): the time
  // to record as the entry's source check (asked_at; 0 when the source was unreachable
  // and the entry is served as it is), or StaleHit thrown (volume.cpp) with the answer in
  // *stale_meta when the image changed since the entry was made.
  // Whether making a volume by `plan` writes the image's bytes (a copy, a flatten, or a
  // local clone in clone_mode copy), not a thin clone.
  bool WritesImage(policy::ClonePlan plan) const;
  int64_t ConfirmedBySource(const index::EntryRow& row, std::future<source::ImageMeta>& asked,
                            int64_t asked_at, std::optional<source::ImageMeta>* stale_meta);
  // A volume fetched straight from the source, no entry made; `why` is logged.
  CreateVolumeResult MakeUncached(const source::ImageMeta& meta, const CreateVolumeRequest& request,
                                  index::VolumeRow* claim, VolumeGuardRef guard,
                                  const char* why);
  // Claims the volume name: a creating row with this process as owner and a random
  // staging name, inserted before anything is made. kAlreadyExists if the name is held.
  index::VolumeRow ClaimVolume(const CreateVolumeRequest& request);
  // Marks the volume made under the claim's staging name, grows it to `size`, records
  // its identity and renames it into place without replacing anything.
  void PlaceVolume(index::VolumeRow* claim, VolumeGuardRef guard, uint64_t size,
                   uint64_t current_size);
  // The error for a volume name found taken on the backend as the volume was to take it;
  // `e` is the backend's, whose words name what holds it.
  static Error VolumeNameTaken(const std::string& volume, const Error& e);
  // A clone that takes the volume's name in one step where the backend can
  // (Backend::CloneInPlace): at `at`, `size` bytes, `publish` run once it exists under no
  // name. `placed`: whether it did (else it was made under the staging name).
  struct InPlace {
    storage::ImageRef at;
    uint64_t size = 0;
    storage::Backend::PublishFn publish;
    std::string identity;  // the clone's, once `publish` has run
    bool placed = false;
  };
  // Makes the volume object `volume` (the staging name) from the entry by `how`, or, for a
  // clone with `in_place` set, the volume at its name where the backend can; returns the
  // plan used. `use` receives the entry's shared use lock, to hold until it is recorded.
  Plan MakeFromEntry(const index::EntryRow& entry, const CreateVolumeRequest& request,
                     policy::ClonePlan how, const storage::ImageRef& volume, VolumeGuardRef guard,
                     std::unique_ptr<FileLock>* use, InPlace* in_place = nullptr);
  // The clone of MakeFromEntry: in place where `in_place` is set and the backend can,
  // else under `staging`; the guard tracks what it made.
  void CloneVolume(const storage::SnapRef& snap, const storage::ImageRef& staging,
                   InPlace* in_place, VolumeGuardRef guard);
  // The entry's shared use lock, taken once the row is still ready and its object the one
  // the row recorded (kNotFound otherwise).
  std::unique_ptr<FileLock> HoldEntry(const index::EntryRow& entry);
  // Runs `make` (a clone or copy of the entry's snapshot); a failure because the snapshot
  // is no longer protected (another host half-evicted it) becomes kNotFound.
  void FromEntrySnapshot(const index::EntryRow& entry, const std::function<void()>& make);
  void FlattenEntry(const index::EntryRow& entry);
  // Throws unless the object at the entry's name is the one `row` recorded: kNotFound
  // (and the row dropped) when it is gone, kAlreadyExists when another object is there.
  void RequireEntryObject(const index::EntryRow& row);

  // --- hosts sharing the pool (shared.cpp)
  // The pool's pass lock (one pass at a time across hosts); kBusy naming it after `wait`.
  std::unique_ptr<storage::Lock> LockPass(std::chrono::milliseconds wait);
  // Tells the other hosts of a use of `row`, at most once a minute per entry; never throws.
  void ShareUse(const index::EntryRow& row, int64_t now);
  // Records (and forgets) an entry kept in the trash for its clones, so any host purges it.
  void ShareDeferred(const index::EntryRow& row, uint64_t bytes);
  std::map<std::string, std::string> SharedDeferred();
  // Records a fill's staging name in the pool before anything is made (started), and
  // forgets it when the fill ends either way (never throws then).
  void ShareFill(const std::string& staging, bool started);
  std::map<std::string, std::string> SharedFills();
  void ForgetFill(const std::string& staging);
  void ForgetDeferred(const std::string& identity);
  // Brings this index in line with the pool: rows of entries another host evicted or
  // replaced are dropped (a replacement adopted), entries other hosts made are adopted,
  // and last uses are merged both ways. Safe without the pass lock (each change is made
  // under the image's locks); the pass runs it under that lock before the limits.
  // (reconcile.cpp) Skipped while the pool and the index are as they were when it last
  // found them in step (PoolLook).
  void Reconcile(bool dry_run, std::vector<EvictAction>* actions);
  // Merges last uses with the pool's `uses` table: every row (`rows`, or read here when
  // null) unless the table is unchanged since this index merged it; names neither listed
  // in `objects` nor known are forgotten only when the pool was listed.
  void ShareLastUses(int64_t now,
                     const std::unordered_map<std::string, index::ReconcileRow>* rows,
                     const std::map<std::string, std::string>* objects, bool changed);
  // A pass step that looks at the whole pool and found nothing to do records "the look"
  // (the pools' Backend::PoolStamp and the index's entries version) under its key in the
  // index's pass state; while it is the same, the step has nothing new to find. ""
  // (never the same) when the backend gives no stamp.
  std::string PoolLook();
  bool LookUnchanged(const char* key, const std::string& look);
  void RecordLook(const char* key, const std::string& look);
  void PublishTotals(const EvictReport& report);
  PoolTotals ReadTotals();
  // Why this host's id looks shared with another machine (the pool's `hosts` table names
  // another machine id for it), or "".
  std::string HostIdClash();

  // --- eviction (evict.cpp)
  // Evicts one entry (removed, or deferred to the trash while it has clones). Takes the
  // image's locks unless `locked`. Returns what was done.
  EvictAction EvictEntry(index::EntryRow row, const std::string& kind, const std::string& reason,
                         bool locked);
  // Several, in order, with the same outcome as one EvictEntry each: a few at a time are
  // locked first, and the backend then decides their clones from one look at the store
  // (Backend::BeginRemovals).
  struct Victim {
    index::EntryRow row;
    std::string kind, reason;
  };
  std::vector<EvictAction> EvictEntries(const std::vector<Victim>& victims);
  // EvictEntry's halves: the entry's image lock (unless `locked`: the caller has it) and
  // its exclusive use lock (nullopt once both are held; else what was done instead), and
  // the eviction with them held.
  struct VictimLocks {
    ImageLocks image;
    std::unique_ptr<FileLock> use;
  };
  std::optional<EvictAction> LockVictim(const index::EntryRow& row, const std::string& kind,
                                        const std::string& reason, bool locked,
                                        VictimLocks* held);
  EvictAction EvictLocked(index::EntryRow row, const std::string& kind, const std::string& reason,
                          VictimLocks held);
  // EvictEntry's steps: what keeps the entry's object (clones, or its place in the trash
  // for them); its removal (false: a clone made meanwhile keeps it); its move to the trash
  // with the row pinned.
  struct EntryClones {
    size_t count = 0;       // clones of its snapshot seen
    bool in_trash = false;  // already in the trash, kept there for its clones
  };
  // An eviction that failed with the entry whole (its object the row's, its snapshot
  // still protected): the row goes from evicting back to ready, owned by `made_by`.
  void RestoreIfWhole(const index::EntryRow& row, const storage::ImageRef& ref,
                      const storage::SnapRef& snap, const std::string& made_by);
  // The trash entry of the object `name` that has `identity` (empty: one of that name
  // that still has clones; `any`: any of that name), if one is in the trash.
  std::optional<storage::TrashEntry> TrashedCopy(const std::string& name,
                                                 const std::string& identity, bool any = false);
  EntryClones FindClones(const index::EntryRow& row, const storage::ImageRef& ref,
                         const storage::SnapRef& snap);
  // Removes the entry's object: kRemoved, kTrashed (kept in the trash for users that are
  // no clones of its snapshot), or nullopt when a clone made meanwhile keeps it.
  std::optional<storage::RemoveOutcome> RemoveUnlessCloned(const index::EntryRow& row,
                                                           const storage::ImageRef& ref,
                                                           const storage::SnapRef& snap);
  void DeferEntry(index::EntryRow* row, const EntryClones& clones, EvictAction* action);
  // Removes an image and all its snapshots; the failpoints are those of eviction.
  // kTrashed: something still reads it (local: a disk another tool made on the file).
  storage::RemoveOutcome RemoveImageFully(const storage::ImageRef& ref);
  // RemoveImageFully for an object a dead owner left (no live owner may hold it): the
  // watches its killed client left are cut off rather than waited out.
  storage::RemoveOutcome RemoveLeftObject(const storage::ImageRef& ref);
  // Evicts LRU entries until the limits hold with `incoming` bytes admitted.
  void EnforceLimits(std::optional<uint64_t> incoming, int64_t exclude_id, bool dry_run,
                     std::vector<EvictAction>* actions);
  // --- the free-space floor (floor.cpp)
  // What a miss may do once the floor is checked: cache the image, or serve it uncached.
  enum class Room { kCached, kUncached };
  // Before a miss: evicts LRU entries so that writing the image (and, `with_volume`, a
  // volume that is a full copy of it) keeps the floor. kUncached: only the volume alone
  // fits (cache.on_no_room: uncached), or the image is not `cacheable` (too large for
  // max_size_gb) and the volume fits. Throws kBackend naming the figures when nothing fits,
  // or on_no_room is refuse. No floor configured: at once, without asking the backend.
  //
  // Misses at once (threads, processes, hosts sharing a local root) each count the bytes
  // the others reserved (and, on RBD, wrote in the last seconds, which the pool's figure
  // shows late): the returned hold keeps this fill's bytes reserved until it goes, after
  // the fill (engine/floor_reservations.h).
  struct RoomMade {
    Room room = Room::kCached;
    FloorReservations::Hold hold;
  };
  RoomMade MakeRoomForFill(const source::ImageMeta& meta, bool with_volume,
                           bool cacheable = true);
  // Before a hit whose volume is a full copy (a copy or flatten-then-clone plan, the local
  // backend's copy mode): room for `size` bytes, the entry itself kept; kBackend naming the
  // figures when there is none. An empty hold when no floor is set or the clone is thin.
  FloorReservations::Hold MakeRoomForVolume(const index::EntryRow& entry, policy::ClonePlan plan,
                                            uint64_t size);
  // After the limits (EnforceLimits): evicts LRU entries until the floor holds. `freed`:
  // what the limits' evictions just gave back (not yet in the backend's figures).
  void RestoreFloor(uint64_t freed, int64_t exclude_id, bool dry_run,
                    std::vector<EvictAction>* actions);
  // doctor: free space against the floor (nullopt when no floor is configured).
  std::optional<Check> FloorCheck();
  // The floor's plan over the ready entries least recently used first (rows of the
  // victims in `rows`); `extra` is added to the backend's avail figure.
  policy::FloorPlan PlanFloorNow(const storage::SpaceInfo& space, uint64_t extra,
                                 uint64_t incoming, int64_t exclude_id, bool partial,
                                 std::map<int64_t, index::EntryRow>* rows);
  // Reports an object that is not the cache's: logged, and listed in the pass's actions.
  void LeaveAlone(const std::string& name, const std::string& why,
                  std::vector<EvictAction>* actions);
  // Purges deferred entries whose clones are gone, and forgets their records.
  void PurgeDeferred(bool dry_run, std::vector<EvictAction>* actions);

  // --- gc of what dead work left (gc.cpp)
  // Finishes or removes what a dead fill or eviction left of `row`. Caller holds locks.
  void CleanupLeftover(const index::EntryRow& row, std::vector<EvictAction>* actions);
  // Leftovers of dead fills and evictions: their rows, then objects on the backend no
  // row accounts for.
  void GcLeftovers(bool dry_run, std::vector<EvictAction>* actions);
  void GcLeftoverRows(bool dry_run, std::vector<EvictAction>* actions);
  void GcLeftoverObjects(bool dry_run, std::vector<EvictAction>* actions);
  // Whether a live (not pinned) row names the entry-pool object `name`.
  bool NamedByLiveRow(const std::string& name);
  // A volume staging object no creating row of this index names: reported, never removed.
  void ReportVolumeStaging(const storage::ImageRef& ref, const std::set<std::string>& volume_staging,
                           std::vector<EvictAction>* actions);
  // Forgets the pool's records of fills whose staging object is gone and whose lock is free.
  void ForgetEndedFills(const std::map<std::string, std::string>& fills,
                        const std::unordered_set<std::string_view>& listed);
  // Dry run: what the pass would do with a staging or row-less entry object.
  void ReportLeftObject(const std::string& name, bool staging,
                        const std::map<std::string, std::string>& fills,
                        std::vector<EvictAction>* actions);
  // Removes a dead fill's staging object `name` (of image key `key`) when it is ours.
  // Caller holds the image's locks.
  void RemoveFillStaging(const std::string& name, const std::string& key,
                         const std::unordered_set<std::string>& live_names,
                         const std::map<std::string, std::string>& fills, ImageLocks* locks,
                         std::vector<EvictAction>* actions);
  // Creating volume rows of dead owners: their staging object and, if its mark says it
  // is that row's, the object at the name; then the row.
  void GcVolumes(bool dry_run, std::vector<EvictAction>* actions);
  // A volume's `creating` row whose owner is gone (`listed`, read before that was known):
  // its staging object, and the object at its name when it is that create's, removed, and
  // the row dropped. True when the row was dropped here; false when it changed meanwhile
  // (or with `dry_run`, which only lists it). The pass and a create that finds its name
  // held by a dead create (ClaimVolume) both call it.
  bool ClearHalfMadeVolume(const index::VolumeRow& listed, bool dry_run,
                           std::vector<EvictAction>* actions);
  // Removes this host's lock files of images no longer cached that nobody holds.
  void SweepLockFiles(bool dry_run);
  void SweepLockFile(const std::filesystem::path& path, LiveKeys& live, bool image_locks_too);

  // --- the eviction pass's steps (pass.cpp)
  struct EntryTotals {
    uint64_t count = 0, bytes = 0;  // live ready entries
    uint64_t pinned_bytes = 0;      // deferred entries kept for their clones
  };
  EntryTotals MeasureEntries();
  // Temporaries of writers and working dirs of fills that died.
  void SweepDeadFiles(bool dry_run, std::vector<EvictAction>* actions);
  // Evicts the ready entries the source calls gone or stale.
  void CheckSourceForEntries(bool dry_run, std::vector<EvictAction>* actions);
  std::map<std::string, source::ImageMeta> ListSourceForCheck(bool* failed);
  // What the source says of one entry: kind "gone" or "stale" with a reason, or kind "".
  struct Verdict {
    std::string kind, reason;
  };
  Verdict JudgeBySource(const index::EntryRow& row,
                        const std::map<std::string, source::ImageMeta>& listed,
                        bool listing_failed);
  // The background flatten: volumes made more than `older_than` ago by the clock.
  void FlattenOldVolumes(std::chrono::seconds older_than, bool dry_run,
                         std::vector<EvictAction>* actions);

  // --- the flatten step (flatten.cpp)
  // Clones of pinned entries (cache.flatten_pinned_max, or the pass's override), then the
  // purge of the entries they freed, then old volumes (--flatten-older-than).
  void FlattenStep(const EvictOptions& options, bool dry_run, std::vector<EvictAction>* actions);
  // Flattens up to `max` of this cache's clones of pinned entries, ranked by
  // policy::PlanPinnedFlatten, within cache.flatten_pinned_budget_s. Returns how many.
  size_t FlattenPinnedClones(uint32_t max, bool dry_run, std::vector<EvictAction>* actions);
  // This cache's volumes that still depend on each of the `pinned` entries, by entry id.
  std::map<int64_t, std::vector<index::VolumeRow>> PinningVolumes(
      const std::vector<index::EntryRow>& pinned);
  // Flattens volume `v` if it is the cache's (its mark and identity), and records it in
  // its row; `action` says how it went.
  void FlattenVolume(index::VolumeRow v, EvictAction* action);

  Options options_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<const util::Clock> clock_;
  std::unique_ptr<storage::Backend> backend_;
  std::mutex index_mu_;
  std::unique_ptr<index::Index> index_;
  // After the index and its mutex, so it goes first: it holds the index's DigestCache,
  // which refers to both (digest_store.h).
  std::unique_ptr<source::Source> source_;
  SingleFlight<Ensured> flights_;
  // Concurrent asks of the source about one image share one request: a burst of cold
  // requests is one GET to Glance, not one each.
  SingleFlight<source::ImageMeta> describes_;
  // What SourceImages listed, taken (once) by Prefill instead of asking again: `prefill
  // --all` is the listing's few requests, not one more per image.
  std::mutex listed_mu_;
  std::map<std::string, source::ImageMeta> listed_;
  std::filesystem::path lock_dir_;
  // Where entry use locks live: on the shared storage when the backend has such a folder
  // (hosts sharing a local root exclude each other's clones and evictions), else lock_dir_.
  std::filesystem::path use_lock_dir_;
  std::string owner_;
  std::string host_id_;  // Options::host_id, or the hostname
  std::string backend_kind_;
  std::string location_;
  // Imports run by this Cache's threads (StartImportThread), and the results of those
  // that ended; joined by WaitForImports and the destructor.
  std::mutex imports_mu_;
  std::vector<std::thread> import_threads_;
  std::vector<ImportResult> import_results_;
  // The relays of Glance instant misses (instant_relay.cpp), by the HOST:PORT they serve;
  // a socket handed over by another process (AdoptRelay) until an import needs it.
  std::mutex relay_mu_;
  std::map<std::string, std::unique_ptr<source::Relay>> relays_;
  int adopted_relay_fd_ = -1;
  std::string planned_relay_key_;  // HOST:PORT of the relay cache.instant_relay made
  std::vector<std::pair<std::string, std::vector<storage::ImageRef>>> deferred_drains_;
};

// Measures how long a step took, for logs, events and results only: never what the
// engine decides (that takes its time from the Clock), so it runs in real time under a
// test's fake clock too.
class Stopwatch {
 public:
  std::chrono::microseconds Elapsed() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - start_);
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace cachemgr::engine
