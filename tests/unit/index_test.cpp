// The SQLite index: migrations (fresh, upgrade, newer, corrupt) and every method.
// Over 600 lines: one case or more for each method of the one Index class, in its order.
#include "index/index.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cachemgr/error.h"
#include "index/index_sql.h"
#include "index/migrations.h"
#include "index/transaction.h"
#include "support/expect_error.h"
#include "support/test_util.h"

namespace fs = std::filesystem;
using cachemgr::Errc;
using cachemgr::Error;
using cachemgr::index::EntryRow;
using cachemgr::index::EventRow;
using cachemgr::index::Index;
using cachemgr::index::IndexInternals;
using cachemgr::index::State;
using cachemgr::index::Transaction;
using cachemgr::index::VolumeRow;
using cachemgr::test::CatchError;
using cachemgr::test::ReadFile;
using cachemgr::test::TempDir;
using cachemgr::test::WriteFile;

namespace {

EntryRow MakeEntry(const std::string& image_id, const std::string& pool = "volumes") {
  EntryRow r;
  r.backend = "rbd";
  r.pool = pool;
  r.image_id = image_id;
  r.cache_name = "image-cache." + image_id;
  r.snap_name = "cachemgr-snap";
  r.state = State::kCreating;
  r.virtual_size = 1ULL << 30;
  r.allocated_bytes = 123456789;
  r.disk_format = "qcow2";
  r.checksum = "0123456789abcdef0123456789abcdef";
  r.os_hash = "sha512:abcd";
  r.image_updated_at = "2024-01-02T03:04:05Z";
  r.depth = 1;
  r.created_at = 1700000000;
  r.last_used = 1700000000;
  r.owner = "host:123";
  return r;
}

int UserVersion(const fs::path& path) {
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  return db.execAndGet("PRAGMA user_version").getInt();
}

}  // namespace

TEST_CASE("a fresh index is at the latest schema, in WAL mode, with foreign keys on") {
  TempDir dir("index");
  const fs::path path = dir / "sub/dir/index.db";  // the parent is created
  auto index = Index::Open(path);
  CHECK(fs::exists(path));
  CHECK(Index::LatestSchemaVersion() >= 2);
  CHECK(index->SchemaVersion() == Index::LatestSchemaVersion());
  CHECK(IndexInternals::Db(*index).execAndGet("PRAGMA journal_mode").getString() == "wal");
  CHECK(IndexInternals::Db(*index).execAndGet("PRAGMA foreign_keys").getInt() == 1);
  CHECK(IndexInternals::Db(*index).execAndGet("PRAGMA busy_timeout").getInt() >= 1000);
  CHECK(index->IntegrityCheck() == "ok");
  CHECK(index->path() == path);
  index.reset();
  CHECK(UserVersion(path) == Index::LatestSchemaVersion());
  // Reopening an up-to-date index changes nothing.
  auto again = Index::Open(path);
  CHECK(again->SchemaVersion() == Index::LatestSchemaVersion());
}

TEST_CASE("the speed-only index on names is made on open without a new schema version") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  auto has_names_index = [&] {
    SQLite::Database db(path, SQLite::OPEN_READONLY);
    return db.execAndGet("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                         "name = 'entries_name'")
               .getInt() == 1;
  };
  Index::Open(path)->InsertEntry(MakeEntry("img-a"));
  CHECK(has_names_index());
  // As the previous release leaves it (it never made the index): made again on open, the
  // schema version untouched, so that release still opens the file afterwards.
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("DROP INDEX entries_name");
  }
  CHECK_FALSE(has_names_index());
  auto index = Index::Open(path);
  CHECK(has_names_index());
  CHECK(UserVersion(path) == Index::LatestSchemaVersion());
  CHECK(index->HasLiveName("rbd", "volumes", MakeEntry("img-a").cache_name));
  CHECK(index->IntegrityCheck() == "ok");
}

TEST_CASE("migrations are numbered from 1 without gaps") {
  int expected = 1;
  for (const auto& m : cachemgr::index::Migrations()) {
    CHECK(m.version == expected);
    ++expected;
  }
  CHECK(expected - 1 == Index::LatestSchemaVersion());
}

