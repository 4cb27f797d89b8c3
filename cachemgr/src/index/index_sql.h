// index/index_sql.h: what the index's .cpp files share: SQLite errors become
// cachemgr::Error in one place. Private to cachemgr/src/index (and the index's tests).
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "cachemgr/error.h"
#include "index/index.h"

namespace cachemgr::index {

// The entries' version (schema/011), or -1 when its row or one of its triggers is
// missing (dropped by hand): then no version can be trusted.
int64_t ReadEntriesVersion(SQLite::Database& db);
// Makes the entries' version whole again when it is not (on open): schema/011 run again,
// the count moved, and the pass state forgotten (a look recorded before may hold any
// count). Nothing is written when it is whole.
void RepairEntriesVersion(SQLite::Database& db);

// The retention of events and fates is given in days.
constexpr int64_t kSecondsPerDay = 86400;

// The code a SQLite result code (primary and extended) becomes: busy and locked ->
// kBusy (another connection holds the lock past the busy timeout); corrupt and not a
// database -> kCorrupt; a unique or primary key constraint -> kAlreadyExists, any other
// constraint -> kInvalidArgument (a row the schema refuses); full, I/O, read-only,
// cannot open and everything else -> kIo.
constexpr Errc ErrcOfSqlite(int code, int extended) noexcept {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Errc::kBusy;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Errc::kCorrupt;
    case SQLITE_CONSTRAINT:
      if (extended == SQLITE_CONSTRAINT_UNIQUE || extended == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return Errc::kAlreadyExists;
      }
      return Errc::kInvalidArgument;
    default:
      return Errc::kIo;
  }
}

// Maps a SQLite failure to the one error type, naming the index and what was done.
[[noreturn]] inline void Rethrow(const SQLite::Exception& e, const std::filesystem::path& path,
                                 std::string_view what) {
  const Errc code = ErrcOfSqlite(e.getErrorCode(), e.getExtendedErrorCode());
  std::string message = "index " + path.string() + ": " + std::string(what) + ": " + e.what();
  switch (code) {
    case Errc::kBusy:
      message += " (another process holds the index lock; retry, or look for a stuck cachemgr)";
      break;
    case Errc::kCorrupt:
      message += " (run `cachemgr rebuild-index`: it sets the file aside and rebuilds it)";
      break;
    default:
      break;
  }
  throw Error(code, message);
}

// Runs `fn`, turning SQLite exceptions into cachemgr::Error.
template <typename Fn>
auto Guard(const std::filesystem::path& path, std::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const SQLite::Exception& e) {
    Rethrow(e, path, what);
  }
}

// The connection behind an Index, for the index's own files (Transaction) and its
// tests (pragmas, query plans); nothing outside cachemgr/src/index includes this.
struct IndexInternals {
  static SQLite::Database& Db(Index& index) { return *index.db_; }
};

}  // namespace cachemgr::index
