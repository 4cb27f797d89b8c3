// index/index.h: the SQLite index of cache entries, volumes and events.
//
// WAL, busy timeout, foreign keys on; migrations from schema/ (compiled in) applied in
// one transaction and tracked by PRAGMA user_version. An index written by a newer
// schema, or a file that is not a valid SQLite database, is refused (kCorrupt /
// kConfig) and never recreated silently. One writer transaction per state change.
// An Index object is used by one thread at a time; open one per thread (cheap) or
// guard it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace SQLite {
class Database;
}

namespace cachemgr::index {

enum class State { kCreating, kReady, kEvicting };
std::string_view StateName(State s) noexcept;
State ParseState(std::string_view s);  // kCorrupt on an unknown value

struct EntryRow {
  int64_t id = 0;
  std::string backend;      // "local" | "rbd"
  std::string pool;         // backend location (pool[/ns] or root)
  std::string image_id;
  std::string cache_name;   // backend image name (final, or the staging name while creating)
  std::string snap_name;
  State state = State::kCreating;
  uint64_t virtual_size = 0;
  uint64_t allocated_bytes = 0;
  std::string disk_format;
  std::string checksum;
  std::string os_hash;      // "algo:hex"
  std::string image_updated_at;
  uint32_t depth = 0;
  int64_t created_at = 0;   // unix seconds
  int64_t last_used = 0;    // unix seconds
  uint64_t hits = 0;
  std::string owner;        // "host:pid" of the process that made or is evicting it
  bool pinned = false;      // deleted from the cache but kept for clones (trash/parked)
  int64_t source_checked_at = 0;  // unix seconds the source last confirmed it current
  std::string identity;           // the backend object's identity when made; '' before schema 004
  int64_t shared_at = 0;  // unix seconds this host last wrote its use to the cluster (006)
};

// What the pass's reconcile compares with the pool, of one live (not pinned) row.
struct ReconcileRow {
  int64_t id = 0;
  std::string cache_name;
  State state = State::kCreating;
  std::string identity;
  int64_t last_used = 0;
  int64_t shared_at = 0;
};

// Sums over the live (not pinned) entries of one backend and pool, every state.
struct EntryTotals {
  uint64_t count = 0;
  uint64_t virtual_bytes = 0;
  uint64_t allocated_bytes = 0;
};

// What the eviction pass needs of a candidate, read from the index alone.
struct LruRow {
  int64_t id = 0;
  int64_t last_used = 0;
  uint64_t virtual_size = 0;
  uint64_t allocated_bytes = 0;
};

struct VolumeRow {
  int64_t id = 0;
  int64_t entry_id = 0;     // 0 when the volume was made without an entry (direct, uncached)
  std::string image_id;
  std::string name;
  std::string pool;
  int64_t created_at = 0;
  uint32_t depth = 0;
  std::string plan;         // clone | copy | flatten_clone | miss | direct | uncached
  uint64_t size_bytes = 0;
  bool flattened = false;
  // kCreating while the name is claimed and the volume is being made under
  // `staging_name` by `owner` ("host:pid"); kReady once it is in place as `name`.
  State state = State::kReady;
  std::string owner;
  std::string staging_name;
  std::string identity;  // the backend object's identity; '' before schema 004
};

struct EventRow {
  int64_t ts = 0;
  std::string kind;         // hit | miss | direct | evict | stale | gone | error | ...
  std::string image_id;
  uint64_t bytes = 0;
  int64_t micros = 0;
  std::string reason;       // why a miss happened (schema/008); '' for other kinds
};

struct EventTotals {
  std::string kind;
  uint64_t count = 0;
  uint64_t bytes = 0;
  int64_t micros = 0;
};

// What last happened to an image's entry (schema/008).
struct EntryFateRow {
  int64_t ts = 0;    // unix seconds
  std::string fate;  // cached | capacity | stale
};

// Misses per reason (schema/008), every one ever recorded.
struct MissTotals {
  std::string reason;  // cold | capacity | stale | too_big | lost | unknown (before 008)
  uint64_t count = 0;
  uint64_t bytes = 0;  // downloaded by those misses
};

struct SourceDigestRow {
  std::string location;  // the image store (file source: its absolute directory)
  std::string image_id;
  std::string identity;     // util::FileIdentity of the file they were computed from
  std::string disk_format;  // read from the header ('' when the sidecar names it)
  std::string md5, sha512;  // '' when not computed (the sidecar names a digest)
  int64_t computed_at = 0;
};

// The reuse-distance tracker's state (index_reuse.cpp, schema/009); the engine reads
// and writes it for policy/reuse_distance.h, which does the arithmetic.
struct ReuseHeadRow {
  uint64_t capacity = 0;  // positions of the Fenwick array; 0: nothing recorded yet
  uint64_t last_seq = 0;  // position of the newest access
};
struct ReuseLastRow {
  std::string image_id;
  uint64_t seq = 0;    // position of the image's latest access
  uint64_t bytes = 0;  // its bytes then
};
struct ReuseCellRow {
  uint64_t pos = 0;
  int64_t count = 0;
  int64_t bytes = 0;
};
struct ReuseHistRow {
  std::string unit;  // entries | bytes | outcome
  int64_t bucket = 0;  // -1 = cold
  uint64_t count = 0;
};

// How long events are kept (for `stats`); 0 = no limit. The cache's come from
// cache.events_max_age_days and cache.events_max_rows; an Index opened without one keeps
// every event.
struct EventRetention {
  uint32_t max_age_days = 0;  // events older than this many days are deleted
  uint64_t max_rows = 0;      // beyond this many events, the oldest are deleted
};

class Index {
 public:
  // Opens or creates the index at `path` and migrates it to the newest schema.
  // A file that is there but empty or damaged is refused (kCorrupt, "run
  // `cachemgr rebuild-index`"), never taken for a new index; a missing one is created
  // whole (index_file.cpp).
  static std::unique_ptr<Index> Open(const std::filesystem::path& path,
                                     const EventRetention& retention = {});
  // Creates a missing index file whole, and refuses one that is not a regular file
  // (kConfig) or too short to be a database (kCorrupt). Open calls it first.
  static void PrepareFile(const std::filesystem::path& path);
  // Moves a damaged index file (and its -wal/-shm) to `<path>.damaged-<UTC time>` so
  // that the next Open starts a new one; returns the new name.
  static std::filesystem::path SetAside(const std::filesystem::path& path);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  int SchemaVersion();
  static int LatestSchemaVersion();
  std::string IntegrityCheck();  // "ok" or SQLite's complaint

