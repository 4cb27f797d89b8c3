// The index's errors and transactions: every SQLite failure leaves as cachemgr::Error
// with the code a caller acts on, naming the index file and what was being done.
#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>

#include "cachemgr/error.h"
#include "index/index.h"
#include "index/index_sql.h"
#include "index/transaction.h"
#include "support/expect_error.h"
#include "support/test_util.h"

namespace fs = std::filesystem;
using cachemgr::Errc;
using cachemgr::ErrcName;
using cachemgr::Error;
using cachemgr::index::EntryRow;
using cachemgr::index::ErrcOfSqlite;
using cachemgr::index::Index;
using cachemgr::index::IndexInternals;
using cachemgr::index::State;
using cachemgr::index::Transaction;
using cachemgr::test::CatchError;
using cachemgr::test::ReadFile;
using cachemgr::test::TempDir;
using cachemgr::test::WriteFile;

namespace {

bool Contains(const Error& e, const std::string& part) {
  return std::string(e.what()).find(part) != std::string::npos;
}

EntryRow MakeEntry(const std::string& image_id) {
  EntryRow r;
  r.backend = "local";
  r.pool = "/var/lib/cachemgr";
  r.image_id = image_id;
  r.cache_name = "image-cache." + image_id;
  r.state = State::kReady;
  return r;
}

}  // namespace

TEST_CASE("each SQLite result code becomes the code a caller acts on") {
  struct Case {
    int extended;
    Errc want;
  };
  const Case cases[] = {
      {SQLITE_BUSY, Errc::kBusy},
      {SQLITE_BUSY_SNAPSHOT, Errc::kBusy},
      {SQLITE_BUSY_TIMEOUT, Errc::kBusy},
      {SQLITE_LOCKED, Errc::kBusy},
      {SQLITE_LOCKED_SHAREDCACHE, Errc::kBusy},
      {SQLITE_CORRUPT, Errc::kCorrupt},
      {SQLITE_CORRUPT_INDEX, Errc::kCorrupt},
      {SQLITE_NOTADB, Errc::kCorrupt},
      {SQLITE_CONSTRAINT_UNIQUE, Errc::kAlreadyExists},
      {SQLITE_CONSTRAINT_PRIMARYKEY, Errc::kAlreadyExists},
      {SQLITE_CONSTRAINT_CHECK, Errc::kInvalidArgument},
      {SQLITE_CONSTRAINT_NOTNULL, Errc::kInvalidArgument},
      {SQLITE_CONSTRAINT_FOREIGNKEY, Errc::kInvalidArgument},
      {SQLITE_FULL, Errc::kIo},
      {SQLITE_IOERR, Errc::kIo},
      {SQLITE_IOERR_FSYNC, Errc::kIo},
      {SQLITE_IOERR_SHORT_READ, Errc::kIo},
      {SQLITE_READONLY, Errc::kIo},
      {SQLITE_CANTOPEN, Errc::kIo},
      {SQLITE_ERROR, Errc::kIo},
  };
  for (const auto& c : cases) {
    CAPTURE(c.extended);
    // SQLiteCpp hands over the primary code and the extended one; either alone maps too.
    CHECK(ErrcName(ErrcOfSqlite(c.extended & 0xff, c.extended)) == ErrcName(c.want));
    if ((c.extended & 0xff) != SQLITE_CONSTRAINT) {
      CHECK(ErrcName(ErrcOfSqlite(c.extended, c.extended)) == ErrcName(c.want));
    }
  }
}

TEST_CASE("another connection's write lock is kBusy, naming the index and the purpose") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  auto index = Index::Open(path);
  // An operator's index waits 10 s for a lock; the test need not.
  IndexInternals::Db(*index).setBusyTimeout(50);
  SQLite::Database other(path, SQLite::OPEN_READWRITE);
  other.exec("BEGIN EXCLUSIVE");

  Error begin = CatchError([&] { Transaction tx(*index, "record volume vm-1"); });
  CHECK(ErrcName(begin.code()) == ErrcName(Errc::kBusy));
  CHECK(Contains(begin, path.string()));
  CHECK(Contains(begin, "record volume vm-1"));
  CHECK(Contains(begin, "another process holds the index lock"));

  Error insert = CatchError([&] { index->InsertEntry(MakeEntry("img-a")); });
  CHECK(ErrcName(insert.code()) == ErrcName(Errc::kBusy));
  CHECK(Contains(insert, path.string()));
  CHECK(Contains(insert, "insert entry image=img-a"));

  Error event = CatchError([&] { index->RecordEvent({1, "hit", "img-a", 0, 0}); });
  CHECK(ErrcName(event.code()) == ErrcName(Errc::kBusy));
  CHECK(Contains(event, "record event kind=hit"));

  // Once the lock is gone, the same Index works: nothing was left half-open.
  other.exec("ROLLBACK");
  {
    Transaction tx(*index, "after the lock");
    index->InsertEntry(MakeEntry("img-a"));
    tx.Commit();
  }
  CHECK(index->ListEntries().size() == 1);
}

