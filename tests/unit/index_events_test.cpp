// The events table: totals per kind kept by triggers (every event ever recorded, pruned
// or not), the retention that bounds the table and the file, and `stats` on a year of
// events.
#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "index/index.h"
#include "index/index_sql.h"
#include "index/migrations.h"
#include "index/transaction.h"
#include "support/test_util.h"

namespace fs = std::filesystem;
using cachemgr::index::EventRetention;
using cachemgr::index::EventRow;
using cachemgr::index::EventTotals;
using cachemgr::index::Index;
using cachemgr::index::IndexInternals;
using cachemgr::index::Transaction;
using cachemgr::test::TempDir;

namespace {

constexpr int64_t kDay = 86400;
constexpr int64_t kNow = 1800000000;

// The totals as a GROUP BY over every row computes them: what the triggers must match.
std::vector<EventTotals> ScannedTotals(Index& index) {
  SQLite::Statement q(IndexInternals::Db(index),
                      "SELECT kind, count(*), sum(bytes), sum(micros) FROM events "
                      "GROUP BY kind ORDER BY kind");
  std::vector<EventTotals> out;
  while (q.executeStep()) {
    out.push_back({q.getColumn(0).getString(), static_cast<uint64_t>(q.getColumn(1).getInt64()),
                   static_cast<uint64_t>(q.getColumn(2).getInt64()), q.getColumn(3).getInt64()});
  }
  return out;
}

void CheckTotalsMatchRows(Index& index) {
  auto kept = index.EventTotalsByKind();
  auto scanned = ScannedTotals(index);
  REQUIRE(kept.size() == scanned.size());
  for (size_t i = 0; i < kept.size(); ++i) {
    CHECK(kept[i].kind == scanned[i].kind);
    CHECK(kept[i].count == scanned[i].count);
    CHECK(kept[i].bytes == scanned[i].bytes);
    CHECK(kept[i].micros == scanned[i].micros);
  }
}

// The totals are lifetime counts: the retention's deletes lower none of them.
void CheckTotalsUnchanged(Index& index, const std::vector<EventTotals>& before) {
  auto now = index.EventTotalsByKind();
  REQUIRE(now.size() == before.size());
  for (size_t i = 0; i < now.size(); ++i) {
    CHECK(now[i].kind == before[i].kind);
    CHECK(now[i].count == before[i].count);
    CHECK(now[i].bytes == before[i].bytes);
    CHECK(now[i].micros == before[i].micros);
  }
}

int64_t RowCount(Index& index) {
  return IndexInternals::Db(index).execAndGet("SELECT count(*) FROM events").getInt64();
}

// Inserts n events through one prepared statement in one transaction: ts from `first_ts`
// one `step` apart, kinds in turn.
void Fill(Index& index, int64_t n, int64_t first_ts, int64_t step) {
  static const char* const kKinds[] = {
      "hit", "miss",   "hit",   "plan:clone",     "hit", "evict", "plan:copy",
      "hit", "direct", "stale", "pass_left_alone"};
  Transaction tx(index, "fill events");
  SQLite::Statement q(IndexInternals::Db(index),
                      "INSERT INTO events (ts, kind, image_id, bytes, micros) "
                      "VALUES (?, ?, ?, ?, ?)");
  for (int64_t i = 0; i < n; ++i) {
    q.bind(1, first_ts + i * step);
    q.bind(2, kKinds[i % std::size(kKinds)]);
    q.bind(3, "img-" + std::to_string(i % 500));
    q.bind(4, static_cast<int64_t>(i % 1000) << 20);
    q.bind(5, static_cast<int64_t>(i % 7000));
    q.exec();
    q.reset();
  }
  tx.Commit();
}

}  // namespace