  // --- entries (keyed by backend, pool, image_id among live rows; pinned rows are
  // evicted entries kept for their clones, and several may exist for one image)
  // The live (not pinned) entry of an image, if any.
  std::optional<EntryRow> FindEntry(const std::string& backend, const std::string& pool,
                                    const std::string& image_id);
  std::optional<EntryRow> GetEntry(int64_t id);
  // Inserts `row` as given (a fill inserts it in state creating; rebuild-index inserts
  // ready rows); kAlreadyExists if a live row holds (backend, pool, image_id).
  int64_t InsertEntry(const EntryRow& row);
  // Replaces every column of row.id (state transitions included).
  void UpdateEntry(const EntryRow& row);
  // Moves a row from `from` to `to` only if it is in `from`; returns whether it did.
  bool TransitionEntry(int64_t id, State from, State to, const std::string& owner);
  void DeleteEntry(int64_t id);
  void TouchEntry(int64_t id, int64_t now);  // last_used = now, hits += 1
  void SetSourceChecked(int64_t id, int64_t when);
  void SetShared(int64_t id, int64_t when);       // shared_at = when
  void MergeLastUsed(int64_t id, int64_t when);   // last_used = max(last_used, when)
  EntryTotals LiveTotals(const std::string& backend, const std::string& pool);
  // Live ready entries least recently used first (ties: older id first), at most
  // `limit`, starting after the row (after_last_used, after_id): pages of a keyset walk,
  // so a caller reads only as far as it needs.
  std::vector<LruRow> ReadyByLastUsed(const std::string& backend, const std::string& pool,
                                      size_t limit, int64_t after_last_used = INT64_MIN,
                                      int64_t after_id = 0);
  std::vector<EntryRow> ListEntries(const std::string& backend, const std::string& pool);
  std::vector<EntryRow> ListEntries();  // every backend and pool
  // Every live (not pinned) row of the pool, the columns the reconcile compares
  // (index_pass.cpp): a fraction of ListEntries' cost at 100,000 rows.
  std::vector<ReconcileRow> ListReconcileRows(const std::string& backend, const std::string& pool);
  // The ready live rows used at or after `since` (unix seconds), by the LRU index: the
  // uses a pass tells the pool when nothing else changed.
  std::vector<ReconcileRow> ListUsedSince(const std::string& backend, const std::string& pool,
                                          int64_t since);
  // A count that moves whenever a row is made or dropped or its name, identity, state or
  // pin changes (schema/011's triggers), whoever writes the index; not on a use. -1 when
  // its row or a trigger is missing (dropped by hand; the next Open repairs it).
  int64_t EntriesVersion();
  // Small values this host's passes keep between runs (schema/010); "" when unset, and
  // setting "" removes the key.
  std::string GetPassState(const std::string& key);
  void SetPassState(const std::string& key, const std::string& value);
  // The rows the pass's gc and purge act on: pinned ones, and live ones not ready (fills
  // and evictions in progress or dead). Few, where ListEntries reads every ready row.
  std::vector<EntryRow> ListUnsettledEntries(const std::string& backend, const std::string& pool);
  // (cache_name, image_id) of every live (not pinned) row, any state.
  std::vector<std::pair<std::string, std::string>> ListLiveNames(const std::string& backend,
                                                                 const std::string& pool);
  // Whether a live (not pinned) row, any state, has the cache_name `name`, or one that
  // starts with `or_prefix` (when not empty). One query, for checks made per object.
  bool HasLiveName(const std::string& backend, const std::string& pool, const std::string& name,
                   const std::string& or_prefix = "");
  // Ready live rows (count and bytes) and pinned rows (bytes), by one aggregate.
  struct SettledTotals {
    EntryTotals ready;
    EntryTotals pinned;
  };
  SettledTotals ReadyAndPinnedTotals(const std::string& backend, const std::string& pool);
  // Entries least recently used first (live and pinned), for the eviction pass.
  std::vector<EntryRow> ListEntriesByLastUsed(const std::string& backend,
                                              const std::string& pool);