TEST_CASE("a garbage file is kCorrupt naming the file, and left as it was") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  std::string garbage(8192, '\0');
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>((i * 131 + 7) % 251);
  WriteFile(path, garbage);
  Error e = CatchError([&] { Index::Open(path); });
  CHECK(ErrcName(e.code()) == ErrcName(Errc::kCorrupt));
  CHECK(Contains(e, path.string()));
  CHECK(Contains(e, "rebuild-index"));
  CHECK(ReadFile(path) == garbage);
}

TEST_CASE("damage found by a statement is kCorrupt naming the index and the statement") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  auto index = Index::Open(path);
  index->RecordEvent({1, "hit", "img-a", 0, 0});
  {
    // The events table's root page made to point past the end of the file, as a torn
    // write of the schema page could.
    SQLite::Database other(path, SQLite::OPEN_READWRITE);
    const int version = other.execAndGet("PRAGMA schema_version").getInt();
    other.exec("PRAGMA writable_schema = ON");
    other.exec("UPDATE sqlite_master SET rootpage = 100000 WHERE name = 'events'");
    other.exec("PRAGMA schema_version = " + std::to_string(version + 1));
  }
  Error e = CatchError([&] { index->ListEvents(); });
  CHECK(ErrcName(e.code()) == ErrcName(Errc::kCorrupt));
  CHECK(Contains(e, path.string()));
  CHECK(Contains(e, "list events"));
  CHECK(Contains(e, "rebuild-index"));
}

TEST_CASE("a full index is kIo naming the index and the statement") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  auto index = Index::Open(path);
  auto& db = IndexInternals::Db(*index);
  // A disk that is full, for this connection: no page beyond those there now.
  db.exec("PRAGMA max_page_count = " + std::to_string(db.execAndGet("PRAGMA page_count").getInt()));
  Error e = CatchError([&] {
    for (int i = 0; i < 10000; ++i) {
      index->RecordEvent({i, "hit", std::string(200, 'x'), 0, 0});
    }
  });
  CHECK(ErrcName(e.code()) == ErrcName(Errc::kIo));
  CHECK(Contains(e, path.string()));
  CHECK(Contains(e, "record event kind=hit"));
}

TEST_CASE("a unique key taken is kAlreadyExists naming the row") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  index->InsertEntry(MakeEntry("img-a"));
  Error e = CatchError([&] { index->InsertEntry(MakeEntry("img-a")); });
  CHECK(ErrcName(e.code()) == ErrcName(Errc::kAlreadyExists));
  CHECK(Contains(e, "insert entry image=img-a"));
}

TEST_CASE("a transaction commits all of its statements, or none") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  SUBCASE("committed") {
    {
      Transaction tx(*index, "two entries");
      index->InsertEntry(MakeEntry("img-a"));
      index->InsertEntry(MakeEntry("img-b"));
      tx.Commit();
    }
    CHECK(index->ListEntries().size() == 2);
  }
  SUBCASE("a failure inside rolls back what came before it") {
    Error e = CatchError([&] {
      Transaction tx(*index, "two entries, one twice");
      index->InsertEntry(MakeEntry("img-a"));
      index->InsertEntry(MakeEntry("img-a"));
      tx.Commit();
    });
    CHECK(ErrcName(e.code()) == ErrcName(Errc::kAlreadyExists));
    CHECK(index->ListEntries().empty());
  }
  SUBCASE("not committed") {
    {
      Transaction tx(*index, "left open");
      index->InsertEntry(MakeEntry("img-a"));
    }
    CHECK(index->ListEntries().empty());
    // The connection is free again: a new transaction begins.
    Transaction tx(*index, "next");
    tx.Commit();
  }
  SUBCASE("committed twice") {
    Transaction tx(*index, "once");
    tx.Commit();
    CHECK(ErrcName(CatchError([&] { tx.Commit(); }).code()) == ErrcName(Errc::kInternal));
  }
}

TEST_CASE("a transaction that is not committed leaves nothing behind") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  {
    Transaction tx(*index, "test");
    index->InsertEntry(MakeEntry("img-a"));
  }
  CHECK(index->ListEntries().empty());
}
