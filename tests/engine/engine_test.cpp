// The cache engine end to end on one backend: local (no fixture) or RBD (built with
// ENGINE_RBD, FIXTURES ceph). The source is a directory of image files.
// Over 600 lines: the public verbs' main paths, each a case; the narrower rules have
// files of their own (engine_ownership, engine_fault, engine_pass_look, ...).
#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "cachemgr/cache.h"
#include "engine/failpoints.h"
#include "engine/naming.h"
#include "engine_env.h"
#include "engine_fixture.h"
#include "fetch/workdir.h"
#include "storage/factory.h"
#include "storage/local/local_backend.h"
#include "support/engine_harness.h"
#include "support/test_util.h"

using namespace cachemgr;
using namespace cachemgr::test;

TEST_CASE("miss, then hits clone the cached entry") {
  Env env;
  auto id = env.AddImage();
  auto cache = env.Open();
  auto first = cache->CreateVolume({.image_id = id, .volume = "vol-a"});
  CHECK(first.plan == Plan::kMiss);
  CHECK(first.depth == 1);
  CHECK(first.bytes_downloaded == 8 * kMiB);
  CHECK(first.size_bytes == 8 * kMiB);
  auto second = cache->CreateVolume({.image_id = id, .volume = "vol-b"});
  CHECK(second.plan == Plan::kClone);
  CHECK(second.depth == 1);
  CHECK(second.bytes_downloaded == 0);
  CHECK(env.SameData("vol-a", id));
  CHECK(env.SameData("vol-b", id));

  auto entry = cache->Lookup(id);
  REQUIRE(entry);
  CHECK(entry->state == EntryState::kReady);
  CHECK(entry->volumes == 2);
  CHECK(entry->hits >= 1);
  CHECK(entry->cache_name.size() == 40);
  auto stats = cache->GetStats();
  CHECK(stats.misses == 1);
  CHECK(stats.hits == 1);
  CHECK(stats.entries == 1);
  CHECK(stats.bytes_downloaded == 8 * kMiB);
  CHECK(cache->Volumes(id).size() == 2);
  CHECK(cache->Verify(id).ok);

  // A third volume larger than the image is grown; a smaller one is refused.
  auto big = cache->CreateVolume({.image_id = id, .volume = "vol-c", .size_bytes = 16 * kMiB});
  CHECK(env.backend->Stat(env.Vol("vol-c")).size == 16 * kMiB);
  CHECK(big.size_bytes == 16 * kMiB);
  CHECK_THROWS_AS(
      ([&] { cache->CreateVolume({.image_id = id, .volume = "vol-d", .size_bytes = kMiB}); }()),
      Error);
  CHECK_FALSE(env.backend->Exists(env.Vol("vol-d")));
  // A taken name is refused.
  CHECK_THROWS_AS(([&] { cache->CreateVolume({.image_id = id, .volume = "vol-a"}); }()), Error);

  cache->DeleteVolume("vol-b");
  CHECK_FALSE(env.backend->Exists(env.Vol("vol-b")));
  CHECK(cache->Volumes(id).size() == 2);
}

TEST_CASE("a hit whose entry another host made again, then removed between two reads, is a miss") {
  // This host's row records the entry it made; another host evicted it and filled the
  // image again, and a third host's pass removes that one between this host's reading of
  // the name's identity and of its mark. The cache's own object is never reported as
  // foreign: the create fills the image again.
  Env env;
  auto id = env.AddImage();
  auto a = OpenDrivenEngine(env.options);
  CHECK(a.cache->CreateVolume({.image_id = id, .volume = "vol-a1"}).plan == Plan::kMiss);
  a.cache->DeleteVolume("vol-a1");
  auto entry = a.cache->Lookup(id);
  REQUIRE(entry);
  const storage::ImageRef ref{env.backend->entry_pool(), entry->cache_name};
  const storage::SnapRef snap{ref, engine::kSnapName};
  auto remove_entry = [&] {  // another host's pass
    env.backend->UnprotectSnapshot(snap);
    env.backend->RemoveSnapshot(snap);
    CHECK(env.backend->Remove(ref) == storage::RemoveOutcome::kRemoved);
  };
  const auto first = env.backend->Identity(ref);
  remove_entry();
  Options other = env.options;
  other.index = (env.dir.path() / "index-b.db").string();
  other.host_id = "host-b";
  CHECK(Cache::Open(other)->Prefill(id).outcome == PrefillOutcome::kFilled);
  const auto second = env.backend->Identity(ref);
  REQUIRE(second != first);
  bool removed = false;
  a.faults->AfterIdentity([&](const storage::ImageRef& r, const std::string& identity) {
    if (removed || r.name != ref.name || identity != second) return;
    removed = true;
    remove_entry();
  });
  auto made = a.cache->CreateVolume({.image_id = id, .volume = "vol-a2"});
  a.faults->AfterIdentity(nullptr);
  CHECK(removed);
  CHECK(made.plan == Plan::kMiss);
  CHECK(env.SameData("vol-a2", id));
}

