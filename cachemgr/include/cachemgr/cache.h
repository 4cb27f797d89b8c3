// cachemgr/cache.h: the embedded API.
//
//   auto cache = cachemgr::Cache::Open(cachemgr::LoadConfigFile(path), logger);
//   auto made = cache->CreateVolume({.image_id = id, .volume = "vm-42-disk", .size_bytes = 0});
//   // made.plan says how: a clone of a cached entry, a copy, a flatten then clone, a
//   // miss (downloaded and cached first) or a direct clone of Glance's own RBD image.
//
// A Cache is thread-safe: any number of threads may call any method at once. Several
// processes (and, with the RBD backend, several hosts) may share one cache: fills are
// single-flight across all of them. Every method throws cachemgr::Error on failure.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "cachemgr/export.h"
#include "cachemgr/options.h"

namespace spdlog {
class logger;
}

namespace cachemgr {

// How a volume was made.
enum class Plan {
  kClone,         // clone of the cached entry's protected snapshot (a hit)
  kCopy,          // full independent copy of the entry (max_clone_depth <= 0)
  kFlattenClone,  // the entry was flattened first (depth limit), then cloned
  kMiss,          // the image was fetched and cached, then cloned
  kDirect,        // cloned straight from the source's own RBD image; no bytes copied
  kUncached,      // too large for the cache: fetched straight into the volume
  kInstant,       // a miss served at once: the entry is an import still running (RBD,
                  // cache.instant_miss); its volume reads through the source meanwhile
};
// "clone", "copy", "flatten_clone", ...
CACHEMGR_EXPORT std::string_view PlanName(Plan plan) noexcept;

// Progress of a long step (download, conversion, import, flatten, copy).
struct Progress {
  std::string image_id;
  std::string stage;         // "download" | "convert" | "import" | "flatten" | "copy"
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;  // 0 when unknown
};
using ProgressFn = std::function<void(const Progress&)>;

struct CreateVolumeRequest {
  std::string image_id;
  std::string volume;           // name of the new volume on the backend
  uint64_t size_bytes = 0;      // 0: the image's virtual size; smaller than it is an error
  ProgressFn progress;          // optional; called from the calling thread
  // When the entry's import is to run (a kInstant plan, or a hit that served the relay of
  // an import whose runner died: CreateVolumeResult::import_to_run), it goes on after the
  // call returns: on a thread of the engine (the Cache waits for it when destroyed, or in
  // WaitForImports), or, when this is set, nowhere: the caller runs FinishImport itself
  // (the tool hands it to a process of its own, with HandOverRelay; after a failed call
  // too when HandOverRelay gives a socket); an import nobody finishes is resumed by the
  // next eviction pass.
  bool defer_import = false;
};

struct CreateVolumeResult {
  std::string volume;
  std::string image_id;
  Plan plan = Plan::kClone;
  uint32_t depth = 0;                   // parent-chain length of the new volume
  uint64_t size_bytes = 0;
  uint64_t bytes_downloaded = 0;        // 0 on a hit
  std::chrono::microseconds elapsed{};  // whole call
  std::chrono::microseconds fill{};     // download + convert + import (miss only)
  std::chrono::microseconds wait{};     // waiting for another caller's fill of this image
  // The entry's import is left to the caller (defer_import) to run to its end with
  // FinishImport: after an instant miss (plan kInstant), and after a hit on an entry
  // whose Glance relay nobody served (its runner died), which this process now serves.
  // Without defer_import this Cache's own thread runs it, and this stays false.
  bool import_to_run = false;
};

enum class EntryState { kCreating, kReady, kEvicting };
CACHEMGR_EXPORT std::string_view EntryStateName(EntryState state) noexcept;

struct EntryInfo {
  std::string image_id;
  std::string backend;       // "local" | "rbd"
  std::string pool;          // RBD pool[/namespace], or the local root
  std::string cache_name;    // name of the entry on the backend
  EntryState state = EntryState::kReady;
  uint64_t virtual_size = 0;
  uint64_t allocated_bytes = 0;
  std::string disk_format;   // format in the source (the entry itself is always raw)
  std::string checksum;      // md5 from the source
  std::string os_hash_algo;
  std::string os_hash_value;
  std::string image_updated_at;
  uint32_t depth = 0;        // 0: an independent image; 1: a clone of the source's RBD image
  int64_t created_at = 0;    // unix seconds
  int64_t last_used = 0;     // unix seconds
  uint64_t hits = 0;
  uint64_t volumes = 0;      // volumes made from this entry and still recorded
  bool pinned = false;       // evicted but kept (trash / parked) until its clones are gone
};

struct VolumeInfo {
  std::string name;
  std::string image_id;
  Plan plan = Plan::kClone;
  uint32_t depth = 0;
  uint64_t size_bytes = 0;
  int64_t created_at = 0;
};

enum class PrefillOutcome { kFilled, kFresh, kReplaced, kDirect };
CACHEMGR_EXPORT std::string_view PrefillOutcomeName(PrefillOutcome outcome) noexcept;

struct PrefillResult {
  std::string image_id;
  PrefillOutcome outcome = PrefillOutcome::kFilled;
  uint64_t bytes_downloaded = 0;
  uint64_t virtual_size = 0;
  std::chrono::microseconds elapsed{};
};

struct EvictOptions {
  bool dry_run = false;          // report what would be done; change nothing
  bool check_source = true;      // ask the source whether entries are stale or gone
  // Flatten volumes older than this (the background flatten that makes them
  // independent of their entry); 0 = do not flatten.
  std::chrono::seconds flatten_older_than{0};
  // Overrides cache.flatten_pinned_max for this pass (clones flattened so that pinned
  // entries can be purged; 0 = none).
  std::optional<uint32_t> flatten_pinned_max;
};

struct EvictAction {
  std::string kind;      // "evict" | "stale" | "gone" | "gc" | "purge" | "flatten" | "defer"
  std::string image_id;  // empty for gc of an unknown leftover
  std::string name;      // backend object acted on
  uint64_t bytes = 0;
  std::string reason;    // one line for people ("over max_count 3", "owner host:123 gone")
  bool done = false;     // false in dry-run, or when the action failed (see reason)
};

struct EvictReport {
  std::vector<EvictAction> actions;
  uint64_t entries_before = 0, entries_after = 0;
  uint64_t bytes_before = 0, bytes_after = 0;  // as counted by cache.size_accounting
  uint64_t pinned_bytes = 0;                   // evicted entries kept for their clones
  uint64_t source_requests = 0;  // requests made to the source (Glance GETs) by the pass
  std::chrono::microseconds elapsed{};
};

struct PathStats {
  uint64_t count = 0;
  std::chrono::microseconds total{};
};

// The pool-wide figures the last eviction pass on any host sharing the pool (or local
// root) wrote, and when each host last ran a pass.
struct PoolTotals {
  uint64_t entries = 0;
  uint64_t bytes = 0;         // as counted by cache.size_accounting
  uint64_t pinned_bytes = 0;  // evicted entries kept in the trash for their clones
  int64_t at = 0;             // unix seconds of that pass; 0: no pass has run yet
  std::string host;           // the host that ran it
  std::vector<std::pair<std::string, int64_t>> hosts;  // host id -> its last pass
};

// Misses of one reason (Stats::misses_by_reason).
struct MissReasonStats {
  uint64_t count = 0;
  uint64_t bytes_downloaded = 0;  // what those misses fetched from the source
};

struct Stats {
  uint64_t hits = 0, misses = 0, evictions = 0, stale = 0, errors = 0, direct = 0;
  // rbd:// locations not cloned (another pool, cluster, image name or size): fetched.
  uint64_t direct_refused = 0;
  // Instant misses (plan instant) and their imports: pending (on the pool, any host), and
  // the entries found bad with the volumes made from them (BadEntries lists them).
  uint64_t instant = 0;
  uint64_t imports_pending = 0;
  uint64_t bad_entries = 0;
  uint64_t bad_volumes = 0;
  uint64_t bytes_downloaded = 0;
  uint64_t bytes_saved = 0;  // virtual bytes not copied thanks to clones
  uint64_t entries = 0;
  uint64_t cached_bytes = 0;  // as counted by cache.size_accounting
  uint64_t pinned_bytes = 0;
  uint64_t volumes = 0;
  // Temporaries that writers which died left on the backend (a kill -9 mid-fill), until
  // the next eviction pass removes them; `doctor` lists them.
  uint64_t leftovers = 0;
  uint64_t leftover_bytes = 0;
  // Fills, evictions and volume creates not finished (their rows): in progress, or left
  // by a dead process until the next eviction pass removes them.
  uint64_t half_made = 0;
  // Objects the last eviction pass found with cache-like names that the cache did not
  // make (or copies of its own): reported, never changed; `doctor` lists them.
  uint64_t left_alone = 0;
  uint64_t dead_work_dirs = 0;  // dead fills' working dirs in conversion.dir, until swept
  double max_size_gb = 0;
  uint64_t max_count = 0;
  std::vector<std::pair<std::string, PathStats>> by_plan;  // plan name -> count, time
  PoolTotals pool;  // the whole pool, as the last pass on any host saw it
  // Why the misses (`misses`: fills and uncached volumes; direct clones are not misses)
  // happened, every reason listed in this order, 0 or not: "cold" (never cached here or in
  // the pool, or forgotten), "capacity" (evicted earlier by a limit, on any host of the
  // pool), "stale" (the source changed or withdrew the image since), "too_big" (larger than
  // the cache admits: served uncached), "lost" (the entry vanished without any host's cache
  // evicting it: removed by hand), then "unknown" (before reasons were; listed only if any).
  // This host's misses: counters that never go down, adding up to `misses`.
  std::vector<std::pair<std::string, MissReasonStats>> misses_by_reason;
};

// `stats --what-if`: the hit ratio an LRU cache of other sizes would have had over the
// accesses recorded (volumes made from the cache, hit or miss), from the histograms of
// their reuse distances (policy/reuse_distance.h). A model: it assumes the cache evicts
// only by LRU at its limits (pinned entries, stale replacements and several hosts
// sharing a pool make the real figure differ), and above 64 entries a bucket spans 1/8
// of a power of two (the hits inside one are interpolated).
struct WhatIfRow {
  double factor = 0;              // of today's limits (1 = as configured)
  uint64_t max_count = 0;         // 0 = unlimited
  double max_size_gb = 0;         // 0 = unlimited
  double hit_ratio_by_count = 0;  // predicted with max_count alone
  double hit_ratio_by_size = 0;   // predicted with max_size_gb alone
  double hit_ratio = 0;           // with both: the lower of the two (an upper bound)
};
struct WhatIfReport {
  uint64_t accesses = 0;          // accesses recorded
  uint64_t cold = 0;              // first accesses of an image: misses at any size
  uint64_t measured_hits = 0;     // of the accesses recorded, those that were hits
  double max_hit_ratio = 0;       // 1 - cold / accesses: no size does better
  std::vector<WhatIfRow> rows;    // factors 0.5, 1, 2, 4
  double target_hit_ratio = 0.9;
  // The smallest max_count / max_size_gb (each alone) that would have reached the
  // target; empty when none would (too many cold accesses) or nothing was recorded.
  std::optional<uint64_t> count_for_target;
  std::optional<double> size_gb_for_target;
};

// How FinishImport left an instant miss's import.
enum class ImportOutcome {
  kNone,       // no import of that image is pending
  kCommitted,  // every byte copied and checked: the entry no longer needs the source
  kBad,        // the bytes did not match the image's checksum: the entry is marked bad and
               // evicted; its volumes are listed by doctor, stats and verify
  kBusy,       // another process or host is running it
};
CACHEMGR_EXPORT std::string_view ImportOutcomeName(ImportOutcome outcome) noexcept;
struct ImportResult {
  std::string image_id;
  ImportOutcome outcome = ImportOutcome::kNone;
  uint64_t bytes = 0;                   // bytes of the image imported
  std::chrono::microseconds elapsed{};
  std::string detail;                   // why it is bad, for people
  std::vector<std::string> volumes;     // kBad: the volumes made from it
};
// An entry whose import found bytes other than the image's (ImportOutcome::kBad): the
// volumes made from it before that was known.
struct BadEntry {
  std::string image_id;
  std::string reason;
  int64_t at = 0;                    // unix seconds it was found
  std::vector<std::string> volumes;  // still existing when last looked at
};

struct VerifyResult {
  std::string image_id;
  bool ok = false;
  // "sha512 of the entry matches the source's", "the source's md5 changed: ...",
  // "entry missing on backend"; ok only when the source was asked and agrees.
  std::string detail;
};

struct RebuildReport {
  uint64_t entries_found = 0;    // ready entries found on the backend
  uint64_t entries_restored = 0; // rows written into the index
  uint64_t skipped = 0;          // objects that carried no or incomplete metadata
  std::vector<std::string> messages;
};

// One check of `doctor`: what was checked, whether it passed, what to do if not.
struct Check {
  std::string name;
  bool ok = false;
  std::string detail;
  std::string fix;  // empty when ok, unless a warning
  bool warning = false;  // ok, but something the operator should change (`fix` says what)
};

// For `rebuild-index`: when the index file is empty or damaged (kCorrupt), moves it and
// its journal aside to `<index>.damaged-<UTC time>` so that Open starts a new index,
// and returns that name; nothing when the file is missing or sound.
CACHEMGR_EXPORT std::optional<std::string> SetAsideDamagedIndex(const Options& options);

class CACHEMGR_EXPORT Cache {
 public:
  // Opens (creating if needed) the index and connects the backend and the source.
  // `logger` may be null: then messages go to a logger named "cachemgr" if registered,
  // else nowhere. The library never writes to stdout and never installs sinks.
  // The library does not change signal handling either (only a crash test's failpoint,
  // armed through CACHEMGR_FAILPOINT, resets SIGABRT before it aborts): a process using
  // the RBD backend must ignore SIGPIPE, as every librados client must (its sockets'
  // peers may be gone when it writes). The cachemgr tool does;
  // Python does unless the application restores the default action.
  static std::unique_ptr<Cache> Open(const Options& options,
                                     std::shared_ptr<spdlog::logger> logger = nullptr);
  virtual ~Cache() = default;

