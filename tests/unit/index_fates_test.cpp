// Why misses happen, in the index (schema/008): totals per reason kept by the trigger,
// the misses before the schema counted as unknown, and entry fates bounded with the
// events, a live entry's spared.
#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "index/index.h"
#include "index/migrations.h"
#include "support/test_util.h"

namespace fs = std::filesystem;
using cachemgr::index::EntryRow;
using cachemgr::index::EventRetention;
using cachemgr::index::Index;
using cachemgr::index::State;
using cachemgr::test::TempDir;

TEST_CASE("misses are totalled by reason; other events count for none") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  index->RecordEvent({1, "miss", "a", 100, 1, "cold"});
  index->RecordEvent({2, "miss", "a", 100, 1, "capacity"});
  index->RecordEvent({3, "uncached", "b", 500, 1, "too_big"});
  index->RecordEvent({4, "miss", "c", 7, 1, "cold"});
  index->RecordEvent({5, "hit", "a", 100, 1, ""});
  auto totals = index->MissTotalsByReason();
  REQUIRE(totals.size() == 3);
  CHECK(totals[0].reason == "capacity");
  CHECK(totals[0].count == 1);
  CHECK(totals[1].reason == "cold");
  CHECK(totals[1].count == 2);
  CHECK(totals[1].bytes == 107);
  CHECK(totals[2].reason == "too_big");
  CHECK(totals[2].bytes == 500);
  // Counters: pruning the events lowers none.
  index->PruneEvents(100);
  CHECK(index->MissTotalsByReason().size() == 3);
}

TEST_CASE("an index at schema 7 counts its earlier misses as unknown") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    for (const auto& m : cachemgr::index::Migrations()) {
      if (m.version <= 7) db.exec(m.sql);
    }
    db.exec("PRAGMA user_version = 7");
    db.exec(
        "INSERT INTO events (ts, kind, image_id, bytes, micros) VALUES "
        "(1, 'miss', 'a', 300, 3), (2, 'uncached', 'b', 50, 2), (3, 'hit', 'a', 1, 1)");
  }
  auto index = Index::Open(path);
  auto totals = index->MissTotalsByReason();
  REQUIRE(totals.size() == 1);
  CHECK(totals[0].reason == "unknown");
  CHECK(totals[0].count == 2);
  CHECK(totals[0].bytes == 350);
}

TEST_CASE("entry fates: the newest wins; pruned by age and count, a live entry's spared") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db", EventRetention{.max_age_days = 1, .max_rows = 1});
  const int64_t day = 86400, now = 10 * day;
  index->NoteEntryFate("local", "/r", "old", now - 3 * day, "cached");
  index->NoteEntryFate("local", "/r", "old", now - 2 * day, "capacity");
  CHECK(index->EntryFate("local", "/r", "old")->fate == "capacity");
  CHECK_FALSE(index->EntryFate("local", "/other", "old"));
  index->NoteEntryFate("local", "/r", "live", now - 5 * day, "cached");
  index->NoteEntryFate("local", "/r", "a", now - 10, "stale");
  index->NoteEntryFate("local", "/r", "b", now - 5, "capacity");
  EntryRow row;
  row.backend = "local";
  row.pool = "/r";
  row.image_id = "live";
  row.cache_name = "x";
  row.state = State::kReady;
  index->InsertEntry(row);
  // "old" is past max_age_days; of "a" and "b", max_rows keeps the newest; "live" stays.
  CHECK(index->PruneEntryFates(now) == 2);
  CHECK_FALSE(index->EntryFate("local", "/r", "old"));
  CHECK_FALSE(index->EntryFate("local", "/r", "a"));
  CHECK(index->EntryFate("local", "/r", "b")->fate == "capacity");
  CHECK(index->EntryFate("local", "/r", "live")->fate == "cached");
}