TEST_CASE("events: recorded, totalled by kind, listed and pruned") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  CHECK(index->EventTotalsByKind().empty());
  index->RecordEvent({.ts = 10, .kind = "miss", .image_id = "a", .bytes = 100, .micros = 7});
  index->RecordEvent({.ts = 20, .kind = "hit", .image_id = "a", .bytes = 0, .micros = 1});
  index->RecordEvent({.ts = 30, .kind = "hit", .image_id = "b", .bytes = 0, .micros = 2});
  index->RecordEvent({.ts = 40, .kind = "miss", .image_id = "b", .bytes = 50, .micros = 3});
  auto totals = index->EventTotalsByKind();
  REQUIRE(totals.size() == 2);
  CHECK(totals[0].kind == "hit");
  CHECK(totals[0].count == 2);
  CHECK(totals[0].micros == 3);
  CHECK(totals[1].kind == "miss");
  CHECK(totals[1].count == 2);
  CHECK(totals[1].bytes == 150);
  CHECK(index->ListEvents().size() == 4);
  auto recent = index->ListEvents(25);
  REQUIRE(recent.size() == 2);
  CHECK(recent[0].ts == 30);
  CHECK(recent[0].image_id == "b");
  CHECK(index->PruneEvents(25) == 2);
  CHECK(index->ListEvents().size() == 2);
}

TEST_CASE("the totals per kind count every event recorded; pruning lowers none") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  CHECK(index->EventTotalsByKind().empty());
  for (int i = 0; i < 300; ++i) {
    index->RecordEvent({i, i % 3 ? "hit" : "miss", "img", static_cast<uint64_t>(i), i * 2});
  }
  CheckTotalsMatchRows(*index);
  const auto recorded = index->EventTotalsByKind();
  CHECK(index->PruneEvents(150) == 150);
  // Counters (Prometheus reads them as such) never go down.
  CheckTotalsUnchanged(*index, recorded);
  // The last event of a kind outlives its row.
  index->RecordEvent({1000, "evict", "img-last", 7, 9});
  CHECK(index->PruneEvents(1001) == 151);
  CHECK(RowCount(*index) == 0);
  auto totals = index->EventTotalsByKind();
  REQUIRE(totals.size() == 3);
  CHECK(totals[0].kind == "evict");
  CHECK(totals[0].count == 1);
  auto last = index->LastEvent("evict");
  REQUIRE(last.has_value());
  CHECK(last->ts == 1000);
  CHECK(last->image_id == "img-last");
  CHECK(last->bytes == 7);
  CHECK(last->micros == 9);
  CHECK_FALSE(index->LastEvent("stale").has_value());
}

TEST_CASE("the pass's last left-alone count outlives the retention") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db", EventRetention{.max_age_days = 0, .max_rows = 1000});
  index->RecordEvent({kNow, "pass_left_alone", "", 1, 0});
  for (int64_t i = 1; i <= 3000; ++i) index->RecordEvent({kNow + i, "hit", "img", 0, 0});
  index->ApplyEventRetention(kNow + 3000);
  CHECK(RowCount(*index) == 1000);
  auto last = index->LastEvent("pass_left_alone");
  REQUIRE(last.has_value());
  CHECK(last->bytes == 1);
  CHECK(last->ts == kNow);
}

TEST_CASE("a prune that fails while an event is recorded costs the event nothing") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db", EventRetention{.max_age_days = 0, .max_rows = 1000});
  // Every delete of an event fails, as a damaged page among the oldest would.
  IndexInternals::Db(*index).exec(
      "CREATE TRIGGER refuse_delete BEFORE DELETE ON events BEGIN "
      "SELECT RAISE(ABORT, 'damaged'); END");
  const int64_t n = 3 * static_cast<int64_t>(Index::kPruneEvery);
  {
    // Inside a caller's transaction too, as the hit records its event.
    Transaction tx(*index, "record events");
    for (int64_t i = 1; i <= n; ++i) index->RecordEvent({kNow + i, "hit", "img", 0, 0});
    tx.Commit();
  }
  CHECK(RowCount(*index) == n);
  CHECK(index->EventTotalsByKind().at(0).count == static_cast<uint64_t>(n));
  // The pass's own prune reports the failure.
  index->RecordEvent({kNow + n + 1, "hit", "img", 0, 0});
  const auto more = static_cast<int64_t>(1000 + Index::kPruneBatch);
  for (int64_t i = 0; i < more; ++i) index->RecordEvent({kNow + n + 2 + i, "hit", "img", 0, 0});
  CHECK_THROWS_AS(index->ApplyEventRetention(kNow + n + more + 2), cachemgr::Error);
}

