// index/index_sql.h: what the index's .cpp files share: SQLite errors become
// cachemgr::Error in one place. Private to cachemgr/src/index.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "cachemgr/error.h"

namespace cachemgr::index {

// Maps a SQLite failure to the one error type, naming the index and what was done.
[[noreturn]] inline void Rethrow(const SQLite::Exception& e, const std::filesystem::path& path,
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
auto Guard(const std::filesystem::path& path, std::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const SQLite::Exception& e) {
    Rethrow(e, path, what);
  }
}

}  // namespace cachemgr::index