TEST_CASE("a hit whose entry is forgotten between its clone and its record still makes the volume") {
  // Another host evicts the entry just after this host cloned it (the clone keeps it in
  // the trash), and this host's pass, in another process, forgets the entry's row before
  // the create records its volume. The volume is whole: the create succeeds and records it.
  Env env;
  auto id = env.AddImage();
  auto a = OpenDrivenEngine(env.options);
  CHECK(a.cache->CreateVolume({.image_id = id, .volume = "vol-1"}).plan == Plan::kMiss);
  bool forgotten = false;
  a.faults->AfterClone([&](const storage::SnapRef&, const storage::ImageRef& child) {
    if (forgotten || child.pool != env.backend->volume_pool()) return;
    forgotten = true;
    SQLite::Database db(env.options.index, SQLite::OPEN_READWRITE);
    db.exec("PRAGMA foreign_keys = ON");
    CHECK(db.exec("DELETE FROM entries WHERE image_id = '" + id + "'") == 1);
  });
  auto made = a.cache->CreateVolume({.image_id = id, .volume = "vol-2"});
  a.faults->AfterClone(nullptr);
  CHECK(forgotten);
  CHECK(made.plan == Plan::kClone);
  CHECK(env.SameData("vol-2", id));
  bool listed = false;
  for (const auto& v : a.cache->Volumes(id)) listed = listed || v.name == "vol-2";
  CHECK(listed);
  // The next create finds no row: it adopts the entry or fills the image again.
  auto next = a.cache->CreateVolume({.image_id = id, .volume = "vol-3"});
  CHECK(env.SameData("vol-3", id));
  a.cache->DeleteVolume("vol-2");
  CHECK_FALSE(env.backend->Exists(env.Vol("vol-2")));
  (void)next;
}

TEST_CASE("a hit's volume is marked, sized and recorded whichever way the backend places it") {
  // RBD and the local backend's qcow2 mode make the clone at its name in one call
  // (CloneInPlace): no separate clone, mark, resize or rename. The local copy and reflink
  // modes cannot, and stage. Either way the volume carries the mark with its identity, the
  // row the same identity, and the size asked.
  Env env;
  auto id = env.AddImage();
  auto a = OpenDrivenEngine(env.options);
  REQUIRE(a.cache->CreateVolume({.image_id = id, .volume = "vol-1"}).plan == Plan::kMiss);
  const auto clones = a.faults->calls(Verb::kClone);
  const auto renames = a.faults->calls(Verb::kRename);
  const auto marks = a.faults->calls(Verb::kSetMetadata);
  const auto resizes = a.faults->calls(Verb::kResize);
  auto made = a.cache->CreateVolume({.image_id = id, .volume = "vol-2", .size_bytes = 24 * kMiB});
  CHECK(made.plan == Plan::kClone);
  CHECK(a.faults->calls(Verb::kCloneInPlace) >= 1);
  const auto* local = dynamic_cast<storage::LocalBackend*>(&a.faults->inner());
  const bool in_place = local == nullptr || local->clone_mode() == CloneMode::kQcow2;
  CHECK(a.faults->calls(Verb::kClone) - clones == (in_place ? 0U : 1U));
  CHECK(a.faults->calls(Verb::kRename) - renames == (in_place ? 0U : 1U));
  CHECK(a.faults->calls(Verb::kResize) - resizes == (in_place ? 0U : 1U));
  CHECK(a.faults->calls(Verb::kSetMetadata) - marks == (in_place ? 0U : 1U));
  CHECK(env.backend->Stat(env.Vol("vol-2")).size == 24 * kMiB);
  CHECK(env.SameData("vol-2", id));
  const auto identity = env.backend->Identity(env.Vol("vol-2"));
  CHECK(env.backend->GetMetadata(env.Vol("vol-2")).at("cachemgr.mark") == "volume " + identity);
  SQLite::Database db(env.options.index, SQLite::OPEN_READONLY);
  SQLite::Statement q(db, "SELECT identity, staging_name FROM volumes WHERE name = 'vol-2'");
  REQUIRE(q.executeStep());
  CHECK(q.getColumn(0).getString() == identity);
  CHECK_FALSE(env.backend->Exists(env.Vol(q.getColumn(1).getString())));
  CHECK(env.backend->SweepTemporaries(true).empty());

  // A size that is not whole 512-byte sectors: refused before anything is made (a qcow2
  // overlay would round it up, and the volume would not be the size recorded).
  bool refused = false;
  try {
    a.cache->CreateVolume({.image_id = id, .volume = "vol-odd", .size_bytes = 24 * kMiB + 1});
  } catch (const Error& e) {
    refused = e.code() == Errc::kInvalidArgument &&
              std::string(e.what()).find("512") != std::string::npos;
  }
  CHECK(refused);
  CHECK_FALSE(env.backend->Exists(env.Vol("vol-odd")));
  CHECK(env.CountRows("SELECT count(*) FROM volumes WHERE name = 'vol-odd'") == 0);
}

