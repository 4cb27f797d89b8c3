// Local backend, two hosts sharing one root: an idle pass skips comparing the pool with
// its index while neither changed since they were last found in step (the look: the
// pool folders' stamps and the index's entries version, engine/reconcile.cpp), and any
// change, on any host or in the index alone, makes the next pass compare again. The gc
// of leftover objects keeps its own look and never skips past a leftover it reports.
#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "cachemgr/cache.h"
#include "engine/naming.h"
#include "engine_fixture.h"
#include "storage/local/local_backend.h"
#include "storage/local/local_files.h"
#include "support/engine_harness.h"

namespace cachemgr::test {
namespace {

// The folders' times give a stamp only once older than 2 s (in whole seconds).
void Settle() { std::this_thread::sleep_for(std::chrono::milliseconds(3100)); }

struct Hosts {
  Env env;
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
  DrivenEngine a, b;

  Hosts() {
    Options oa = env.options;
    oa.host_id = "host-a";
    oa.index = (env.dir.path() / "a.db").string();
    Options ob = env.options;
    ob.host_id = "host-b";
    ob.index = (env.dir.path() / "b.db").string();
    ob.cache.max_count = 1;  // B's fills evict the older entry
    a = OpenDrivenEngine(oa, clock);
    b = OpenDrivenEngine(ob, clock);
  }
  // How many times A's pass listed the pool with identities (the reconcile's compare).
  uint64_t ListingsByA(const EvictOptions& options = {}) {
    const uint64_t before = a.faults->calls(Verb::kListIdentities);
    a.cache->RunEvictionPass(options);
    return a.faults->calls(Verb::kListIdentities) - before;
  }
  // A's passes until one finds the pool and index in step (it records the look).
  void InStep() {
    a.cache->RunEvictionPass({});
    Settle();
    a.cache->RunEvictionPass({});
  }
};

bool LeftAlone(const EvictReport& report, const std::string& name) {
  for (const auto& act : report.actions)
    if (act.kind == "left alone" && act.name == name) return true;
  return false;
}

// Another program writes A's index file straight: `first` (if any), then drops x's row;
// the pool is as it was.
void DropRowByHand(Hosts& h, const std::string& x, const char* first = nullptr) {
  SQLite::Database db(h.env.dir.path() / "a.db", SQLite::OPEN_READWRITE);
  if (first) db.exec(first);
  REQUIRE(db.exec("DELETE FROM entries WHERE image_id = '" + x + "'") == 1);
}

// A with x cached and a look recorded.
std::string CachedInStep(Hosts& h, uint32_t seed) {
  const auto x = h.env.AddImage(4 * kMiB, seed);
  h.a.cache->Prefill(x);
  h.InStep();
  REQUIRE(h.ListingsByA() == 0);
  return x;
}

TEST_CASE("an idle pass skips the compare; an entry another host makes or removes is "
          "adopted or dropped by the next pass") {
  Hosts h;
  const auto x = h.env.AddImage(4 * kMiB, 51);
  const auto y = h.env.AddImage(4 * kMiB, 52);
  h.a.cache->Prefill(x);
  h.b.cache->RunEvictionPass({});  // B adopts x
  h.InStep();
  CHECK(h.ListingsByA() == 0);  // nothing changed: no listing
  CHECK(h.ListingsByA() == 0);
  // A dry run never compares (it changes nothing, the index included).
  CHECK(h.ListingsByA({.dry_run = true}) == 0);

  // B makes y, and evicts x for it (max_count 1): x's name leaves the pool.
  h.clock->Advance(std::chrono::seconds(60));
  h.b.cache->Prefill(y);
  REQUIRE_FALSE(h.b.cache->Lookup(x));
  REQUIRE(h.a.cache->Lookup(x));
  Settle();
  CHECK(h.ListingsByA() == 1);
  CHECK(h.a.cache->Lookup(y));       // adopted
  CHECK_FALSE(h.a.cache->Lookup(x));  // dropped
  // That pass found them in step (its gc had adopted y before the compare): recorded.
  CHECK(h.ListingsByA() == 0);
}

TEST_CASE("a look is trusted for 15 minutes only: then a pass compares in full, though "
          "no stamp moved") {
  Hosts h;
  CachedInStep(h, 56);
  h.clock->Advance(std::chrono::minutes(14));
  CHECK(h.ListingsByA() == 0);
  h.clock->Advance(std::chrono::minutes(2));  // 16 minutes after the look was recorded
  CHECK(h.ListingsByA() == 1);
  CHECK(h.ListingsByA() == 0);  // recorded again
  // A wall clock set back does not stretch the trust either.
  h.clock->StepWallBack(std::chrono::minutes(1));
  CHECK(h.ListingsByA() == 1);
}

TEST_CASE("the pool's fates are pruned once an hour by a host, not by every pass") {
  Hosts h;
  const auto x = h.env.AddImage(4 * kMiB, 57);
  h.a.cache->Prefill(x);  // shares its fate ("cached") with the pool
  REQUIRE(h.env.backend->ReadTable("fates").count(engine::EntryName(x)) == 1);
  // Fates of names the pool does not hold, far older than events_max_age_days.
  const std::string old = std::to_string(h.clock->WallSeconds() - 400 * 86400) + " evict other";
  const std::string gone1 = engine::Sha1Hex("gone 1"), gone2 = engine::Sha1Hex("gone 2");
  h.env.backend->WriteTable("fates", {{gone1, old}});
  h.a.cache->RunEvictionPass({});  // the first pass prunes
  CHECK(h.env.backend->ReadTable("fates").count(gone1) == 0);
  h.env.backend->WriteTable("fates", {{gone2, old}});
  h.clock->Advance(std::chrono::minutes(59));
  h.a.cache->RunEvictionPass({});
  CHECK(h.env.backend->ReadTable("fates").count(gone2) == 1);  // within the hour
  h.clock->Advance(std::chrono::minutes(2));
  h.a.cache->RunEvictionPass({});
  CHECK(h.env.backend->ReadTable("fates").count(gone2) == 0);
  CHECK(h.env.backend->ReadTable("fates").count(engine::EntryName(x)) == 1);  // held: kept
}

TEST_CASE("a change made in the index alone makes the next pass compare, and the pool then "
          "puts the row back") {
  Hosts h;
  const auto x = CachedInStep(h, 53);
  DropRowByHand(h, x);
  REQUIRE_FALSE(h.a.cache->Lookup(x));
  CHECK(h.ListingsByA() == 1);
  CHECK(h.a.cache->Lookup(x));  // adopted back from the pool
}

TEST_CASE("with the entries' version damaged by hand, every pass compares until the index "
          "is opened again") {
  Hosts h;
  const auto x = CachedInStep(h, 58);
  DropRowByHand(h, x, "DROP TRIGGER entries_version_delete");
  CHECK(h.ListingsByA() == 1);  // the row dropped unseen by the count: compared anyway
  CHECK(h.a.cache->Lookup(x));  // and put back from the pool
  CHECK(h.ListingsByA() == 1);  // nothing recorded while it is damaged
}

TEST_CASE("a change within a pool's `.meta` folder alone makes the next pass compare") {
  Hosts h;
  const auto x = CachedInStep(h, 54);
  auto& local = dynamic_cast<storage::LocalBackend&>(*h.env.backend);
  const auto meta = local.PathOf({h.env.backend->entry_pool(), "x"}).parent_path() / ".meta";
  REQUIRE(std::filesystem::is_directory(meta));
  std::ofstream(meta / "someone-else") << "x";
  Settle();
  CHECK(h.ListingsByA() == 1);
}

TEST_CASE("a foreign object shaped like the cache's leftovers is reported by every pass, "
          "the look never skipping past it") {
  Hosts h;
  const auto x = CachedInStep(h, 55);
  auto& local = dynamic_cast<storage::LocalBackend&>(*h.env.backend);
  const std::string staging = std::string(engine::kStagingPrefix) + engine::Sha1Hex("other") + "-x1";
  const std::string entry_like = engine::EntryName("not-ours");
  std::ofstream(local.PathOf({h.env.backend->entry_pool(), staging})) << "someone's data";
  std::ofstream(local.PathOf({h.env.backend->entry_pool(), entry_like})) << "someone's data";
  for (int pass = 0; pass < 3; ++pass) {
    Settle();
    const auto report = h.a.cache->RunEvictionPass({});
    CHECK(LeftAlone(report, staging));
    CHECK(LeftAlone(report, entry_like));
  }
  CHECK(std::filesystem::exists(local.PathOf({h.env.backend->entry_pool(), staging})));
  CHECK(std::filesystem::exists(local.PathOf({h.env.backend->entry_pool(), entry_like})));
  CHECK_FALSE(h.a.cache->Lookup("not-ours"));
}

}  // namespace
}  // namespace cachemgr::test

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;