  // --- volumes
  // kAlreadyExists if a row (creating or ready) holds (pool, name): the claim of a name.
  int64_t InsertVolume(const VolumeRow& row);
  std::optional<VolumeRow> FindVolume(const std::string& pool, const std::string& name);
  std::vector<VolumeRow> VolumesOf(int64_t entry_id);
  std::vector<VolumeRow> ListVolumes();
  void UpdateVolume(const VolumeRow& row);
  void DeleteVolume(int64_t id);
  // Drops the row of an unfinished create only if it is still that claim's (same id,
  // staging name and owner, still creating): a row read a moment ago may have gone and
  // its id been given to another create since. True if it was dropped.
  bool DeleteVolumeClaim(const VolumeRow& row);
  // Drops a row read before only if it is still that row (id, name, staging name, state).
  bool DeleteVolumeRow(const VolumeRow& row);
  uint64_t CountVolumes(int64_t entry_id);

  // --- digests the file source computed (index_digests.cpp), one row per image of a
  // source location, valid while the file's identity stays `identity`
  std::optional<SourceDigestRow> FindSourceDigest(const std::string& location,
                                                  const std::string& image_id);
  void PutSourceDigest(const SourceDigestRow& row);  // replaces the image's row
  void DeleteSourceDigest(const std::string& location, const std::string& image_id);