TEST_CASE("an index at schema 1 is upgraded and keeps its rows") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec(cachemgr::index::Migrations()[0].sql);
    db.exec("PRAGMA user_version = 1");
    db.exec(
        "INSERT INTO entries (backend, pool, image_id, cache_name, state, last_used) "
        "VALUES ('rbd', 'volumes', 'img-old', 'image-cache.img-old', 'ready', 42)");
    // Schema 1 has no events table: the upgrade must add it.
    CHECK_THROWS(db.exec("SELECT count(*) FROM events"));
  }
  auto index = Index::Open(path);
  CHECK(index->SchemaVersion() == Index::LatestSchemaVersion());
  auto row = index->FindEntry("rbd", "volumes", "img-old");
  REQUIRE(row.has_value());
  CHECK(row->state == State::kReady);
  CHECK(row->last_used == 42);
  index->RecordEvent({.ts = 1, .kind = "hit", .image_id = "img-old", .bytes = 0, .micros = 5});
  auto totals = index->EventTotalsByKind();
  REQUIRE(totals.size() == 1);
  CHECK(totals[0].kind == "hit");
}

TEST_CASE("an index written by a newer schema is refused and left unchanged") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  SUBCASE("a WAL-mode index") {
    { Index::Open(path); }
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("PRAGMA user_version = 999");
  }
  SUBCASE("a rollback-journal file (opening must not switch it to WAL)") {
    SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec("CREATE TABLE future (x)");
    db.exec("PRAGMA user_version = 999");
  }
  const std::string before = ReadFile(path);
  Error e = CatchError([&] { Index::Open(path); });
  CHECK(e.code() == Errc::kConfig);
  const std::string msg = e.what();
  CHECK(msg.find(path.string()) != std::string::npos);
  CHECK(msg.find("newer") != std::string::npos);
  CHECK(msg.find("999") != std::string::npos);
  CHECK(msg.find("upgrade cachemgr") != std::string::npos);
  CHECK(ReadFile(path) == before);
  CHECK(UserVersion(path) == 999);
}

TEST_CASE("a file that is not SQLite is refused and never replaced") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  std::mt19937 rng(7);
  std::string junk(16384, '\0');
  for (char& c : junk) c = static_cast<char>(rng());
  WriteFile(path, junk);
  Error e = CatchError([&] { Index::Open(path); });
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
  CHECK(ReadFile(path) == junk);
  // A second attempt is refused the same way: nothing was recreated in between.
  CHECK(CatchError([&] { Index::Open(path); }).code() == Errc::kCorrupt);
  CHECK(ReadFile(path) == junk);
}

TEST_CASE("a text file is refused as not a database") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  const std::string text = "index: /var/lib/cachemgr/index.db\nbackend:\n  type: local\n";
  WriteFile(path, text);
  CHECK(CatchError([&] { Index::Open(path); }).code() == Errc::kCorrupt);
  CHECK(ReadFile(path) == text);
}

TEST_CASE("a truncated index is refused and never replaced") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  {
    auto index = Index::Open(path);
    Transaction tx(*index, "test");
    for (int i = 0; i < 2000; ++i) {
      auto row = MakeEntry("img-" + std::to_string(i));
      row.checksum = std::string(200, 'a' + static_cast<char>(i % 26));
      index->InsertEntry(row);
    }
    tx.Commit();
  }  // the last connection checkpoints the WAL into the file
  REQUIRE(!fs::exists(dir / "index.db-wal"));
  const auto full = fs::file_size(path);
  REQUIRE(full > 64 * 1024);
  SUBCASE("cut mid-page") { fs::resize_file(path, full / 2 + 100); }
  SUBCASE("cut at a page boundary") { fs::resize_file(path, (full / 2) / 4096 * 4096); }
  const std::string before = ReadFile(path);
  Error e = CatchError([&] { Index::Open(path); });
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
  CHECK(ReadFile(path) == before);
}

TEST_CASE("an empty or cut-short file is refused as damaged, never taken for a new index") {
  // A new index is linked into place whole, so a short file at the path is damage (a
  // truncation, a full disk, a bad restore): taking it as empty would forget the cache.
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  std::string content;
  SUBCASE("0 bytes") {}
  SUBCASE("1 byte") { content = "S"; }
  SUBCASE("the header cut short") { content = std::string("SQLite format 3\0", 16); }
  SUBCASE("a page of zeros") { content = std::string(4096, '\0'); }
  WriteFile(path, content);
  Error e = CatchError([&] { Index::Open(path); });
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
  CHECK(std::string(e.what()).find("rebuild-index") != std::string::npos);
  CHECK(ReadFile(path) == content);
  CHECK(CatchError([&] { Index::Open(path); }).code() == Errc::kCorrupt);  // still refused
}