bool Swept(const EvictReport& report, const fs::path& path) {
  for (const auto& act : report.actions)
    if (act.kind == "gc" && fs::path(act.name) == path && act.done) return true;
  return false;
}

TEST_CASE("the sweep passes over folders found clean, for 15 minutes at most, and lists a "
          "folder again once anything changes in it") {
  Hosts h;
  CachedInStep(h, 58);
  // A table no pass writes (a pass's own write to one would move its stamp anyway).
  h.env.backend->WriteTable("quiet", {{"k", "v"}}, {});
  const fs::path table = fs::path(h.env.options.backend.local.root) / ".state" / "quiet";
  REQUIRE(fs::is_directory(table));
  // A dead writer's temporary in a folder the passes found clean: the folder changed.
  const fs::path dead = table / ".tmp-k-XXdead";
  WriteFile(dead, "d");
  Settle();
  CHECK(Swept(h.a.cache->RunEvictionPass({}), dead));
  CHECK_FALSE(fs::exists(dead));

  // The index says the table's folder was clean at the stamp it has now (with another
  // dead temporary in it): passed over, until that look is 15 minutes old.
  WriteFile(dead, "d");
  Settle();
  const std::string stamp = storage::SettledFolderStamp(table);
  REQUIRE_FALSE(stamp.empty());
  {
    SQLite::Database db(h.env.dir.path() / "a.db", SQLite::OPEN_READWRITE);
    SQLite::Statement q(db, "INSERT OR REPLACE INTO pass_state(key, value) VALUES ('sweep_looks', ?)");
    q.bind(1, nlohmann::json{{".state/quiet", {stamp, h.clock->WallSeconds()}}}.dump());
    q.exec();
  }
  CHECK_FALSE(Swept(h.a.cache->RunEvictionPass({}), dead));
  CHECK(fs::exists(dead));
  h.clock->Advance(std::chrono::minutes(14));
  CHECK_FALSE(Swept(h.a.cache->RunEvictionPass({}), dead));
  h.clock->Advance(std::chrono::minutes(2));
  CHECK(Swept(h.a.cache->RunEvictionPass({}), dead));
  CHECK_FALSE(fs::exists(dead));
}

}  // namespace
}  // namespace cachemgr::test