  // --- events (index_events.cpp)
  // Every kPruneEvery-th event recorded (by rowid, across processes) also deletes up to
  // 2 * kPruneEvery events the retention no longer keeps (PruneEventBatch, its "now" is
  // event.ts): the table stays near its bound without a pass, and a hit pays for it
  // rarely (a few ms once in 256 events).
  static constexpr uint64_t kPruneEvery = 256;
  void RecordEvent(const EventRow& event);
  // Per kind, from the totals the triggers of schema/007 keep: a few rows, not a scan.
  std::vector<EventTotals> EventTotalsByKind();
  // The newest event of `kind`, if any.
  std::optional<EventRow> LastEvent(const std::string& kind);
  // Events with ts >= since, oldest first.
  std::vector<EventRow> ListEvents(int64_t since = 0);
  // Deletes events older than `before` (unix seconds); returns how many.
  uint64_t PruneEvents(int64_t before);
  // Deletes at most `limit` of the events the retention no longer keeps at `now` (unix
  // seconds): the oldest beyond max_rows, then those older than max_age_days; returns
  // how many. A batch is short, so other writers get the lock in between; the eviction
  // pass runs batches until one deletes fewer than kPruneBatch.
  static constexpr uint64_t kPruneBatch = 10000;
  uint64_t PruneEventBatch(int64_t now, uint64_t limit = kPruneBatch);
  // Batches until every event the retention no longer keeps is gone; returns how many.
  uint64_t ApplyEventRetention(int64_t now);
  const EventRetention& event_retention() const { return retention_; }

  // --- what last happened to each image's entry, for the reason of its next miss
  // (index_fates.cpp, schema/008): "cached" | "capacity" | "stale".
  void NoteEntryFate(const std::string& backend, const std::string& pool,
                     const std::string& image_id, int64_t ts, const std::string& fate);
  std::optional<EntryFateRow> EntryFate(const std::string& backend, const std::string& pool,
                                        const std::string& image_id);
  std::vector<MissTotals> MissTotalsByReason();
  // Deletes the fates the event retention no longer keeps at `now` (older than
  // max_age_days, then the oldest beyond max_rows), never one of an image with a live
  // entry; returns how many.
  uint64_t PruneEntryFates(int64_t now);
  // --- reuse distances (index_reuse.cpp): plain reads and writes, called inside the
  // caller's transaction (one per access).
  ReuseHeadRow GetReuseHead();
  void SetReuseHead(const ReuseHeadRow& head);
  std::optional<ReuseLastRow> GetReuseLast(const std::string& image_id);
  void SetReuseLast(const ReuseLastRow& row);
  ReuseCellRow GetReuseCell(uint64_t pos);  // zero when absent
  void AddReuseCell(const ReuseCellRow& delta);
  std::vector<ReuseLastRow> ListReuseLastBySeq();
  // Replaces every mark and the whole tree (the renumbering); cells that are zero are
  // not stored.
  void ReplaceReuse(const std::vector<ReuseLastRow>& marks, const std::vector<ReuseCellRow>& cells);
  void AddReuseHistogram(const std::string& unit, int64_t bucket, uint64_t n = 1);
  std::vector<ReuseHistRow> ReuseHistogram();
  // Runs `fn` in a savepoint (inside the caller's transaction, or alone): on a throw,
  // what it wrote is undone and the error passed on; the caller's writes stand.
  void InSavepoint(const std::string& name, const std::function<void()>& fn);

  const std::filesystem::path& path() const { return path_; }

 private:
  friend struct IndexInternals;  // index_sql.h: the connection, for index/ alone
  explicit Index(std::unique_ptr<SQLite::Database> db);
  std::unique_ptr<SQLite::Database> db_;
  std::filesystem::path path_;
  EventRetention retention_;
};

}  // namespace cachemgr::index