TEST_CASE("a missing index is created whole, also by many openers at once") {
  TempDir dir("index");
  const fs::path path = dir / "sub" / "index.db";
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      try {
        Index::Open(path);
      } catch (const Error&) {
        failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(fs::file_size(path) >= 512);
  CHECK(Index::Open(path)->SchemaVersion() == Index::LatestSchemaVersion());
  for (const auto& e : fs::directory_iterator(path.parent_path())) {
    CHECK(e.path().filename().string().find(".new-") == std::string::npos);
  }
}

TEST_CASE("SetAside moves a damaged index and its journal to a timestamped name") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  WriteFile(path, "");
  WriteFile(dir / "index.db-wal", "old journal");
  const fs::path aside = Index::SetAside(path);
  CHECK(aside.parent_path() == path.parent_path());
  CHECK(aside.filename().string().rfind("index.db.damaged-", 0) == 0);
  CHECK(fs::exists(aside));
  CHECK(ReadFile(fs::path(aside.string() + "-wal")) == "old journal");
  CHECK(!fs::exists(path));
  CHECK(!fs::exists(dir / "index.db-wal"));
  CHECK(Index::Open(path)->SchemaVersion() == Index::LatestSchemaVersion());
  WriteFile(path, "x");
  CHECK(Index::SetAside(path) != aside);  // a second one in the same second keeps both
}

TEST_CASE("a directory in the way is an error naming the path") {
  TempDir dir("index");
  fs::create_directories(dir / "index.db");
  Error e = CatchError([&] { Index::Open(dir / "index.db"); });
  CHECK(std::string(e.what()).find((dir / "index.db").string()) != std::string::npos);
}

TEST_CASE("HasLiveName finds a live row by its exact name or a prefix, never a pinned one") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  EntryRow staging = MakeEntry("img-a");
  staging.cache_name = "staging-aaaa-0123";
  index->InsertEntry(staging);
  EntryRow ready = MakeEntry("img-b");
  ready.cache_name = "bbbb";
  index->InsertEntry(ready);
  EntryRow pinned = MakeEntry("img-c");
  pinned.cache_name = "cccc";
  pinned.pinned = true;
  index->InsertEntry(pinned);
  CHECK(index->HasLiveName("rbd", "volumes", "bbbb"));
  CHECK_FALSE(index->HasLiveName("rbd", "volumes", "bbb"));  // exact, not a prefix
  CHECK_FALSE(index->HasLiveName("rbd", "other", "bbbb"));   // another pool
  CHECK_FALSE(index->HasLiveName("local", "volumes", "bbbb"));
  CHECK_FALSE(index->HasLiveName("rbd", "volumes", "aaaa"));
  CHECK(index->HasLiveName("rbd", "volumes", "aaaa", "staging-aaaa-"));
  CHECK_FALSE(index->HasLiveName("rbd", "volumes", "aaaa", "staging-aaa-"));
  CHECK_FALSE(index->HasLiveName("rbd", "volumes", "cccc"));  // pinned: not live
  // The prefix's bounds: the prefix itself starts with it; the name just past its last
  // byte ('-' + 1 is '.') and a pinned row's name do not.
  EntryRow exact = MakeEntry("img-d");
  exact.cache_name = "staging-dddd-";
  index->InsertEntry(exact);
  EntryRow past = MakeEntry("img-e");
  past.cache_name = "staging-eeee.0123";
  index->InsertEntry(past);
  EntryRow pinned_staging = MakeEntry("img-f");
  pinned_staging.cache_name = "staging-ffff-0123";
  pinned_staging.pinned = true;
  index->InsertEntry(pinned_staging);
  CHECK(index->HasLiveName("rbd", "volumes", "x", "staging-dddd-"));
  CHECK_FALSE(index->HasLiveName("rbd", "volumes", "x", "staging-eeee-"));
  CHECK(index->HasLiveName("rbd", "volumes", "x", "staging-eeee."));
  CHECK_FALSE(index->HasLiveName("rbd", "volumes", "x", "staging-ffff-"));
  CHECK_FALSE(index->HasLiveName("rbd", "other", "x", "staging-dddd-"));
  // Not ASCII: refused, not answered (the bound above would not hold).
  CHECK_THROWS_AS(index->HasLiveName("rbd", "volumes", "x", "staging-\xff"), Error);
}

