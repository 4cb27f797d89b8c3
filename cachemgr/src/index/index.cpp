#include "index/index.h"

#include <sqlite3.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <string>
#include <system_error>

#include "cachemgr/error.h"
#include "index/migrations.h"

namespace cachemgr::index {
namespace {

namespace fs = std::filesystem;

// Many processes share one index; a writer waits this long for another's lock before
// the call fails with kBusy.
constexpr int kBusyTimeoutMs = 10000;

// Maps a SQLite failure to the one error type, naming the index and what was done.
[[noreturn]] void Rethrow(const SQLite::Exception& e, const fs::path& path,
                          std::string_view what) {
  const int code = e.getErrorCode();
  const int extended = e.getExtendedErrorCode();
  std::string message = "index " + path.string() + ": " + std::string(what) + ": " + e.what();
  switch (code) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      throw Error(Errc::kBusy, message + " (another process holds the index lock)");
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      throw Error(Errc::kCorrupt, message);
    case SQLITE_CONSTRAINT:
      if (extended == SQLITE_CONSTRAINT_UNIQUE || extended == SQLITE_CONSTRAINT_PRIMARYKEY) {
        throw Error(Errc::kAlreadyExists, message);
      }
      throw Error(Errc::kInvalidArgument, message);
    default:
      throw Error(Errc::kIo, message);
  }
}

// Runs `fn`, turning SQLite exceptions into cachemgr::Error.
template <typename Fn>
auto Guard(const fs::path& path, std::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const SQLite::Exception& e) {
    Rethrow(e, path, what);
  }
}

constexpr const char* kEntryColumns =
    "id, backend, pool, image_id, cache_name, snap_name, state, virtual_size, "
    "allocated_bytes, disk_format, checksum, os_hash, image_updated_at, depth, created_at, "
    "last_used, hits, owner, pinned, source_checked_at";

EntryRow ReadEntry(SQLite::Statement& q) {
  EntryRow r;
  r.id = q.getColumn(0).getInt64();
  r.backend = q.getColumn(1).getString();
  r.pool = q.getColumn(2).getString();
  r.image_id = q.getColumn(3).getString();
  r.cache_name = q.getColumn(4).getString();
  r.snap_name = q.getColumn(5).getString();
  r.state = ParseState(q.getColumn(6).getString());
  r.virtual_size = static_cast<uint64_t>(q.getColumn(7).getInt64());
  r.allocated_bytes = static_cast<uint64_t>(q.getColumn(8).getInt64());
  r.disk_format = q.getColumn(9).getString();
  r.checksum = q.getColumn(10).getString();
  r.os_hash = q.getColumn(11).getString();
  r.image_updated_at = q.getColumn(12).getString();
  r.depth = static_cast<uint32_t>(q.getColumn(13).getInt64());
  r.created_at = q.getColumn(14).getInt64();
  r.last_used = q.getColumn(15).getInt64();
  r.hits = static_cast<uint64_t>(q.getColumn(16).getInt64());
  r.owner = q.getColumn(17).getString();
  r.pinned = q.getColumn(18).getInt() != 0;
  r.source_checked_at = q.getColumn(19).getInt64();
  return r;
}

// Binds every column but id, starting at parameter 1, in kEntryColumns order.
void BindEntry(SQLite::Statement& q, const EntryRow& r) {
  q.bind(1, r.backend);
  q.bind(2, r.pool);
  q.bind(3, r.image_id);
  q.bind(4, r.cache_name);
  q.bind(5, r.snap_name);
  q.bind(6, std::string(StateName(r.state)));
  q.bind(7, static_cast<int64_t>(r.virtual_size));
  q.bind(8, static_cast<int64_t>(r.allocated_bytes));
  q.bind(9, r.disk_format);
  q.bind(10, r.checksum);
  q.bind(11, r.os_hash);
  q.bind(12, r.image_updated_at);
  q.bind(13, static_cast<int64_t>(r.depth));
  q.bind(14, r.created_at);
  q.bind(15, r.last_used);
  q.bind(16, static_cast<int64_t>(r.hits));
  q.bind(17, r.owner);
  q.bind(18, r.pinned ? 1 : 0);
  q.bind(19, r.source_checked_at);
}

constexpr const char* kVolumeColumns =
    "id, entry_id, image_id, name, pool, created_at, depth, plan, size_bytes, flattened";