TEST_CASE("max_clone_depth 0 makes independent copies") {
  Env env;
  env.options.cache.max_clone_depth = 0;
  auto id = env.AddImage();
  auto cache = env.Open();
  cache->CreateVolume({.image_id = id, .volume = "v1"});
  auto r = cache->CreateVolume({.image_id = id, .volume = "v2"});
  CHECK(r.plan == Plan::kCopy);
  CHECK(r.depth == 0);
  CHECK(env.backend->Depth(env.Vol("v2")) == 0);
  CHECK(env.SameData("v2", id));
}

TEST_CASE("an image larger than max size is served but not cached") {
  Env env;
  env.options.cache.max_size_gb = 4.0 / 1024;  // 4 MiB
  auto id = env.AddImage(8 * kMiB);
  auto cache = env.Open();
  auto r = cache->CreateVolume({.image_id = id, .volume = "big"});
  CHECK(r.plan == Plan::kUncached);
  CHECK(r.depth == 0);
  CHECK_FALSE(cache->Lookup(id));
  CHECK(env.SameData("big", id));
  CHECK_THROWS_AS(cache->Prefill(id), Error);
}

TEST_CASE("a changed checksum replaces the entry; its old clones keep their data") {
  Env env;
  auto id = env.AddImage(8 * kMiB, 1);
  auto cache = env.Open();
  cache->CreateVolume({.image_id = id, .volume = "old"});
  auto old_file = env.dir / "old-bytes";
  std::filesystem::copy_file(env.Image(id), old_file);
  // New bytes, same size, in a new file (a source never rewrites a file in place; the
  // local backend may have hard-linked the old one as the entry).
  WriteRawImage(env.dir / "new-bytes", 8 * kMiB, 4 * kMiB, 2);
  std::filesystem::rename(env.dir / "new-bytes", env.Image(id));

  auto r = cache->CreateVolume({.image_id = id, .volume = "new"});
  CHECK(r.plan == Plan::kMiss);
  CHECK(env.SameData("new", id));
  CHECK(Md5OfImage(*env.backend, env.Vol("old"), 8 * kMiB) == Md5OfFile(old_file, 8 * kMiB));
  CHECK(cache->GetStats().stale == 1);
  CHECK(cache->GetStats().pinned_bytes == 8 * kMiB);  // the old entry, kept for "old"

  cache->DeleteVolume("old");
  auto report = cache->RunEvictionPass({});
  CHECK(report.pinned_bytes == 0);
  CHECK(env.backend->ListTrash().empty());
  CHECK(env.CountRows("SELECT count(*) FROM entries") == 1);
}