  // Makes `volume` from `image_id`: hit, miss, or direct clone. Single-flight: concurrent
  // callers (threads, processes, hosts) for one cold image wait for one fill.
  virtual CreateVolumeResult CreateVolume(const CreateVolumeRequest& request) = 0;

  // Deletes a volume this cache made (and its row). Entries it pinned may then be purged.
  virtual void DeleteVolume(const std::string& volume) = 0;

  // Makes sure the image is cached and fresh, without making a volume.
  virtual PrefillResult Prefill(const std::string& image_id, const ProgressFn& progress = {}) = 0;

  // The periodic pass: limits, stale and gone entries, gc of half-made leftovers,
  // purge of deferred deletes, optional flatten. Holds the pass lock: kBusy if another
  // pass is running.
  virtual EvictReport RunEvictionPass(const EvictOptions& options) = 0;

  virtual std::optional<EntryInfo> Lookup(const std::string& image_id) = 0;
  virtual std::vector<EntryInfo> List() = 0;
  virtual std::vector<VolumeInfo> Volumes(const std::string& image_id) = 0;
  virtual Stats GetStats() = 0;
  // The what-if of other cache sizes (see WhatIfReport); target in (0, 1].
  virtual WhatIfReport WhatIf(double target_hit_ratio) = 0;