TEST_CASE("entries: insert, find, get, update, transition, touch, list, delete") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  const EntryRow in = MakeEntry("img-a");
  const int64_t id = index->InsertEntry(in);
  CHECK(id > 0);

  auto found = index->FindEntry("rbd", "volumes", "img-a");
  REQUIRE(found.has_value());
  CHECK(found->id == id);
  CHECK(found->backend == in.backend);
  CHECK(found->pool == in.pool);
  CHECK(found->cache_name == in.cache_name);
  CHECK(found->snap_name == in.snap_name);
  CHECK(found->state == State::kCreating);
  CHECK(found->virtual_size == in.virtual_size);
  CHECK(found->allocated_bytes == in.allocated_bytes);
  CHECK(found->disk_format == in.disk_format);
  CHECK(found->checksum == in.checksum);
  CHECK(found->os_hash == in.os_hash);
  CHECK(found->image_updated_at == in.image_updated_at);
  CHECK(found->depth == 1);
  CHECK(found->created_at == in.created_at);
  CHECK(found->owner == "host:123");
  CHECK_FALSE(found->pinned);

  CHECK_FALSE(index->FindEntry("rbd", "other", "img-a").has_value());
  CHECK_FALSE(index->FindEntry("local", "volumes", "img-a").has_value());
  CHECK_FALSE(index->GetEntry(id + 100).has_value());
  REQUIRE(index->GetEntry(id).has_value());
  CHECK(index->GetEntry(id)->image_id == "img-a");

  // Transition only from the expected state.
  CHECK_FALSE(index->TransitionEntry(id, State::kReady, State::kEvicting, "h:1"));
  CHECK(index->TransitionEntry(id, State::kCreating, State::kReady, "h:2"));
  CHECK(index->GetEntry(id)->state == State::kReady);
  CHECK(index->GetEntry(id)->owner == "h:2");
  CHECK_FALSE(index->TransitionEntry(id, State::kCreating, State::kReady, "h:3"));

  index->TouchEntry(id, 1800000000);
  index->TouchEntry(id, 1800000001);
  CHECK(index->GetEntry(id)->hits == 2);
  CHECK(index->GetEntry(id)->last_used == 1800000001);

  EntryRow changed = *index->GetEntry(id);
  changed.allocated_bytes = 7;
  changed.depth = 0;
  changed.state = State::kEvicting;
  changed.pinned = true;
  index->UpdateEntry(changed);
  auto after = index->GetEntry(id);
  CHECK(after->allocated_bytes == 7);
  CHECK(after->depth == 0);
  CHECK(after->state == State::kEvicting);
  CHECK(after->pinned);
  // A pinned row is no longer the image's live entry.
  CHECK_FALSE(index->FindEntry("rbd", "volumes", "img-a").has_value());

  EntryRow missing = changed;
  missing.id = id + 100;
  CHECK(CatchError([&] { index->UpdateEntry(missing); }).code() == Errc::kNotFound);

  index->InsertEntry(MakeEntry("img-b"));
  index->InsertEntry(MakeEntry("img-c", "other"));
  CHECK(index->ListEntries().size() == 3);
  CHECK(index->ListEntries("rbd", "volumes").size() == 2);
  CHECK(index->ListEntries("rbd", "other").size() == 1);
  CHECK(index->ListEntries("local", "volumes").empty());

  index->DeleteEntry(id);
  CHECK_FALSE(index->GetEntry(id).has_value());
  CHECK(index->ListEntries().size() == 2);
}

TEST_CASE("UNIQUE(backend, pool, image_id) holds for live entries") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  const int64_t id = index->InsertEntry(MakeEntry("img-a"));
  Error e = CatchError([&] { index->InsertEntry(MakeEntry("img-a")); });
  CHECK(e.code() == Errc::kAlreadyExists);
  CHECK(std::string(e.what()).find("img-a") != std::string::npos);
  // The same image in another pool or backend is another entry.
  index->InsertEntry(MakeEntry("img-a", "other"));
  auto local = MakeEntry("img-a");
  local.backend = "local";
  index->InsertEntry(local);
  // Once the first is pinned (evicted, kept for its clones), the image can be cached again.
  auto pinned = *index->GetEntry(id);
  pinned.pinned = true;
  index->UpdateEntry(pinned);
  const int64_t again = index->InsertEntry(MakeEntry("img-a"));
  CHECK(index->FindEntry("rbd", "volumes", "img-a")->id == again);
  // Unpinning the old row while a live one exists would break the key: refused.
  pinned.pinned = false;
  CHECK(CatchError([&] { index->UpdateEntry(pinned); }).code() == Errc::kAlreadyExists);
}