TEST_CASE("a changed updated_at replaces the entry only when configured") {
  Env env;
  auto id = env.AddImage();
  {
    auto cache = env.Open();
    cache->CreateVolume({.image_id = id, .volume = "v1"});
  }
  // Same bytes, new mtime (Glance bumps updated_at on metadata edits).
  std::filesystem::last_write_time(
      env.Image(id), std::filesystem::file_time_type::clock::now() + std::chrono::hours(1));
  {
    auto cache = env.Open();
    CHECK(cache->CreateVolume({.image_id = id, .volume = "v2"}).plan == Plan::kClone);
  }
  env.options.cache.stale_on_updated_at = true;
  auto cache = env.Open();
  CHECK(cache->CreateVolume({.image_id = id, .volume = "v3"}).plan == Plan::kMiss);
  CHECK(cache->Prefill(id).outcome == PrefillOutcome::kFresh);
}

TEST_CASE("hostile image ids and reserved volume names are refused") {
  Env env;
  auto cache = env.Open();
  for (const std::string& bad : std::vector<std::string>{
           "", "../etc/passwd", "a/b", "a;rm -rf", "-rf", ".hidden", "a b", std::string("a\0b", 3),
           "\xc3\xa9t\xc3\xa9", std::string(129, 'a'), "a@snap", "$(id)"}) {
    CAPTURE(bad);
    try {
      cache->CreateVolume({.image_id = bad, .volume = "v"});
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::kInvalidArgument);
    }
  }
  auto id = env.AddImage();
  for (const std::string& bad :
       std::vector<std::string>{"../x", "staging-x", std::string(40, 'a'), ""}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(([&] { cache->CreateVolume({.image_id = id, .volume = bad}); }()), Error);
  }
}

TEST_CASE("eviction: limits hold after every insert, LRU order") {
  Env env;
  env.options.cache.max_count = 2;
  env.options.cache.max_size_gb = 20.0 / 1024;  // 20 MiB
  auto engine = OpenDrivenEngine(env.options);
  auto& cache = engine.cache;
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(env.AddImage(8 * kMiB, i + 1));
  auto live = [&] {
    std::set<std::string> s;
    uint64_t bytes = 0;
    for (auto& e : cache->List()) {
      if (!e.pinned && e.state == EntryState::kReady) {
        s.insert(e.image_id);
        bytes += e.virtual_size;
      }
    }
    CHECK(bytes <= 20 * kMiB);
    return s;
  };
  // No volumes kept, so nothing is pinned: each eviction removes.
  auto use = [&](const std::string& id, const std::string& vol) {
    cache->CreateVolume({.image_id = id, .volume = vol});
    cache->DeleteVolume(vol);
    engine.clock->Advance(std::chrono::seconds(1));  // last_used is in seconds
  };
  use(ids[0], "a");
  use(ids[1], "b");
  CHECK(live() == std::set<std::string>{ids[0], ids[1]});
  use(ids[0], "a2");  // ids[0] is now the most recently used
  use(ids[2], "c");
  CHECK(live() == std::set<std::string>{ids[0], ids[2]});  // ids[1] was the LRU one
  use(ids[3], "d");
  CHECK(live() == std::set<std::string>{ids[2], ids[3]});
  use(ids[4], "e");
  CHECK(live().size() == 2);
  CHECK(cache->GetStats().evictions == 3);
  CHECK(env.backend->ListTrash().empty());
  // Only the two live entries remain on the backend.
  uint64_t objects = 0;
  for (auto& n : env.EntryObjects()) objects += n.size() == 40;
  CHECK(objects == 2);
}

TEST_CASE("eviction defers an entry with clones; the clones keep their data") {
  Env env;
  auto a = env.AddImage(8 * kMiB, 1);
  auto b = env.AddImage(8 * kMiB, 2);
  auto clock = std::make_shared<FakeClock>();
  {
    auto cache = OpenDrivenEngine(env.options, clock).cache;
    cache->CreateVolume({.image_id = a, .volume = "a1"});
    cache->CreateVolume({.image_id = a, .volume = "a2"});
  }
  clock->Advance(std::chrono::seconds(1));
  env.options.cache.max_count = 1;
  auto cache = OpenDrivenEngine(env.options, clock).cache;
  cache->CreateVolume({.image_id = b, .volume = "b1"});  // evicts a, which has 2 clones
  CHECK_FALSE(cache->Lookup(a));
  auto stats = cache->GetStats();
  CHECK(stats.entries == 1);
  CHECK(stats.pinned_bytes == 8 * kMiB);
  CHECK(env.SameData("a1", a));
  CHECK(env.SameData("a2", a));

  auto report = cache->RunEvictionPass({});
  CHECK(report.pinned_bytes == 8 * kMiB);  // still cloned
  CHECK(env.SameData("a1", a));
  cache->DeleteVolume("a1");
  cache->DeleteVolume("a2");
  report = cache->RunEvictionPass({});
  CHECK(report.pinned_bytes == 0);
  bool purged = false;
  for (auto& act : report.actions) purged = purged || (act.kind == "purge" && act.done);
  CHECK(purged);
  CHECK(env.backend->ListTrash().empty());
  // a can be cached again.
  CHECK(cache->CreateVolume({.image_id = a, .volume = "a3"}).plan == Plan::kMiss);
}