TEST_CASE("max_rows beyond what SQLite counts keeps every event") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db",
                           EventRetention{.max_age_days = 0, .max_rows = UINT64_MAX});
  for (int64_t i = 1; i <= 600; ++i) index->RecordEvent({kNow + i, "hit", "img", 0, 0});
  CHECK(index->ApplyEventRetention(kNow + 600) == 0);
  CHECK(RowCount(*index) == 600);
}

TEST_CASE("an index at schema 6 gets the totals of the events it has") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    for (const auto& m : cachemgr::index::Migrations()) {
      if (m.version <= 6) db.exec(m.sql);
    }
    db.exec("PRAGMA user_version = 6");
    db.exec(
        "INSERT INTO events (ts, kind, image_id, bytes, micros) VALUES "
        "(1, 'hit', 'a', 10, 1), (2, 'hit', 'b', 20, 2), (3, 'miss', 'a', 300, 3)");
  }
  auto index = Index::Open(path);
  auto totals = index->EventTotalsByKind();
  REQUIRE(totals.size() == 2);
  CHECK(totals[0].kind == "hit");
  CHECK(totals[0].count == 2);
  CHECK(totals[0].bytes == 30);
  CHECK(totals[0].micros == 3);
  CHECK(totals[1].kind == "miss");
  CHECK(totals[1].count == 1);
  CHECK(totals[1].bytes == 300);
}

TEST_CASE("the retention keeps the newest max_rows events") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db", EventRetention{.max_age_days = 0, .max_rows = 1000});
  CHECK(index->event_retention().max_rows == 1000);
  for (int64_t i = 1; i <= 5000; ++i) index->RecordEvent({kNow + i, "hit", "img", 0, 0});
  // Recording alone keeps the table near its bound: a batch every kPruneEvery events.
  CHECK(RowCount(*index) <= 1000 + static_cast<int64_t>(Index::kPruneEvery));
  CHECK(RowCount(*index) >= 1000);
  index->ApplyEventRetention(kNow + 5000);
  CHECK(RowCount(*index) == 1000);
  auto rows = index->ListEvents();
  CHECK(rows.front().ts == kNow + 4001);  // the oldest went
  CHECK(rows.back().ts == kNow + 5000);
  CHECK(index->EventTotalsByKind().at(0).count == 5000);  // every event ever recorded
  // A batch deletes at most its limit.
  Fill(*index, 500, kNow + 6000, 1);
  CHECK(index->PruneEventBatch(kNow + 7000, 200) == 200);
  CHECK(RowCount(*index) == 1300);
}

TEST_CASE("the retention deletes the events older than max_age_days") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db", EventRetention{.max_age_days = 2, .max_rows = 0});
  for (int64_t age_days : {5, 3, 2, 1, 0}) {
    index->RecordEvent({kNow - age_days * kDay - 1, "miss", "img", 0, 0});
  }
  CHECK(index->ApplyEventRetention(kNow) == 3);  // 5, 3 and 2 days (and a second) old
  auto rows = index->ListEvents();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].ts == kNow - kDay - 1);
  CHECK(index->EventTotalsByKind().at(0).count == 5);  // every event ever recorded
  // Off (0, 0): nothing is ever deleted.
  auto keep_all = Index::Open(dir / "index.db");
  CHECK(keep_all->ApplyEventRetention(kNow + 1000 * kDay) == 0);
}