VolumeRow ReadVolume(SQLite::Statement& q) {
  VolumeRow r;
  r.id = q.getColumn(0).getInt64();
  r.entry_id = q.getColumn(1).isNull() ? 0 : q.getColumn(1).getInt64();
  r.image_id = q.getColumn(2).getString();
  r.name = q.getColumn(3).getString();
  r.pool = q.getColumn(4).getString();
  r.created_at = q.getColumn(5).getInt64();
  r.depth = static_cast<uint32_t>(q.getColumn(6).getInt64());
  r.plan = q.getColumn(7).getString();
  r.size_bytes = static_cast<uint64_t>(q.getColumn(8).getInt64());
  r.flattened = q.getColumn(9).getInt() != 0;
  return r;
}

void BindVolume(SQLite::Statement& q, const VolumeRow& r) {
  // entry_id 0 means "no entry": NULL keeps the foreign key satisfied.
  if (r.entry_id == 0) {
    q.bind(1);
  } else {
    q.bind(1, r.entry_id);
  }
  q.bind(2, r.image_id);
  q.bind(3, r.name);
  q.bind(4, r.pool);
  q.bind(5, r.created_at);
  q.bind(6, static_cast<int64_t>(r.depth));
  q.bind(7, r.plan);
  q.bind(8, static_cast<int64_t>(r.size_bytes));
  q.bind(9, r.flattened ? 1 : 0);
}

std::vector<EntryRow> QueryEntries(SQLite::Statement& q) {
  std::vector<EntryRow> rows;
  while (q.executeStep()) rows.push_back(ReadEntry(q));
  return rows;
}

std::vector<VolumeRow> QueryVolumes(SQLite::Statement& q) {
  std::vector<VolumeRow> rows;
  while (q.executeStep()) rows.push_back(ReadVolume(q));
  return rows;
}

// Applies every migration newer than the file's user_version in one IMMEDIATE
// transaction, so that two processes opening a fresh index at once cannot both
// migrate it: the second waits for the lock, then sees the new version and does nothing.
void RefuseNewer(const fs::path& path, int current, int latest) {
  if (current > latest) {
    throw Error(Errc::kConfig, "index " + path.string() + " was written by a newer cachemgr (schema " +
                                   std::to_string(current) + ", this one knows " +
                                   std::to_string(latest) + "): upgrade cachemgr");
  }
}

void Migrate(SQLite::Database& db, const fs::path& path) {
  const int latest = Index::LatestSchemaVersion();
  SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
  const int current = db.execAndGet("PRAGMA user_version").getInt();
  RefuseNewer(path, current, latest);  // again: another process may have upgraded it
  if (current == latest) return;  // the transaction rolls back: nothing was written
  for (const Migration& m : Migrations()) {
    if (m.version <= current) continue;
    try {
      db.exec(m.sql);
    } catch (const SQLite::Exception& e) {
      Rethrow(e, path, std::string("migration ") + m.name);
    }
  }
  db.exec("PRAGMA user_version = " + std::to_string(latest));
  tx.commit();
}

}  // namespace

std::string_view StateName(State s) noexcept {
  switch (s) {
    case State::kCreating: return "creating";
    case State::kReady: return "ready";
    case State::kEvicting: return "evicting";
  }
  return "unknown";
}

State ParseState(std::string_view s) {
  if (s == "creating") return State::kCreating;
  if (s == "ready") return State::kReady;
  if (s == "evicting") return State::kEvicting;
  throw Error(Errc::kCorrupt, "index: unknown entry state '" + std::string(s) + "'");
}

int Index::LatestSchemaVersion() {
  int latest = 0;
  for (const Migration& m : Migrations()) latest = std::max(latest, m.version);
  return latest;
}

Index::Index(std::unique_ptr<SQLite::Database> db) : db_(std::move(db)) {}
Index::~Index() = default;