TEST_CASE("the eviction order is least recently used first") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  for (int i = 0; i < 5; ++i) {
    auto row = MakeEntry("img-" + std::to_string(i));
    row.last_used = 100 - i * 10;  // img-4 is the oldest
    index->InsertEntry(row);
  }
  auto rows = index->ListEntriesByLastUsed("rbd", "volumes");
  REQUIRE(rows.size() == 5);
  CHECK(rows.front().image_id == "img-4");
  CHECK(rows.back().image_id == "img-0");
  CHECK(IndexInternals::Db(*index)
            .execAndGet("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                        "tbl_name = 'entries' AND sql LIKE '%last_used%'")
            .getInt() == 1);
}

TEST_CASE("volumes: insert, find, list, update, count, delete; they outlive their entry") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  const int64_t entry = index->InsertEntry(MakeEntry("img-a"));
  VolumeRow v{.id = 0,
              .entry_id = entry,
              .image_id = "img-a",
              .name = "vm-1-disk",
              .pool = "volumes",
              .created_at = 5,
              .depth = 2,
              .plan = "clone",
              .size_bytes = 1ULL << 31,
              .flattened = false};
  const int64_t v1 = index->InsertVolume(v);
  v.name = "vm-2-disk";
  const int64_t v2 = index->InsertVolume(v);
  VolumeRow direct = v;
  direct.entry_id = 0;  // made without an entry
  direct.name = "vm-3-disk";
  direct.plan = "direct";
  const int64_t v3 = index->InsertVolume(direct);

  CHECK(CatchError([&] { index->InsertVolume(v); }).code() == Errc::kAlreadyExists);
  // A volume must point at an existing entry.
  VolumeRow dangling = v;
  dangling.name = "vm-9";
  dangling.entry_id = entry + 100;
  CHECK_THROWS_AS(index->InsertVolume(dangling), Error);

  auto found = index->FindVolume("volumes", "vm-1-disk");
  REQUIRE(found.has_value());
  CHECK(found->id == v1);
  CHECK(found->entry_id == entry);
  CHECK(found->depth == 2);
  CHECK(found->plan == "clone");
  CHECK(found->size_bytes == (1ULL << 31));
  CHECK_FALSE(index->FindVolume("other", "vm-1-disk").has_value());
  CHECK(index->FindVolume("volumes", "vm-3-disk")->entry_id == 0);

  CHECK(index->CountVolumes(entry) == 2);
  CHECK(index->VolumesOf(entry).size() == 2);
  CHECK(index->ListVolumes().size() == 3);

  VolumeRow flat = *found;
  flat.flattened = true;
  flat.depth = 0;
  index->UpdateVolume(flat);
  CHECK(index->FindVolume("volumes", "vm-1-disk")->flattened);
  CHECK(index->FindVolume("volumes", "vm-1-disk")->depth == 0);

  index->DeleteVolume(v2);
  CHECK(index->CountVolumes(entry) == 1);

  // Deleting the entry keeps the volume's row, now without an entry.
  index->DeleteEntry(entry);
  auto orphan = index->FindVolume("volumes", "vm-1-disk");
  REQUIRE(orphan.has_value());
  CHECK(orphan->entry_id == 0);
  CHECK(index->CountVolumes(entry) == 0);
  index->DeleteVolume(v3);
  CHECK(index->ListVolumes().size() == 1);
}

