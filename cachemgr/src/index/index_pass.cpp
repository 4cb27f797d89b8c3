// index/index_pass.cpp: what the eviction pass's reconcile reads of every live row (the
// few columns it compares with the pool, not whole rows), and the small values this
// host's passes keep between runs (schema/010), and the entries' version (schema/011).
#include <SQLiteCpp/SQLiteCpp.h>

#include <string>

#include "index/index.h"
#include "index/index_sql.h"
#include "index/migrations.h"

namespace cachemgr::index {
namespace {

// The columns of ReconcileRow, in its order, of every row `q` gives.
std::vector<ReconcileRow> ReadReconcileRows(SQLite::Statement& q) {
  std::vector<ReconcileRow> out;
  while (q.executeStep()) {
    ReconcileRow r;
    r.id = q.getColumn(0).getInt64();
    r.cache_name = q.getColumn(1).getString();
    r.state = ParseState(q.getColumn(2).getString());
    r.identity = q.getColumn(3).getString();
    r.last_used = q.getColumn(4).getInt64();
    r.shared_at = q.getColumn(5).getInt64();
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

std::vector<ReconcileRow> Index::ListReconcileRows(const std::string& backend,
                                                   const std::string& pool) {
  return Guard(path_, "list entries to reconcile", [&] {
    // NOT INDEXED: every live row of the pool straight from the table (as ListEntries).
    SQLite::Statement q(*db_,
                        "SELECT id, cache_name, state, identity, last_used, shared_at "
                        "FROM entries NOT INDEXED WHERE backend = ? AND pool = ? AND pinned = 0 "
                        "ORDER BY id");
    q.bind(1, backend);
    q.bind(2, pool);
    return ReadReconcileRows(q);
  });
}

std::vector<ReconcileRow> Index::ListUsedSince(const std::string& backend, const std::string& pool,
                                               int64_t since) {
  return Guard(path_, "list entries used since " + std::to_string(since), [&] {
    SQLite::Statement q(*db_,
                        "SELECT id, cache_name, state, identity, last_used, shared_at "
                        "FROM entries WHERE backend = ? AND pool = ? AND pinned = 0 "
                        "AND state = 'ready' AND last_used >= ? ORDER BY id");
    q.bind(1, backend);
    q.bind(2, pool);
    q.bind(3, since);
    return ReadReconcileRows(q);
  });
}

int64_t ReadEntriesVersion(SQLite::Database& db) {
  try {
    // Prepared inside: a table dropped fails here.
    SQLite::Statement q(db,
                        "SELECT (SELECT n FROM entries_version WHERE id = 1), "
                        "(SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN "
                        "('entries_version_insert', 'entries_version_delete', "
                        "'entries_version_update'))");
    if (!q.executeStep() || q.getColumn(0).isNull() || q.getColumn(1).getInt() != 3) return -1;
    return q.getColumn(0).getInt64();
  } catch (const SQLite::Exception& e) {
    // The table dropped (an SQL error): damaged. Busy, corrupt, I/O: as any read's.
    if (e.getErrorCode() == SQLITE_ERROR) return -1;
    throw;
  }
}

void RepairEntriesVersion(SQLite::Database& db) {
  if (ReadEntriesVersion(db) >= 0) return;  // every open but one after damage: no write
  const Migration* schema = nullptr;
  for (const Migration& m : Migrations()) {
    if (m.version == 11) schema = &m;
  }
  if (!schema) return;
  SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
  if (ReadEntriesVersion(db) >= 0) return;  // another process repaired it meanwhile
  db.exec(schema->sql);
  db.exec("UPDATE entries_version SET n = coalesce(n, 0) + 1");
  db.exec("DELETE FROM pass_state");
  tx.commit();
}

int64_t Index::EntriesVersion() {
  return Guard(path_, "read the entries' version", [&] { return ReadEntriesVersion(*db_); });
}

std::string Index::GetPassState(const std::string& key) {
  return Guard(path_, "read pass state " + key, [&] {
    SQLite::Statement q(*db_, "SELECT value FROM pass_state WHERE key = ?");
    q.bind(1, key);
    return q.executeStep() ? q.getColumn(0).getString() : std::string();
  });
}

void Index::SetPassState(const std::string& key, const std::string& value) {
  Guard(path_, "write pass state " + key, [&] {
    if (value.empty()) {
      SQLite::Statement q(*db_, "DELETE FROM pass_state WHERE key = ?");
      q.bind(1, key);
      q.exec();
      return;
    }
    SQLite::Statement q(*db_,
                        "INSERT INTO pass_state (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    q.bind(1, key);
    q.bind(2, value);
    q.exec();
  });
}

}  // namespace cachemgr::index