  // Re-reads an entry's bytes and compares them with the source's checksum.
  virtual VerifyResult Verify(const std::string& image_id) = 0;

  // Rebuilds the index from the metadata stored on the backend's entries.
  virtual RebuildReport RebuildIndex() = 0;

  // Ids of the source's active images (for `prefill --all`), then those of entries the
  // source holds but refuses (a file source's symlink or bad sidecar): a prefill of one of
  // those fails with the source's reason.
  virtual std::vector<std::string> SourceImages() = 0;

  // Checks the config, backend, source, qemu-img and permissions.
  virtual std::vector<Check> Doctor() = 0;
  // --- the instant miss (cache.instant_miss, RBD)
  // Runs the pending import of `image_id`'s entry to its end here: copies the rest,
  // checks the bytes against the image's digests, commits. Blocks; kBusy when another
  // process or host is running it.
  virtual ImportResult FinishImport(const std::string& image_id,
                                    const ProgressFn& progress = {}) = 0;
  // Waits for the imports this Cache's own threads run (CreateVolume without
  // defer_import); their results, in the order they ended.
  virtual std::vector<ImportResult> WaitForImports() = 0;
  // Entries whose import found other bytes than the image's, with their volumes.
  virtual std::vector<BadEntry> BadEntries() = 0;
  // Glance images (cache.instant_relay): the import's bytes reach librbd through a relay
  // this process serves while the import lasts. HandOverRelay stops the relay serving
  // `image_id` here accepting and returns its listening socket (still listening: a
  // connection made meanwhile waits) for the process that runs the import on (AdoptRelay
  // there, before FinishImport); the caller closes it. -1 when no relay here serves it.
  virtual int HandOverRelay(const std::string& image_id) = 0;
  // Serves the relay on `fd` (from HandOverRelay) once an import needs it; takes `fd`.
  virtual void AdoptRelay(int fd) = 0;
};

}  // namespace cachemgr