TEST_CASE("a volume row read before its entry was forgotten is still written, without it") {
  // A create clones from an entry, then another process forgets the entry's row (another
  // host evicted it) before the create records its volume: the record must not fail.
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  const int64_t entry = index->InsertEntry(MakeEntry("img-a"));
  const int64_t other = index->InsertEntry(MakeEntry("img-b"));
  VolumeRow claim{.image_id = "img-a", .name = "vm-1", .pool = "volumes", .plan = ""};
  claim.state = State::kCreating;
  claim.id = index->InsertVolume(claim);
  VolumeRow made = claim;
  made.entry_id = entry;
  made.state = State::kReady;
  made.plan = "clone";
  index->DeleteEntry(entry);  // by the other process, between the clone and the record
  index->UpdateVolume(made);
  auto found = index->FindVolume("volumes", "vm-1");
  REQUIRE(found);
  CHECK(found->state == State::kReady);
  CHECK(found->plan == "clone");
  CHECK(found->entry_id == 0);
  // An entry still there is recorded as before.
  made.entry_id = other;
  made.image_id = "img-b";
  index->UpdateVolume(made);
  CHECK(index->FindVolume("volumes", "vm-1")->entry_id == other);
  CHECK(index->CountVolumes(other) == 1);
  // Forgotten after the record: the schema drops the link the same way.
  index->DeleteEntry(other);
  CHECK(index->FindVolume("volumes", "vm-1")->entry_id == 0);
  // An id given again to another image's entry is not this volume's entry.
  const int64_t again = index->InsertEntry(MakeEntry("img-c"));
  made.entry_id = again;
  index->UpdateVolume(made);  // made.image_id is img-b
  CHECK(index->FindVolume("volumes", "vm-1")->entry_id == 0);
  CHECK(index->CountVolumes(again) == 0);
}

TEST_CASE("a volume name is claimed by a creating row; its identity is recorded") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  VolumeRow claim{.image_id = "img-a", .name = "vm-1", .pool = "volumes", .plan = ""};
  claim.state = State::kCreating;
  claim.owner = "host:42";
  claim.staging_name = "staging-vol-0123";
  claim.id = index->InsertVolume(claim);
  auto found = index->FindVolume("volumes", "vm-1");
  REQUIRE(found);
  CHECK(found->state == State::kCreating);
  CHECK(found->owner == "host:42");
  CHECK(found->staging_name == "staging-vol-0123");
  // A second claim of the name loses, whatever state the first is in.
  CHECK(CatchError([&] { index->InsertVolume(claim); }).code() == Errc::kAlreadyExists);
  claim.state = State::kReady;
  claim.identity = "1a2b3c";
  index->UpdateVolume(claim);
  found = index->FindVolume("volumes", "vm-1");
  CHECK(found->state == State::kReady);
  CHECK(found->identity == "1a2b3c");
  CHECK(CatchError([&] { index->InsertVolume(claim); }).code() == Errc::kAlreadyExists);
  // Entries record their object's identity too.
  auto entry = MakeEntry("img-b");
  entry.identity = "ino-12-345.6";
  const int64_t id = index->InsertEntry(entry);
  CHECK(index->GetEntry(id)->identity == "ino-12-345.6");
  // The newest event of a kind (the pass's count of objects left alone).
  CHECK_FALSE(index->LastEvent("pass_left_alone"));
  index->RecordEvent({.ts = 1, .kind = "pass_left_alone", .image_id = "", .bytes = 3, .micros = 0});
  index->RecordEvent({.ts = 2, .kind = "pass_left_alone", .image_id = "", .bytes = 0, .micros = 0});
  CHECK(index->LastEvent("pass_left_alone")->bytes == 0);
}

TEST_CASE("a claim dropped and its row id given again: the old claim writes nothing") {
  // SQLite gives the largest rowid again once its row is gone: a create whose claim was
  // dropped meanwhile must not write (or drop) the row of the create that got its id.
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  VolumeRow first{.image_id = "img-a", .name = "vm-1", .pool = "volumes", .plan = ""};
  first.state = State::kCreating;
  first.owner = "host:42.100";
  first.staging_name = "staging-vol-aaaa";
  first.id = index->InsertVolume(first);
  CHECK(index->DeleteVolumeClaim(first));
  CHECK_FALSE(index->FindVolume("volumes", "vm-1"));

  VolumeRow second{.image_id = "img-b", .name = "vm-2", .pool = "volumes", .plan = ""};
  second.state = State::kCreating;
  second.owner = "host:43.100";
  second.staging_name = "staging-vol-bbbb";
  second.id = index->InsertVolume(second);
  REQUIRE(second.id == first.id);  // the id, given again

  first.state = State::kReady;
  first.owner.clear();
  CHECK(CatchError([&] { index->UpdateVolume(first); }).code() == Errc::kNotFound);
  first.state = State::kCreating;
  first.owner = "host:42.100";
  CHECK_FALSE(index->DeleteVolumeClaim(first));
  auto still = index->FindVolume("volumes", "vm-2");
  REQUIRE(still);
  CHECK(still->image_id == "img-b");
  CHECK(still->staging_name == "staging-vol-bbbb");
  CHECK(still->state == State::kCreating);
  CHECK_FALSE(index->FindVolume("volumes", "vm-1"));
  // Its own claim is dropped only while it is still a claim.
  second.state = State::kReady;
  index->UpdateVolume(second);
  CHECK_FALSE(index->DeleteVolumeClaim(second));
  second.state = State::kCreating;
  CHECK_FALSE(index->DeleteVolumeClaim(second));
  CHECK(index->FindVolume("volumes", "vm-2"));
  // A row read before is dropped only while it is still that row.
  first.state = State::kReady;
  CHECK_FALSE(index->DeleteVolumeRow(first));
  CHECK_FALSE(index->DeleteVolumeRow(second));  // read as creating, ready now
  second.state = State::kReady;
  CHECK(index->DeleteVolumeRow(second));
  CHECK_FALSE(index->FindVolume("volumes", "vm-2"));
}