std::unique_ptr<Index> Index::Open(const fs::path& path) {
  PrepareFile(path);
  std::unique_ptr<SQLite::Database> db;
  try {
    // No OPEN_CREATE: the file is there (PrepareFile), and if it went away since, a new
    // empty one must not take its place.
    db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE);
    db->setBusyTimeout(kBusyTimeoutMs);
    // The first read of the header: a file that is not SQLite fails here (NOTADB),
    // before anything could write to it.
    db->execAndGet("SELECT count(*) FROM sqlite_master");
    // Refused before anything below could write to the file (switching to WAL does).
    RefuseNewer(path, db->execAndGet("PRAGMA user_version").getInt(), LatestSchemaVersion());
    // quick_check reads every page, which a truncated or damaged file fails; the index is
    // small (one row per cached image), so this costs milliseconds.
    const std::string check = db->execAndGet("PRAGMA quick_check").getString();
    if (check != "ok") {
      throw Error(Errc::kCorrupt, "index " + path.string() + ": corrupt (" + check +
                                      "); it is left as is: run `cachemgr rebuild-index` (it "
                                      "sets the file aside and rebuilds from the backend)");
    }
    // WAL lets readers run while a writer commits; NORMAL is durable at checkpoints and
    // never corrupts on a crash in WAL mode. Asked for on every open: a no-op once set.
    const std::string mode = db->execAndGet("PRAGMA journal_mode = WAL").getString();
    if (mode != "wal") {
      throw Error(Errc::kIo, "index " + path.string() + ": cannot switch to WAL mode (got " +
                                 mode + "); is the file on a filesystem without shared memory?");
    }
    db->exec("PRAGMA synchronous = NORMAL");
    db->exec("PRAGMA foreign_keys = ON");
    Migrate(*db, path);
  } catch (const SQLite::Exception& e) {
    const int code = e.getErrorCode();
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
      throw Error(Errc::kCorrupt, "index " + path.string() + ": not a valid SQLite database (" +
                                      e.what() +
                                      "); it is left as is: run `cachemgr rebuild-index` (it "
                                      "sets the file aside and rebuilds from the backend)");
    }
    Rethrow(e, path, "open");
  }
  auto index = std::unique_ptr<Index>(new Index(std::move(db)));
  index->path_ = path;
  return index;
}

int Index::SchemaVersion() {
  return Guard(path_, "read schema version",
               [&] { return db_->execAndGet("PRAGMA user_version").getInt(); });
}

std::string Index::IntegrityCheck() {
  return Guard(path_, "integrity check", [&] {
    SQLite::Statement q(*db_, "PRAGMA integrity_check");
    std::string out;
    while (q.executeStep()) {
      if (!out.empty()) out += "; ";
      out += q.getColumn(0).getString();
    }
    return out;
  });
}

std::optional<EntryRow> Index::FindEntry(const std::string& backend, const std::string& pool,
                                         const std::string& image_id) {
  return Guard(path_, "find entry image=" + image_id, [&]() -> std::optional<EntryRow> {
    SQLite::Statement q(*db_, std::string("SELECT ") + kEntryColumns +
                                  " FROM entries WHERE backend = ? AND pool = ? AND "
                                  "image_id = ? AND pinned = 0");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, image_id);
    if (!q.executeStep()) return std::nullopt;
    return ReadEntry(q);
  });
}

std::optional<EntryRow> Index::GetEntry(int64_t id) {
  return Guard(path_, "get entry id=" + std::to_string(id), [&]() -> std::optional<EntryRow> {
    SQLite::Statement q(*db_, std::string("SELECT ") + kEntryColumns + " FROM entries WHERE id = ?");
    q.bind(1, id);
    if (!q.executeStep()) return std::nullopt;
    return ReadEntry(q);
  });
}

int64_t Index::InsertEntry(const EntryRow& row) {
  return Guard(path_, "insert entry image=" + row.image_id, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO entries (backend, pool, image_id, cache_name, snap_name, "
                        "state, virtual_size, allocated_bytes, disk_format, checksum, os_hash, "
                        "image_updated_at, depth, created_at, last_used, hits, owner, pinned, "
                        "source_checked_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    BindEntry(q, row);
    q.exec();
    return db_->getLastInsertRowid();
  });
}

void Index::UpdateEntry(const EntryRow& row) {
  Guard(path_, "update entry id=" + std::to_string(row.id), [&] {
    SQLite::Statement q(*db_,
                        "UPDATE entries SET backend = ?, pool = ?, image_id = ?, cache_name = ?, "
                        "snap_name = ?, state = ?, virtual_size = ?, allocated_bytes = ?, "
                        "disk_format = ?, checksum = ?, os_hash = ?, image_updated_at = ?, "
                        "depth = ?, created_at = ?, last_used = ?, hits = ?, owner = ?, "
                        "pinned = ?, source_checked_at = ? WHERE id = ?");
    BindEntry(q, row);
    q.bind(20, row.id);
    if (q.exec() == 0) {
      throw Error(Errc::kNotFound, "index " + path_.string() + ": no entry with id " +
                                       std::to_string(row.id) + " (image=" + row.image_id + ")");
    }
  });
}

bool Index::TransitionEntry(int64_t id, State from, State to, const std::string& owner) {
  return Guard(path_, "transition entry id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "UPDATE entries SET state = ?, owner = ? WHERE id = ? AND state = ?");
    q.bind(1, std::string(StateName(to)));
    q.bind(2, owner);
    q.bind(3, id);
    q.bind(4, std::string(StateName(from)));
    return q.exec() == 1;
  });
}