TEST_CASE("the file stops growing once the events are at their bound") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  auto index = Index::Open(path, EventRetention{.max_age_days = 0, .max_rows = 20000});
  auto& db = IndexInternals::Db(*index);
  std::vector<int64_t> pages;
  for (int round = 0; round < 6; ++round) {
    Fill(*index, 40000, kNow + round * 40000, 1);
    index->ApplyEventRetention(kNow + (round + 1) * 40000);
    CHECK(RowCount(*index) == 20000);
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    pages.push_back(db.execAndGet("PRAGMA page_count").getInt64());
    CHECK(static_cast<int64_t>(fs::file_size(path)) ==
          pages.back() * db.execAndGet("PRAGMA page_size").getInt64());
  }
  CAPTURE(pages);
  // From the second fill on, each fill reuses the pages the pruning freed: the file is as
  // large as the bound plus one fill needs, fill after fill.
  const int64_t steady = pages[1];
  for (size_t i = 2; i < pages.size(); ++i) CHECK(pages[i] <= steady + steady / 20);
  uint64_t recorded = 0;
  for (const auto& t : index->EventTotalsByKind()) recorded += t.count;
  CHECK(recorded == 6 * 40000);  // every event ever recorded
}

TEST_CASE("stats on a year of events (5 million rows): no scan of events, under 100 ms") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  constexpr int64_t kRows = 5000000;
  {
    // A year of a busy host, one event every 6 s, as Fill makes them but in one
    // statement (a loop in SQLite, not 5 million calls): seconds, not minutes.
    Transaction tx(*index, "fill a year of events");
    SQLite::Statement q(
        IndexInternals::Db(*index),
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1) "
        "INSERT INTO events (ts, kind, image_id, bytes, micros) "
        "SELECT ? + i * 6, CASE i % 11 WHEN 1 THEN 'miss' WHEN 3 THEN 'plan:clone' "
        "WHEN 5 THEN 'evict' WHEN 6 THEN 'plan:copy' WHEN 8 THEN 'direct' WHEN 9 THEN 'stale' "
        "WHEN 10 THEN 'pass_left_alone' ELSE 'hit' END, 'img-' || (i % 500), "
        "(i % 1000) << 20, i % 7000 FROM n");
    q.bind(1, kRows);
    q.bind(2, kNow - 365 * kDay);
    CHECK(q.exec() == kRows);
    tx.Commit();
  }
  // Every statement `stats` runs (Cache::GetStats asks the index for these two).
  auto stats = [&] {
    auto totals = index->EventTotalsByKind();
    auto last = index->LastEvent("pass_left_alone");
    return std::make_pair(totals, last);
  };
  // What SQLite does for each statement stats prepares: caught as it runs.
  std::vector<std::string> statements;
  sqlite3_trace_v2(
      IndexInternals::Db(*index).getHandle(), SQLITE_TRACE_STMT,
      [](unsigned, void* ctx, void*, void* sql) {
        static_cast<std::vector<std::string>*>(ctx)->push_back(static_cast<const char*>(sql));
        return 0;
      },
      &statements);
  auto [totals, last] = stats();
  sqlite3_trace_v2(IndexInternals::Db(*index).getHandle(), 0, nullptr, nullptr);
  uint64_t count = 0;
  for (const auto& t : totals) count += t.count;
  CHECK(count == kRows);
  REQUIRE(last.has_value());
  CHECK(last->kind == "pass_left_alone");
  REQUIRE(statements.size() == 2);
  for (const auto& sql : statements) {
    CAPTURE(sql);
    SQLite::Statement plan(IndexInternals::Db(*index), "EXPLAIN QUERY PLAN " + sql);
    while (plan.executeStep()) {
      const std::string detail = plan.getColumn(3).getString();
      CAPTURE(detail);
      // "SCAN events" is a read of every row; "SEARCH events USING INDEX" is not.
      CHECK(detail.find("SCAN events") == std::string::npos);
    }
  }
  // The median of 5 runs: of the queries, and of what `cachemgr stats` does with the
  // index (open it, its checks included, then the queries).
  auto median_ms = [](auto&& fn) {
    std::vector<double> ms;
    for (int run = 0; run < 5; ++run) {
      const auto start = std::chrono::steady_clock::now();
      fn();
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[2];
  };
  const double queries = median_ms(stats);
  const double open_and_queries = median_ms([&] {
    auto again = Index::Open(dir / "index.db");
    again->EventTotalsByKind();
    again->LastEvent("pass_left_alone");
  });
  MESSAGE("stats over 5M events: median " << queries << " ms; with the open " << open_and_queries
                                          << " ms");
  CHECK(queries < 100.0);
  CHECK(open_and_queries < 100.0);
}