TEST_CASE("single flight: 16 threads ask for one cold image, it is fetched once") {
  Env env;
  auto id = env.AddImage(32 * kMiB);
  auto cache = env.Open();
  std::vector<std::thread> threads;
  std::vector<Plan> plans(16);
  std::vector<std::string> errors(16);
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      try {
        plans[i] = cache->CreateVolume({.image_id = id, .volume = "t" + std::to_string(i)}).plan;
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  int misses = 0;
  for (int i = 0; i < 16; ++i) {
    CHECK(errors[i] == "");
    misses += plans[i] == Plan::kMiss;
    CHECK(env.backend->Exists(env.Vol("t" + std::to_string(i))));
  }
  CHECK(misses == 1);
  CHECK(env.CountRows("SELECT count(*) FROM events WHERE kind = 'miss'") == 1);
}

TEST_CASE("single flight: 16 threads in each of 4 processes, one download") {
  Env env;
  auto id = env.AddImage(32 * kMiB);
  std::vector<pid_t> pids;
  for (int p = 0; p < 4; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      std::string prefix = "p" + std::to_string(p);
      std::vector<std::string> args = {env.ChildPath(),
                                       kRbd ? "rbd" : "local",
                                       env.dir.path().string(),
                                       env.ns.empty() ? "-" : env.ns,
                                       "0",
                                       "flight:" + id + ":16:" + prefix};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK(env.CountRows("SELECT count(*) FROM events WHERE kind = 'miss'") == 1);
  CHECK(env.CountRows("SELECT count(*) FROM volumes") == 64);
  int present = 0;
  for (int p = 0; p < 4; ++p) {
    for (int t = 0; t < 16; ++t) {
      present += env.backend->Exists(env.Vol("p" + std::to_string(p) + "-" + std::to_string(t)));
    }
  }
  CHECK(present == 64);
}

TEST_CASE("crash at every failpoint, then gc leaves nothing half-made") {
  std::vector<std::string_view> all(engine::kFillFailpoints.begin(), engine::kFillFailpoints.end());
  all.insert(all.end(), engine::kEvictFailpoints.begin(), engine::kEvictFailpoints.end());
  for (auto fp : all) {
    CAPTURE(fp);
    Env env;
    auto a = env.AddImage(4 * kMiB, 1);
    auto b = env.AddImage(4 * kMiB, 2);
    auto c = env.AddImage(4 * kMiB, 3);
    // a is filled and evicted without clones, b is evicted with one: every step of the
    // fill and of both kinds of eviction is reached.
    int status = env.RunChild(
        {"create:" + a + ":va", "delete:va", "create:" + b + ":vb", "create:" + c + ":vc"},
        std::string(fp), 1);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);

    // No waiting for the RADOS lease: the dead child was on this host, so the next lock
    // attempt breaks its lock (and its flocks went with it).
    env.options.cache.max_count = 1;
    auto cache = env.Open();
    cache->RunEvictionPass({});
    for (const auto& name : env.EntryObjects()) {
      CAPTURE(name);
      CHECK_FALSE(name.starts_with("staging-"));
    }
    for (const auto& t : env.backend->ListTrash()) CHECK(t.has_children);
    CHECK(env.CountRows("SELECT count(*) FROM entries WHERE state != 'ready' AND pinned = 0") == 0);
    // Every entry-named object is known to the index.
    for (const auto& name : env.EntryObjects()) {
      if (name.size() != 40) continue;
      CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned = 0 AND cache_name = '" +
                          name + "'") == 1);
    }
    for (const auto& id : {a, b, c}) {
      auto r = cache->CreateVolume({.image_id = id, .volume = "after-" + id});
      CHECK(env.SameData("after-" + id, id));
    }
  }
}