void Index::DeleteEntry(int64_t id) {
  Guard(path_, "delete entry id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "DELETE FROM entries WHERE id = ?");
    q.bind(1, id);
    q.exec();
  });
}

void Index::TouchEntry(int64_t id, int64_t now) {
  Guard(path_, "touch entry id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "UPDATE entries SET last_used = ?, hits = hits + 1 WHERE id = ?");
    q.bind(1, now);
    q.bind(2, id);
    q.exec();
  });
}

void Index::SetSourceChecked(int64_t id, int64_t when) {
  Guard(path_, "set source check entry id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "UPDATE entries SET source_checked_at = ? WHERE id = ?");
    q.bind(1, when);
    q.bind(2, id);
    q.exec();
  });
}

EntryTotals Index::LiveTotals(const std::string& backend, const std::string& pool) {
  return Guard(path_, "entry totals", [&] {
    // Kept up to date by triggers on entries (schema/003): one row, not a scan.
    SQLite::Statement q(*db_,
                        "SELECT count, virtual_bytes, allocated_bytes FROM entry_totals "
                        "WHERE backend = ? AND pool = ?");
    q.bind(1, backend);
    q.bind(2, pool);
    EntryTotals t;
    if (!q.executeStep()) return t;
    t.count = static_cast<uint64_t>(q.getColumn(0).getInt64());
    t.virtual_bytes = static_cast<uint64_t>(q.getColumn(1).getInt64());
    t.allocated_bytes = static_cast<uint64_t>(q.getColumn(2).getInt64());
    return t;
  });
}

std::vector<LruRow> Index::ReadyByLastUsed(const std::string& backend, const std::string& pool,
                                           size_t limit, int64_t after_last_used,
                                           int64_t after_id) {
  return Guard(path_, "list entries by last use", [&] {
    SQLite::Statement q(*db_,
                        "SELECT id, last_used, virtual_size, allocated_bytes FROM entries "
                        "INDEXED BY entries_lru WHERE backend = ? AND pool = ? AND pinned = 0 "
                        "AND state = 'ready' AND (last_used, id) > (?, ?) "
                        "ORDER BY last_used, id LIMIT ?");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, after_last_used);
    q.bind(4, after_id);
    q.bind(5, static_cast<int64_t>(limit));
    std::vector<LruRow> rows;
    while (q.executeStep()) {
      LruRow r;
      r.id = q.getColumn(0).getInt64();
      r.last_used = q.getColumn(1).getInt64();
      r.virtual_size = static_cast<uint64_t>(q.getColumn(2).getInt64());
      r.allocated_bytes = static_cast<uint64_t>(q.getColumn(3).getInt64());
      rows.push_back(r);
    }
    return rows;
  });
}

std::vector<EntryRow> Index::ListEntries(const std::string& backend, const std::string& pool) {
  return Guard(path_, "list entries", [&] {
    SQLite::Statement q(*db_, std::string("SELECT ") + kEntryColumns +
                                  " FROM entries WHERE backend = ? AND pool = ? ORDER BY id");
    q.bind(1, backend);
    q.bind(2, pool);
    return QueryEntries(q);
  });
}

std::vector<EntryRow> Index::ListEntries() {
  return Guard(path_, "list entries", [&] {
    SQLite::Statement q(*db_, std::string("SELECT ") + kEntryColumns + " FROM entries ORDER BY id");
    return QueryEntries(q);
  });
}

std::vector<EntryRow> Index::ListEntriesByLastUsed(const std::string& backend,
                                                   const std::string& pool) {
  return Guard(path_, "list entries", [&] {
    SQLite::Statement q(*db_, std::string("SELECT ") + kEntryColumns +
                                  " FROM entries WHERE backend = ? AND pool = ? "
                                  "ORDER BY last_used, id");
    q.bind(1, backend);
    q.bind(2, pool);
    return QueryEntries(q);
  });
}

int64_t Index::InsertVolume(const VolumeRow& row) {
  return Guard(path_, "insert volume=" + row.name, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO volumes (entry_id, image_id, name, pool, created_at, depth, "
                        "plan, size_bytes, flattened) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    BindVolume(q, row);
    q.exec();
    return db_->getLastInsertRowid();
  });
}

std::optional<VolumeRow> Index::FindVolume(const std::string& pool, const std::string& name) {
  return Guard(path_, "find volume=" + name, [&]() -> std::optional<VolumeRow> {
    SQLite::Statement q(*db_, std::string("SELECT ") + kVolumeColumns +
                                  " FROM volumes WHERE pool = ? AND name = ?");
    q.bind(1, pool);
    q.bind(2, name);
    if (!q.executeStep()) return std::nullopt;
    return ReadVolume(q);
  });
}

