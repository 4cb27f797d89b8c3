#include "index/index.h"

#include <sqlite3.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <string>
#include <system_error>
#include <vector>

#include "cachemgr/error.h"
#include "index/index_sql.h"
#include "index/migrations.h"

namespace cachemgr::index {
namespace {

namespace fs = std::filesystem;

// Many processes share one index; a writer waits this long for another's lock before
// the call fails with kBusy.
constexpr int kBusyTimeoutMs = 10000;

constexpr const char* kEntryColumns =
    "id, backend, pool, image_id, cache_name, snap_name, state, virtual_size, "
    "allocated_bytes, disk_format, checksum, os_hash, image_updated_at, depth, created_at, "
    "last_used, hits, owner, pinned, source_checked_at, identity, shared_at";

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
  r.identity = q.getColumn(20).getString();
  r.shared_at = q.getColumn(21).getInt64();
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
  q.bind(20, r.identity);
  q.bind(21, r.shared_at);
}

std::vector<EntryRow> QueryEntries(SQLite::Statement& q) {
  std::vector<EntryRow> rows;
  while (q.executeStep()) rows.push_back(ReadEntry(q));
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

// quick_check reads every page of what it checks, which a truncated or damaged file
// fails. Every table but events is checked whole on each open: they are small (a row per
// image or volume), so this costs milliseconds. The events (millions of rows in a year,
// read by `stats` alone) would cost a second or more on every command; damage there is
// found by the statements that read them (kCorrupt as well) and by `verify`'s
// integrity_check. "ok", or SQLite's first complaint.
std::string QuickCheck(SQLite::Database& db) {
  std::vector<std::string> tables;
  SQLite::Statement q(db,
                      "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'events'");
  while (q.executeStep()) tables.push_back(q.getColumn(0).getString());
  for (const std::string& table : tables) {
    const std::string check = db.execAndGet("PRAGMA quick_check(\"" + table + "\")").getString();
    if (check != "ok") return check;
  }
  return "ok";
}

void Migrate(SQLite::Database& db, const fs::path& path) {
  const int latest = Index::LatestSchemaVersion();
  // Nothing to migrate (every open but the first after an upgrade): no write lock, so a
  // read-only command is not held up by another process's write transaction.
  if (db.execAndGet("PRAGMA user_version").getInt() == latest) return;
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

// Indexes that only make queries faster: made on open when missing, outside the numbered
// schema, so that the previous release (which refuses a newer schema) still opens an
// index this one used, and keeps them up to date as it writes rows.
//   entries_name: whether a name, or a fill's staging prefix, belongs to a live row
//   (HasLiveName), asked by the pass for each lock key, orphan and other host's entry.
//   Without it each question walked every live row (0.3 s at 100,000 entries).
constexpr const char* kSpeedIndexes[][2] = {
    {"entries_name",
     "CREATE INDEX IF NOT EXISTS entries_name ON entries(backend, pool, cache_name) "
     "WHERE pinned = 0"},
};

void EnsureSpeedIndexes(SQLite::Database& db) {
  for (const auto& [name, sql] : kSpeedIndexes) {
    SQLite::Statement q(db, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?");
    q.bind(1, name);
    if (q.executeStep()) continue;  // every open but the first: no write lock taken
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    db.exec(sql);
    tx.commit();
  }
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

std::unique_ptr<Index> Index::Open(const fs::path& path, const EventRetention& retention) {
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
    const std::string check = QuickCheck(*db);
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
    EnsureSpeedIndexes(*db);
    RepairEntriesVersion(*db);
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
  index->retention_ = retention;
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
                        "source_checked_at, identity, shared_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
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
                        "pinned = ?, source_checked_at = ?, identity = ?, shared_at = ? "
                        "WHERE id = ?");
    BindEntry(q, row);
    q.bind(22, row.id);
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

void Index::SetShared(int64_t id, int64_t when) {
  Guard(path_, "set shared entry id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "UPDATE entries SET shared_at = ? WHERE id = ?");
    q.bind(1, when);
    q.bind(2, id);
    q.exec();
  });
}

void Index::MergeLastUsed(int64_t id, int64_t when) {
  Guard(path_, "merge last use entry id=" + std::to_string(id), [&] {
    SQLite::Statement q(*db_, "UPDATE entries SET last_used = ? WHERE id = ? AND last_used < ?");
    q.bind(1, when);
    q.bind(2, id);
    q.bind(3, when);
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
    // NOT INDEXED: every row of the pool, read in id order straight from the table. Through
    // entries_lru each row cost a lookup and the whole a sort (3x the time at 100k rows).
    SQLite::Statement q(*db_, std::string("SELECT ") + kEntryColumns +
                                  " FROM entries NOT INDEXED WHERE backend = ? AND pool = ? "
                                  "ORDER BY id");
    q.bind(1, backend);
    q.bind(2, pool);
    return QueryEntries(q);
  });
}

std::vector<EntryRow> Index::ListUnsettledEntries(const std::string& backend,
                                                  const std::string& pool) {
  return Guard(path_, "list unsettled entries", [&] {
    SQLite::Statement q(*db_, std::string("SELECT ") + kEntryColumns +
                                  " FROM entries WHERE backend = ? AND pool = ? AND "
                                  "(pinned != 0 OR state != ?) ORDER BY id");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, std::string(StateName(State::kReady)));
    return QueryEntries(q);
  });
}

std::vector<std::pair<std::string, std::string>> Index::ListLiveNames(const std::string& backend,
                                                                      const std::string& pool) {
  return Guard(path_, "list live entry names", [&] {
    SQLite::Statement q(*db_,
                        "SELECT cache_name, image_id FROM entries NOT INDEXED WHERE backend = ? "
                        "AND pool = ? AND pinned = 0 ORDER BY id");  // as ListEntries
    q.bind(1, backend);
    q.bind(2, pool);
    std::vector<std::pair<std::string, std::string>> out;
    while (q.executeStep()) out.emplace_back(q.getColumn(0).getString(), q.getColumn(1).getString());
    return out;
  });
}

bool Index::HasLiveName(const std::string& backend, const std::string& pool,
                        const std::string& name, const std::string& or_prefix) {
  // A prefix is ASCII (a fill's staging prefix), so raising its last byte never wraps.
  for (const char c : or_prefix) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      throw Error(Errc::kInvalidArgument, "entry name prefix " + or_prefix + ": not ASCII");
    }
  }
  std::string prefix_end = or_prefix;
  if (!prefix_end.empty()) prefix_end.back() = static_cast<char>(prefix_end.back() + 1);
  return Guard(path_, "find a live entry name", [&] {
    // Two seeks in entries_name (kSpeedIndexes): the name, and the names from the prefix
    // up to the prefix with its last byte raised (the names that start with it).
    SQLite::Statement q(*db_,
                        "SELECT EXISTS (SELECT 1 FROM entries WHERE backend = ?1 AND pool = ?2 "
                        "AND pinned = 0 AND cache_name = ?3) OR EXISTS (SELECT 1 FROM entries "
                        "WHERE ?4 != '' AND backend = ?1 AND pool = ?2 AND pinned = 0 AND "
                        "cache_name >= ?4 AND cache_name < ?5)");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, name);
    q.bind(4, or_prefix);
    q.bind(5, prefix_end);
    return q.executeStep() && q.getColumn(0).getInt() != 0;
  });
}

Index::SettledTotals Index::ReadyAndPinnedTotals(const std::string& backend,
                                                 const std::string& pool) {
  return Guard(path_, "ready and pinned totals", [&] {
    SQLite::Statement q(*db_,
                        "SELECT pinned != 0, COUNT(*), SUM(virtual_size), SUM(allocated_bytes) "
                        "FROM entries WHERE backend = ? AND pool = ? AND (pinned != 0 OR state = ?) "
                        "GROUP BY pinned != 0");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, std::string(StateName(State::kReady)));
    SettledTotals t;
    while (q.executeStep()) {
      EntryTotals& into = q.getColumn(0).getInt() != 0 ? t.pinned : t.ready;
      into.count = static_cast<uint64_t>(q.getColumn(1).getInt64());
      into.virtual_bytes = static_cast<uint64_t>(q.getColumn(2).getInt64());
      into.allocated_bytes = static_cast<uint64_t>(q.getColumn(3).getInt64());
    }
    return t;
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

}  // namespace cachemgr::index
