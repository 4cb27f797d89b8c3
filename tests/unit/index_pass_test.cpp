// The index's part of the eviction pass's reconcile (index_pass.cpp): the entries'
// version that tells a pass whether any row changed (schema/011), the rows used since a
// time, and the pass state kept between runs.
#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <string>

#include "index/index.h"
#include "index/index_sql.h"
#include "support/test_util.h"

using cachemgr::index::EntryRow;
using cachemgr::index::Index;
using cachemgr::index::IndexInternals;
using cachemgr::index::State;
using cachemgr::test::TempDir;

namespace {

EntryRow Row(const std::string& image_id, int64_t last_used) {
  EntryRow r;
  r.backend = "local";
  r.pool = "/srv/cache";
  r.image_id = image_id;
  r.cache_name = "name-" + image_id;
  r.snap_name = "cachemgr-base";
  r.state = State::kCreating;
  r.virtual_size = 1 << 20;
  r.created_at = last_used;
  r.last_used = last_used;
  r.owner = "host:1";
  return r;
}

}  // namespace

TEST_CASE("the entries' version moves on a row made, dropped, renamed, re-identified, "
          "moved to another state or pinned, and not on a use, a hit or a source check") {
  TempDir dir("index-pass");
  auto ix = Index::Open(dir / "index.db");
  int64_t v = ix->EntriesVersion();
  auto moved = [&] {
    const int64_t now = ix->EntriesVersion();
    const bool did = now != v;
    v = now;
    return did;
  };
  const int64_t id = ix->InsertEntry(Row("a", 100));
  CHECK(moved());
  auto row = *ix->GetEntry(id);

  ix->TouchEntry(id, 200);
  CHECK_FALSE(moved());
  ix->MergeLastUsed(id, 300);
  CHECK_FALSE(moved());
  ix->SetShared(id, 300);
  CHECK_FALSE(moved());
  ix->SetSourceChecked(id, 300);
  CHECK_FALSE(moved());
  row = *ix->GetEntry(id);
  row.hits += 5;
  row.allocated_bytes += 4096;
  ix->UpdateEntry(row);  // a row written whole with only counters changed
  CHECK_FALSE(moved());

  CHECK(ix->TransitionEntry(id, State::kCreating, State::kReady, ""));
  CHECK(moved());
  row = *ix->GetEntry(id);
  row.identity = "ino:7";
  ix->UpdateEntry(row);
  CHECK(moved());
  row.cache_name = "name-a2";
  ix->UpdateEntry(row);
  CHECK(moved());
  row.pinned = true;
  ix->UpdateEntry(row);
  CHECK(moved());
  row.pinned = false;
  ix->UpdateEntry(row);
  CHECK(moved());
  ix->DeleteEntry(id);
  CHECK(moved());

  // A row dropped by another program writing the file (the triggers are in the file, not
  // in this code) moves it too, and the count survives a reopen.
  const int64_t id2 = ix->InsertEntry(Row("b", 100));
  CHECK(moved());
  IndexInternals::Db(*ix).exec("DELETE FROM entries WHERE id = " + std::to_string(id2));
  CHECK(moved());
  ix.reset();
  ix = Index::Open(dir / "index.db");
  CHECK(ix->EntriesVersion() == v);
}

TEST_CASE("the rows used since a time: ready, live, of that pool, at or after it") {
  TempDir dir("index-pass");
  auto ix = Index::Open(dir / "index.db");
  auto ready = [&](const std::string& image_id, int64_t last_used, const std::string& pool) {
    auto r = Row(image_id, last_used);
    r.pool = pool;
    const int64_t id = ix->InsertEntry(r);
    REQUIRE(ix->TransitionEntry(id, State::kCreating, State::kReady, ""));
    return id;
  };
  ready("old", 100, "/srv/cache");
  const int64_t at = ready("at", 200, "/srv/cache");
  const int64_t later = ready("later", 300, "/srv/cache");
  ready("elsewhere", 300, "/srv/other");
  ix->InsertEntry(Row("creating", 300));
  const int64_t pinned = ready("pinned", 300, "/srv/cache");
  auto p = *ix->GetEntry(pinned);
  p.pinned = true;
  ix->UpdateEntry(p);

  const auto rows = ix->ListUsedSince("local", "/srv/cache", 200);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].id == at);
  CHECK(rows[0].cache_name == "name-at");
  CHECK(rows[0].last_used == 200);
  CHECK(rows[1].id == later);
  CHECK(ix->ListUsedSince("local", "/srv/cache", 301).empty());
  CHECK(ix->ListUsedSince("rbd", "/srv/cache", 0).empty());
}

TEST_CASE("pass state: unset reads empty, a value is kept across a reopen, empty removes it") {
  TempDir dir("index-pass");
  auto ix = Index::Open(dir / "index.db");
  CHECK(ix->GetPassState("k").empty());
  ix->SetPassState("k", "v 1");
  ix.reset();
  ix = Index::Open(dir / "index.db");
  CHECK(ix->GetPassState("k") == "v 1");
  ix->SetPassState("k", "");
  CHECK(ix->GetPassState("k").empty());
  CHECK(IndexInternals::Db(*ix).execAndGet("SELECT COUNT(*) FROM pass_state").getInt() == 0);
}

TEST_CASE("an entries' version damaged by hand reads -1, and the next open repairs it and "
          "forgets the pass state") {
  TempDir dir("index-version-repair");
  const auto path = dir / "index.db";
  int round = 0;
  for (const char* damage : {"DROP TRIGGER entries_version_delete",
                             "DROP TRIGGER entries_version_insert",
                             "DROP TRIGGER entries_version_update",
                             "DELETE FROM entries_version",
                             "DROP TABLE entries_version"}) {
    CAPTURE(damage);
    auto ix = Index::Open(path);
    const auto id = ix->InsertEntry(Row("v" + std::to_string(round++), 10));
    ix->SetPassState("reconcile_look", "some look 5 @10");
    REQUIRE(ix->EntriesVersion() >= 0);
    {
      SQLite::Database db(path.string(), SQLite::OPEN_READWRITE);
      db.exec(damage);
    }
    CHECK(ix->EntriesVersion() == -1);
    ix.reset();
    ix = Index::Open(path);
    const int64_t repaired = ix->EntriesVersion();
    CHECK(repaired >= 1);
    CHECK(ix->GetPassState("reconcile_look").empty());
    // The triggers count again.
    ix->DeleteEntry(id);
    CHECK(ix->EntriesVersion() == repaired + 1);
    ix->SetPassState("reconcile_look", "kept");
    ix.reset();
    ix = Index::Open(path);  // whole: nothing forgotten
    CHECK(ix->GetPassState("reconcile_look") == "kept");
    ix->SetPassState("reconcile_look", "");
  }
}