TEST_CASE("rebuild-index restores every ready entry from the backend") {
  Env env;
  std::vector<std::string> ids = {env.AddImage(4 * kMiB, 1), env.AddImage(4 * kMiB, 2),
                                  env.AddImage(4 * kMiB, 3)};
  {
    auto cache = env.Open();
    for (auto& id : ids) cache->Prefill(id);
  }
  for (auto suffix : {"", "-wal", "-shm"}) std::filesystem::remove(env.options.index + suffix);
  auto cache = env.Open();
  CHECK(cache->List().empty());
  auto report = cache->RebuildIndex();
  CHECK(report.entries_found == 3);
  CHECK(report.entries_restored == 3);
  for (auto& id : ids) {
    auto e = cache->Lookup(id);
    REQUIRE(e);
    CHECK(e->state == EntryState::kReady);
    auto r = cache->CreateVolume({.image_id = id, .volume = "r-" + id});
    CHECK(r.plan == Plan::kClone);
    CHECK(env.SameData("r-" + id, id));
  }
  CHECK(cache->RebuildIndex().entries_restored == 0);
}

TEST_CASE("prefill, doctor, eviction dry run") {
  Env env;
  auto id = env.AddImage();
  auto cache = env.Open();
  CHECK(cache->Prefill(id).outcome == PrefillOutcome::kFilled);
  CHECK(cache->Prefill(id).outcome == PrefillOutcome::kFresh);
  CHECK(cache->SourceImages() == std::vector<std::string>{id});
  std::filesystem::remove(env.Image(id));  // gone from the source
  auto dry = cache->RunEvictionPass({.dry_run = true});
  REQUIRE(dry.actions.size() == 1);
  CHECK(dry.actions[0].kind == "gone");
  CHECK_FALSE(dry.actions[0].done);
  CHECK(cache->Lookup(id));
  auto report = cache->RunEvictionPass({});
  CHECK_FALSE(cache->Lookup(id));
  CHECK(report.entries_after == 0);
  for (auto& check : cache->Doctor()) {
    CAPTURE(check.name);
    CAPTURE(check.detail);
    CHECK(check.ok);
  }
}