std::vector<VolumeRow> Index::VolumesOf(int64_t entry_id) {
  return Guard(path_, "list volumes", [&] {
    SQLite::Statement q(*db_, std::string("SELECT ") + kVolumeColumns +
                                  " FROM volumes WHERE entry_id = ? ORDER BY id");
    q.bind(1, entry_id);
    return QueryVolumes(q);
  });
}

std::vector<VolumeRow> Index::ListVolumes() {
  return Guard(path_, "list volumes", [&] {
    SQLite::Statement q(*db_, std::string("SELECT ") + kVolumeColumns + " FROM volumes ORDER BY id");
    return QueryVolumes(q);
  });
}

void Index::UpdateVolume(const VolumeRow& row) {
  Guard(path_, "update volume=" + row.name, [&] {
    SQLite::Statement q(*db_,
                        "UPDATE volumes SET entry_id = ?, image_id = ?, name = ?, pool = ?, "
                        "created_at = ?, depth = ?, plan = ?, size_bytes = ?, flattened = ? "
                        "WHERE id = ?");
    BindVolume(q, row);
    q.bind(10, row.id);
    if (q.exec() == 0) {
      throw Error(Errc::kNotFound, "index " + path_.string() + ": no volume with id " +
                                       std::to_string(row.id) + " (volume=" + row.name + ")");
    }
  });
}

void Index::DeleteVolume(int64_t id) {
  Guard(path_, "delete volume id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "DELETE FROM volumes WHERE id = ?");
    q.bind(1, id);
    q.exec();
  });
}

uint64_t Index::CountVolumes(int64_t entry_id) {
  return Guard(path_, "count volumes", [&] {
    SQLite::Statement q(*db_, "SELECT count(*) FROM volumes WHERE entry_id = ?");
    q.bind(1, entry_id);
    q.executeStep();
    return static_cast<uint64_t>(q.getColumn(0).getInt64());
  });
}

void Index::RecordEvent(const EventRow& event) {
  Guard(path_, "record event kind=" + event.kind, [&] {
    SQLite::Statement q(*db_,
                        "INSERT INTO events (ts, kind, image_id, bytes, micros) "
                        "VALUES (?, ?, ?, ?, ?)");
    q.bind(1, event.ts);
    q.bind(2, event.kind);
    q.bind(3, event.image_id);
    q.bind(4, static_cast<int64_t>(event.bytes));
    q.bind(5, event.micros);
    q.exec();
  });
}

std::vector<EventTotals> Index::EventTotalsByKind() {
  return Guard(path_, "event totals", [&] {
    SQLite::Statement q(*db_,
                        "SELECT kind, count(*), coalesce(sum(bytes), 0), coalesce(sum(micros), 0) "
                        "FROM events GROUP BY kind ORDER BY kind");
    std::vector<EventTotals> totals;
    while (q.executeStep()) {
      EventTotals t;
      t.kind = q.getColumn(0).getString();
      t.count = static_cast<uint64_t>(q.getColumn(1).getInt64());
      t.bytes = static_cast<uint64_t>(q.getColumn(2).getInt64());
      t.micros = q.getColumn(3).getInt64();
      totals.push_back(std::move(t));
    }
    return totals;
  });
}

std::vector<EventRow> Index::ListEvents(int64_t since) {
  return Guard(path_, "list events", [&] {
    SQLite::Statement q(*db_,
                        "SELECT ts, kind, image_id, bytes, micros FROM events WHERE ts >= ? "
                        "ORDER BY ts, id");
    q.bind(1, since);
    std::vector<EventRow> rows;
    while (q.executeStep()) {
      EventRow e;
      e.ts = q.getColumn(0).getInt64();
      e.kind = q.getColumn(1).getString();
      e.image_id = q.getColumn(2).getString();
      e.bytes = static_cast<uint64_t>(q.getColumn(3).getInt64());
      e.micros = q.getColumn(4).getInt64();
      rows.push_back(std::move(e));
    }
    return rows;
  });
}

uint64_t Index::PruneEvents(int64_t before) {
  return Guard(path_, "prune events", [&] {
    SQLite::Statement q(*db_, "DELETE FROM events WHERE ts < ?");
    q.bind(1, before);
    return static_cast<uint64_t>(q.exec());
  });
}

SQLite::Database& Index::db() { return *db_; }

}  // namespace cachemgr::index