TEST_CASE("several processes' connections share one index") {
  TempDir dir("index");
  const fs::path path = dir / "index.db";
  // Many openers of a fresh file at once: each waits for the one migration.
  std::vector<std::thread> threads;
  std::vector<std::string> errors(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      try {
        auto index = Index::Open(path);
        for (int i = 0; i < 20; ++i) {
          index->InsertEntry(MakeEntry("img-" + std::to_string(t) + "-" + std::to_string(i)));
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : errors) CHECK(e == "");
  auto reader = Index::Open(path);
  CHECK(reader->SchemaVersion() == Index::LatestSchemaVersion());
  CHECK(reader->ListEntries().size() == 160);
}

TEST_CASE("entry states have stable names") {
  using cachemgr::index::ParseState;
  using cachemgr::index::StateName;
  for (State s : {State::kCreating, State::kReady, State::kEvicting}) {
    CHECK(ParseState(StateName(s)) == s);
  }
  CHECK(CatchError([] { ParseState("bogus"); }).code() == Errc::kCorrupt);
}

TEST_CASE("live totals and the LRU walk of ready entries follow every change") {
  TempDir dir("index");
  auto index = Index::Open(dir / "index.db");
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto row = MakeEntry("img-" + std::to_string(i));
    row.state = State::kReady;
    row.last_used = 100 - i * 10;  // img-4 is the oldest
    row.virtual_size = 1000;
    row.allocated_bytes = 10;
    ids.push_back(index->InsertEntry(row));
  }
  auto totals = index->LiveTotals("rbd", "volumes");
  CHECK(totals.count == 5);
  CHECK(totals.virtual_bytes == 5000);
  CHECK(totals.allocated_bytes == 50);
  CHECK(index->LiveTotals("local", "volumes").count == 0);

  // Pinned rows leave the totals; a resize and a delete are counted.
  auto row = *index->GetEntry(ids[0]);
  row.pinned = true;
  index->UpdateEntry(row);
  row = *index->GetEntry(ids[1]);
  row.virtual_size = 3000;
  row.state = State::kEvicting;
  index->UpdateEntry(row);
  index->DeleteEntry(ids[2]);
  index->TouchEntry(ids[3], 1);  // now the oldest; a touch leaves the totals alone
  totals = index->LiveTotals("rbd", "volumes");
  CHECK(totals.count == 3);
  CHECK(totals.virtual_bytes == 5000);
  CHECK(totals.allocated_bytes == 30);

  // Ready, live rows only, oldest first, page by page.
  auto page = index->ReadyByLastUsed("rbd", "volumes", 1);
  REQUIRE(page.size() == 1);
  CHECK(page[0].id == ids[3]);
  page = index->ReadyByLastUsed("rbd", "volumes", 10, page[0].last_used, page[0].id);
  REQUIRE(page.size() == 1);
  CHECK(page[0].id == ids[4]);
  CHECK(page[0].virtual_size == 1000);
  CHECK(index->ReadyByLastUsed("rbd", "volumes", 10, page[0].last_used, page[0].id).empty());

  auto fresh = *index->GetEntry(ids[4]);
  CHECK(fresh.source_checked_at == 0);
  index->SetSourceChecked(ids[4], 1234);
  CHECK(index->GetEntry(ids[4])->source_checked_at == 1234);
}