TEST_CASE("untrusted files: a symlink or a truncated image never becomes an entry") {
  Env env;
  const auto secret = env.dir / "secret";
  WriteRawImage(secret, 4 * kMiB, 4 * kMiB, 9);
  std::filesystem::permissions(
      secret, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const std::string link = Unique("link");
  std::filesystem::create_symlink(secret, env.Image(link));
  // A qcow2 cut in its data, with no sidecar: the source has no checksum but its own.
  const std::string cut = Unique("cut");
  const auto whole = env.dir / "whole.qcow2";
  RunCommand({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", env.Image(env.AddImage()).string(),
              whole.string()});
  std::filesystem::copy_file(whole, env.Image(cut));
  std::filesystem::resize_file(env.Image(cut), std::filesystem::file_size(whole) * 2 / 3);

  auto cache = env.Open();
  auto fails = [&](const std::string& id, Errc code) {
    CAPTURE(id);
    try {
      cache->CreateVolume({.image_id = id, .volume = "vol-" + id});
      FAIL("created");
    } catch (const Error& e) {
      CHECK_MESSAGE(e.code() == code, e.what());
      CHECK_MESSAGE(std::string(e.what()).find(id) != std::string::npos, e.what());
    }
    CHECK_FALSE(cache->Lookup(id));
  };
  fails(link, Errc::kRefused);
  fails(cut, Errc::kCorrupt);
  CHECK(env.EntryObjects().empty());
  CHECK((std::filesystem::status(secret).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
}

TEST_CASE("a dead fill's working dir: counted, listed by doctor, removed by the pass") {
  Env env;
  const std::filesystem::path conv = env.options.conversion.dir;
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    fetch::WorkDir w(conv, "img", nullptr);
    _exit(0);  // as after kill -9: the directory stays, the lock goes
  }
  waitpid(pid, nullptr, 0);
  auto cache = env.Open();
  CHECK(cache->GetStats().dead_work_dirs == 1);
  bool listed = false;
  for (auto& check : cache->Doctor()) {
    if (check.name == "work dirs")
      listed = !check.ok && check.detail.find(conv.string()) != std::string::npos;
  }
  CHECK(listed);
  auto report = cache->RunEvictionPass({});
  bool swept = false;
  for (const auto& a : report.actions)
    swept = swept ||
            (a.kind == "gc" && a.done && a.name.find(fetch::kWorkDirPrefix) != std::string::npos);
  CHECK(swept);
  CHECK(cache->GetStats().dead_work_dirs == 0);
  CHECK(std::filesystem::is_empty(conv));
}

TEST_CASE("a directory the cache did not make in conversion.dir: not a dead fill, never removed") {
  Env env;
  const std::filesystem::path conv = env.options.conversion.dir;
  const std::filesystem::path mine = conv / (std::string(fetch::kWorkDirPrefix) + "MYDATA");
  std::filesystem::create_directories(mine);
  { std::ofstream(mine / "notes.txt") << "precious"; }
  std::filesystem::last_write_time(
      mine, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  auto cache = env.Open();
  CHECK(cache->GetStats().dead_work_dirs == 0);
  for (auto& check : cache->Doctor()) {
    if (check.name != "work dirs") continue;
    CHECK_MESSAGE(check.ok, check.detail);  // not listed as a dead fill
    CHECK_MESSAGE(check.detail.find("left alone " + mine.string()) != std::string::npos,
                  check.detail);
  }
  auto report = cache->RunEvictionPass({});
  bool left = false;
  for (const auto& a : report.actions) {
    CHECK_FALSE((a.kind == "gc" && a.name == mine.string()));
    left = left || (a.kind == "left alone" && a.name == mine.string());
  }
  CHECK(left);
  CHECK(std::filesystem::exists(mine / "notes.txt"));
}

TEST_CASE("a hard-linked base whose source changed is refused, reported and replaced") {
  if (kRbd) return;  // hard links are the local backend's alone
  Env env;
  env.options.backend.local.hardlink_prefill = true;
  env.options.backend.local.mode = 0644;
  auto id = env.AddImage();
  std::filesystem::permissions(env.Image(id), static_cast<std::filesystem::perms>(0644));
  // The store says what the image is (its digest does not follow the file's bytes).
  {
    std::ofstream sidecar(env.Image(id + ".json"));
    sidecar << R"({"disk_format": "raw", "checksum": ")"
            << Md5OfFile(env.Image(id), std::filesystem::file_size(env.Image(id))) << R"("})";
  }
  auto cache = env.Open();
  CHECK(cache->CreateVolume({.image_id = id, .volume = "vol-a"}).plan == Plan::kMiss);
  auto rewrite = [&](const std::string& text) {  // in place, same size
    std::fstream f(env.Image(id), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    f << text;
  };
  const std::string before = [&] {
    std::ifstream f(env.Image(id), std::ios::binary);
    f.seekg(4096);
    std::string s(25, '\0');
    f.read(s.data(), 25);
    return s;
  }();
  rewrite("rewritten under the cache");
  try {
    cache->CreateVolume({.image_id = id, .volume = "vol-b"});
    FAIL("a hit on a changed shared inode");
  } catch (const Error& e) {
    CHECK_MESSAGE(e.code() == Errc::kCorrupt, e.what());
    CHECK_MESSAGE(std::string(e.what()).find(cache->Lookup(id)->cache_name) != std::string::npos,
                  e.what());
    CHECK_MESSAGE(std::string(e.what()).find("image " + id) != std::string::npos, e.what());
  }
  bool listed = false;
  for (auto& check : cache->Doctor()) {
    if (check.name == "entries") listed = !check.ok;
  }
  CHECK(listed);
  auto report = cache->RunEvictionPass({});
  bool reported = false;
  // Evicted ("stale"), or deferred while vol-a still uses it: either way named.
  for (const auto& a : report.actions) {
    reported = reported || (a.image_id == id && (a.kind == "stale" || a.kind == "defer") &&
                            a.reason.find("changed since it was adopted") != std::string::npos);
  }
  CHECK(reported);
  // Fetched again once the store holds what its sidecar says.
  rewrite(before);
  CHECK(cache->CreateVolume({.image_id = id, .volume = "vol-c"}).plan == Plan::kMiss);
  CHECK(env.SameData("vol-c", id));
}
