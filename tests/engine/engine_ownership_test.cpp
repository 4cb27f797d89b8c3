// Ownership is recorded, not guessed from names: the engine changes or removes only the
// objects it made (their mark and identity match its rows), on one backend: local (no
// fixture) or RBD (built with ENGINE_RBD, FIXTURES ceph).
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "engine/naming.h"
#include "engine_fixture.h"
#include "support/cluster.h"

using namespace cachemgr;
using namespace cachemgr::test;

namespace {

// Everything a user would notice about an object: its bytes, metadata, snapshots,
// clones and identity.
struct Snapshot {
  std::string md5;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> snapshots;
  std::vector<std::string> children;
  std::string identity;
  bool operator==(const Snapshot&) const = default;
};

Snapshot Observe(storage::Backend& b, const storage::ImageRef& ref) {
  Snapshot s;
  s.md5 = Md5OfImage(b, ref, b.Stat(ref).size);
  s.metadata = b.GetMetadata(ref);
  for (const auto& snap : b.ListSnapshots(ref)) {
    s.snapshots.push_back(snap.name + (snap.is_protected ? "+" : ""));
    for (const auto& child : b.Children({ref, snap.name})) s.children.push_back(child.name);
  }
  s.identity = b.Identity(ref);
  return s;
}

// An object made by someone else: `size` bytes of a pattern.
void MakeForeign(storage::Backend& b, const storage::ImageRef& ref, uint32_t seed,
                 uint64_t size = kMiB) {
  auto w = b.Create(ref, size);
  std::string data(size, '\0');
  for (uint64_t i = 0; i < size; i += 512) data[i] = static_cast<char>('a' + (seed + i) % 26);
  w->Append({reinterpret_cast<const std::byte*>(data.data()), data.size()});
  w->Finish();
}

Errc CodeOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  FAIL("did not throw");
  return Errc::kInternal;
}

// Half-made objects in the entry pool and the volume pool (one pool on RBD).
std::vector<std::string> StagingObjects(Env& env) {
  std::vector<std::string> out;
  for (const auto& pool : {env.backend->entry_pool(), env.backend->volume_pool()}) {
    for (const auto& name : env.backend->List(pool)) {
      if (name.starts_with("staging-")) out.push_back(name);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("create refuses a name someone else's object holds, and leaves it untouched") {
  Env env;
  auto id = env.AddImage(4 * kMiB, 1);
  auto& b = *env.backend;
  // A plain disk, one with metadata and a protected snapshot, one whose snapshot has a
  // clone (the clone is someone else's too).
  MakeForeign(b, env.Vol("plain"), 1);
  MakeForeign(b, env.Vol("meta-snap"), 2);
  b.SetMetadata(env.Vol("meta-snap"), "owner", "operator");
  b.CreateSnapshot({env.Vol("meta-snap"), "keep"});
  b.ProtectSnapshot({env.Vol("meta-snap"), "keep"});
  MakeForeign(b, env.Vol("parent"), 3);
  b.CreateSnapshot({env.Vol("parent"), "base"});
  b.ProtectSnapshot({env.Vol("parent"), "base"});
  b.Clone({env.Vol("parent"), "base"}, env.Vol("child"));
  auto cache = env.Open();
  cache->Prefill(id);  // the hit path: a clone would be made and renamed
  for (const std::string name : {"plain", "meta-snap", "parent", "child"}) {
    CAPTURE(name);
    auto before = Observe(b, env.Vol(name));
    CHECK(CodeOf([&] { cache->CreateVolume({.image_id = id, .volume = name}); }) ==
          Errc::kAlreadyExists);
    CHECK(Observe(b, env.Vol(name)) == before);
    CHECK(cache->Volumes("").empty());
  }
  // A miss too (the fill runs before the volume would be placed): refused before it, with
  // nothing downloaded and no entry made for it. (A clone of a ready entry is refused at
  // its rename instead, the clone undone: the cases above.)
  auto other = env.AddImage(4 * kMiB, 2);
  auto before = Observe(b, env.Vol("plain"));
  const int entries = env.CountRows("SELECT count(*) FROM entries");
  CHECK(CodeOf([&] { cache->CreateVolume({.image_id = other, .volume = "plain"}); }) ==
        Errc::kAlreadyExists);
  CHECK(Observe(b, env.Vol("plain")) == before);
  CHECK(env.CountRows("SELECT count(*) FROM entries") == entries);
  CHECK(StagingObjects(env).empty());
  CHECK(env.CountRows("SELECT count(*) FROM volumes") == 0);
  // The pass does not touch them either.
  cache->RunEvictionPass({});
  CHECK(Observe(b, env.Vol("plain")) == before);
}

TEST_CASE("a hit whose clone copies the image asks whether the name is free first") {
  // A clone of a ready entry may leave the taken name to its rename only where it is
  // cheap (Backend::CheapClone): in the local backend's copy mode the clone is a copy of
  // the whole image, so a taken name must be refused by the look before it.
  if (kRbd) return;
  Env env;
  env.options.backend.local.clone_mode = CloneMode::kCopy;
  auto id = env.AddImage(8 * kMiB, 4);
  auto& b = *env.backend;
  auto cache = env.Open();
  cache->Prefill(id);
  MakeForeign(b, env.Vol("taken"), 5);
  auto before = Observe(b, env.Vol("taken"));
  std::string error;
  try {
    cache->CreateVolume({.image_id = id, .volume = "taken"});
  } catch (const Error& e) {
    error = e.what();
    CHECK(e.code() == Errc::kAlreadyExists);
  }
  // The look's words (the rename's would say "nothing there is touched").
  CHECK(error.find("was not made by this cache") != std::string::npos);
  CHECK(Observe(b, env.Vol("taken")) == before);
  CHECK(StagingObjects(env).empty());
  // A free name is copied as ever.
  CHECK(cache->CreateVolume({.image_id = id, .volume = "free"}).plan == Plan::kClone);
  CHECK(env.SameData("free", id));
}

TEST_CASE("concurrent creates of one new name: exactly one winner, the losers change nothing") {
  Env env;
  auto id = env.AddImage(4 * kMiB, 1);
  env.Open()->Prefill(id);
  SUBCASE("processes sharing one index") {
    std::vector<pid_t> pids;
    std::vector<int> codes;
    std::vector<std::thread> runs;
    std::vector<int> statuses(3);
    for (int i = 0; i < 3; ++i) {
      runs.emplace_back([&, i] { statuses[i] = env.RunChild({"create:" + id + ":shared"}); });
    }
    for (auto& t : runs) t.join();
    int winners = 0;
    for (int s : statuses) {
      REQUIRE(WIFEXITED(s));
      CHECK((WEXITSTATUS(s) == 0 || WEXITSTATUS(s) == 1));
      winners += WEXITSTATUS(s) == 0;
    }
    CHECK(winners == 1);
  }
  SUBCASE("hosts with separate indexes on one backend") {
    std::vector<TempDir> dirs(3);
    std::vector<std::string> errors(3);
    std::vector<std::thread> runs;
    std::atomic<int> winners{0};
    for (int i = 0; i < 3; ++i) {
      runs.emplace_back([&, i] {
        auto options = env.options;
        options.index = (dirs[i] / "index.db").string();
        try {
          Cache::Open(options)->CreateVolume({.image_id = id, .volume = "shared"});
          winners++;
        } catch (const Error& e) {
          errors[i] = e.what();
          CHECK(e.code() == Errc::kAlreadyExists);
        }
      });
    }
    for (auto& t : runs) t.join();
    CHECK(winners == 1);
    // Only the winner's index records the volume: no loser left a row.
    int rows = 0;
    for (auto& d : dirs) {
      SQLite::Database db((d / "index.db").string(), SQLite::OPEN_READONLY);
      rows += db.execAndGet("SELECT count(*) FROM volumes").getInt();
    }
    CHECK(rows == 1);
  }
  CHECK(env.backend->Exists(env.Vol("shared")));
  CHECK(env.SameData("shared", id));
  CHECK(StagingObjects(env).empty());
}

TEST_CASE("the winner of concurrent creates is listed and its volume stays") {
  Env env;
  auto id = env.AddImage(4 * kMiB, 1);
  env.Open()->Prefill(id);
  std::vector<std::thread> runs;
  std::vector<int> statuses(3);
  for (int i = 0; i < 3; ++i) {
    runs.emplace_back([&, i] { statuses[i] = env.RunChild({"create:" + id + ":one"}); });
  }
  for (auto& t : runs) t.join();
  auto cache = env.Open();
  auto volumes = cache->Volumes(id);
  REQUIRE(volumes.size() == 1);
  CHECK(volumes[0].name == "one");
  CHECK(env.SameData("one", id));
  // The pass removes nothing of it.
  cache->RunEvictionPass({});
  CHECK(env.SameData("one", id));
  cache->DeleteVolume("one");
  CHECK_FALSE(env.backend->Exists(env.Vol("one")));
}

TEST_CASE("evict leaves alone objects that only look like the cache's") {
  Env env;
  auto id = env.AddImage(4 * kMiB, 1);
  auto cache = env.Open();
  cache->Prefill(id);
  auto& b = *env.backend;
  const auto entry = cache->Lookup(id)->cache_name;
  const auto entry_ref = storage::ImageRef{b.entry_pool(), entry};
  const std::string hex40 = "0123456789abcdef0123456789abcdef01234567";
  const std::string hex40b = "fedcba9876543210fedcba9876543210fedcba98";
  std::vector<storage::ImageRef> foreign = {
      {b.entry_pool(), hex40},                                       // entry-shaped
      {b.entry_pool(), "staging-" + hex40b + "-mine"},               // staging-shaped
      {b.entry_pool(), "staging-vol-0123456789abcdef"},              // volume staging-shaped
      {b.entry_pool(), "fedcba9876543210fedcba9876543210fedcba99"},  // copy of an entry
      {b.entry_pool(), "staging-" + hex40 + "-copy"},                // copy of an entry
  };
  MakeForeign(b, foreign[0], 1);
  b.CreateSnapshot({foreign[0], "cachemgr-base"});
  b.ProtectSnapshot({foreign[0], "cachemgr-base"});
  MakeForeign(b, foreign[1], 2);
  MakeForeign(b, foreign[2], 3);
  // Copies of the entry carry its metadata, mark and all (as `rbd cp` does), but are
  // other objects.
  for (size_t i = 3; i < foreign.size(); ++i) {
    b.Copy(storage::SnapRef{entry_ref, "cachemgr-base"}, foreign[i], {});
    for (const auto& [k, v] : b.GetMetadata(entry_ref)) b.SetMetadata(foreign[i], k, v);
    b.CreateSnapshot({foreign[i], "cachemgr-base"});
    b.ProtectSnapshot({foreign[i], "cachemgr-base"});
  }
  std::vector<Snapshot> before;
  for (const auto& ref : foreign) before.push_back(Observe(b, ref));
  auto report = cache->RunEvictionPass({});
  std::set<std::string> left_alone;
  for (const auto& a : report.actions) {
    if (a.kind == "left alone") left_alone.insert(a.name);
    CHECK(a.done);
  }
  for (size_t i = 0; i < foreign.size(); ++i) {
    CAPTURE(foreign[i].name);
    REQUIRE(b.Exists(foreign[i]));
    CHECK(Observe(b, foreign[i]) == before[i]);
    CHECK(left_alone.count(foreign[i].name) == 1);
  }
  // Not adopted either; stats counts them and doctor lists them.
  CHECK(cache->List().size() == 1);
  CHECK(cache->GetStats().left_alone == foreign.size());
  bool listed = false;
  for (const auto& c : cache->Doctor()) {
    if (c.name == "leftovers") listed = c.detail.find(hex40) != std::string::npos;
  }
  CHECK(listed);
  // The real entry is still evicted when over the limits.
  env.options.cache.max_count = 1;
  auto second = env.AddImage(4 * kMiB, 2);
  env.Open()->Prefill(second);
  CHECK_FALSE(env.Open()->Lookup(id));
  for (size_t i = 0; i < foreign.size(); ++i) CHECK(Observe(b, foreign[i]) == before[i]);
}

TEST_CASE("delete refuses an object made again under the volume's name") {
  Env env;
  auto id = env.AddImage(4 * kMiB, 1);
  auto cache = env.Open();
  auto& b = *env.backend;
  SUBCASE("a new object") {
    cache->CreateVolume({.image_id = id, .volume = "v"});
    b.Remove(env.Vol("v"));
    MakeForeign(b, env.Vol("v"), 7);
  }
  SUBCASE("a copy of the volume, metadata and all") {
    cache->CreateVolume({.image_id = id, .volume = "v"});
    cache->CreateVolume({.image_id = id, .volume = "w"});
    auto metadata = b.GetMetadata(env.Vol("w"));
    b.Remove(env.Vol("v"));
    b.Copy(env.Vol("w"), env.Vol("v"), {});
    for (const auto& [k, v] : metadata) b.SetMetadata(env.Vol("v"), k, v);
  }
  auto before = Observe(b, env.Vol("v"));
  CHECK(CodeOf([&] { cache->DeleteVolume("v"); }) == Errc::kAlreadyExists);
  REQUIRE(b.Exists(env.Vol("v")));
  CHECK(Observe(b, env.Vol("v")) == before);
  for (const auto& v : cache->Volumes("")) CHECK(v.name != "v");  // its record is dropped
  // A volume the cache made is deleted as before.
  cache->CreateVolume({.image_id = id, .volume = "mine"});
  cache->DeleteVolume("mine");
  CHECK_FALSE(b.Exists(env.Vol("mine")));
}

TEST_CASE("delete refuses a volume with snapshots the cache did not make") {
  Env env;
  auto id = env.AddImage(4 * kMiB, 1);
  auto cache = env.Open();
  auto& b = *env.backend;
  cache->CreateVolume({.image_id = id, .volume = "v"});
  b.CreateSnapshot({env.Vol("v"), "vm-backup"});
  auto before = Observe(b, env.Vol("v"));
  CHECK(CodeOf([&] { cache->DeleteVolume("v"); }) == Errc::kAlreadyExists);
  REQUIRE(b.Exists(env.Vol("v")));
  CHECK(Observe(b, env.Vol("v")) == before);
  // Once the operator removed the snapshot, the volume is deleted as usual.
  b.RemoveSnapshot({env.Vol("v"), "vm-backup"});
  cache->DeleteVolume("v");
  CHECK_FALSE(b.Exists(env.Vol("v")));
}

TEST_CASE("a hit never clones an object that took the entry's name; a lost entry is refilled") {
  Env env;
  auto id = env.AddImage(4 * kMiB, 1);
  auto cache = env.Open();
  auto& b = *env.backend;
  cache->CreateVolume({.image_id = id, .volume = "first"});
  auto entry = cache->Lookup(id);
  REQUIRE(entry);
  const storage::ImageRef ref{b.entry_pool(), entry->cache_name};
  const storage::SnapRef snap{ref, engine::kSnapName};
  const auto metadata = b.GetMetadata(ref);  // the mark included: a copy of ours
  cache->DeleteVolume("first");
  // Another host's pass took the entry away (no clones: removed outright).
  b.UnprotectSnapshot(snap);
  b.RemoveSnapshot(snap);
  b.Remove(ref);
  SUBCASE("lost: the next create fills it again, as a miss") {
    auto made = cache->CreateVolume({.image_id = id, .volume = "again"});
    CHECK(made.plan == Plan::kMiss);
    CHECK(env.SameData("again", id));
    CHECK(cache->Lookup(id));
  }
  SUBCASE("an object made by someone else under the entry's name is never cloned") {
    MakeForeign(b, ref, 9, 4 * kMiB);
    b.CreateSnapshot(snap);
    b.ProtectSnapshot(snap);
    for (const auto& [k, v] : metadata) b.SetMetadata(ref, k, v);
    auto before = Observe(b, ref);
    CHECK(CodeOf([&] { cache->CreateVolume({.image_id = id, .volume = "stolen"}); }) ==
          Errc::kAlreadyExists);
    CHECK_FALSE(b.Exists(env.Vol("stolen")));
    CHECK(Observe(b, ref) == before);
    CHECK(StagingObjects(env).empty());
  }
}

TEST_CASE("a create killed at any step leaves nothing after one pass") {
  for (auto fp : engine::kCreateFailpoints) {
    CAPTURE(fp);
    Env env;
    auto id = env.AddImage(4 * kMiB, 1);
    env.Open()->Prefill(id);
    int status = env.RunChild({"create:" + id + ":killed"}, std::string(fp));
    REQUIRE(WIFSIGNALED(status));
    auto cache = env.Open();
    // Counted until the pass removes it (volume_after_claim: the row alone).
    CHECK(cache->GetStats().half_made == 1);
    cache->RunEvictionPass({});
    CHECK(cache->GetStats().half_made == 0);
    CHECK(StagingObjects(env).empty());
    CHECK_FALSE(env.backend->Exists(env.Vol("killed")));
    CHECK(env.CountRows("SELECT count(*) FROM volumes") == 0);
    // The name is free again.
    cache->CreateVolume({.image_id = id, .volume = "killed"});
    CHECK(env.SameData("killed", id));
  }
}

// Ceph's encoding of a string: its length (32 bits, little-endian), then its bytes.
std::string CephString(const std::string& s) {
  std::string out;
  const auto n = static_cast<uint32_t>(s.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + s;
}

// The rados tool on the entry pool, in the test's namespace.
void RadosOnEntries(Env& env, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"rados", "--conf", CephConf().string(), "-p",
                                   env.backend->entry_pool(), "-N", env.ns};
  argv.insert(argv.end(), args.begin(), args.end());
  REQUIRE(RunCommand(argv) == 0);
}

TEST_CASE("a fill killed inside its rename leaves the entry's name free after one pass") {
  if (!kRbd) return;
  // A format-2 rename writes the new name's id object, rebinds the name in the pool's
  // directory, then removes the old id object: killed after either of the first two
  // steps, the entry's name is bound to the staging image as well.
  for (const bool rebound : {false, true}) {
    CAPTURE(rebound);
    Env env;
    auto id = env.AddImage(4 * kMiB, 1);
    const int status = env.RunChild({"create:" + id + ":first"}, "after_protect");
    REQUIRE(WIFSIGNALED(status));
    auto& b = *env.backend;
    std::vector<std::string> staging;
    for (const auto& name : b.List(b.entry_pool())) {
      if (name.starts_with("staging-")) staging.push_back(name);
    }
    REQUIRE(staging.size() == 1);
    const std::string staging_id = b.Identity({b.entry_pool(), staging[0]});
    const std::string entry = engine::EntryName(id);
    TempDir tmp("rename");
    WriteFile(tmp / "id", CephString(staging_id));
    WriteFile(tmp / "name", CephString(entry));
    RadosOnEntries(env, {"put", "rbd_id." + entry, (tmp / "id").string()});
    if (rebound) {
      RadosOnEntries(env, {"setomapval", "rbd_directory", "name_" + entry, "--input-file",
                           (tmp / "id").string()});
      RadosOnEntries(env, {"rmomapkey", "rbd_directory", "name_" + staging[0]});
      RadosOnEntries(env, {"setomapval", "rbd_directory", "id_" + staging_id, "--input-file",
                           (tmp / "name").string()});
    }
    auto cache = env.Open();
    cache->RunEvictionPass({});
    CHECK(StagingObjects(env).empty());
    CHECK(env.CountRows("SELECT count(*) FROM entries WHERE state != 'ready'") == 0);
    // The name is free again: the next create fills and renames into it.
    auto made = cache->CreateVolume({.image_id = id, .volume = "again"});
    CHECK(env.SameData("again", id));
    CHECK(cache->Lookup(id));
    if (!rebound) CHECK(made.plan == Plan::kMiss);
  }
}

TEST_CASE("lock files and objects do not pile up: fills, evictions and a pass") {
  Env env;
  env.options.cache.max_count = 2;
  auto cache = env.Open();
  for (int i = 0; i < 8; ++i) cache->Prefill(env.AddImage(kMiB, i + 1));
  cache->RunEvictionPass({});
  CHECK(cache->List().size() == 2);
  auto count_files = [](const std::filesystem::path& dir) {
    size_t n = 0;
    std::error_code ec;
    for (const auto& f : std::filesystem::directory_iterator(dir, ec)) {
      n += f.path().filename().string().size() >= 40;  // per-image locks, not the pass lock
    }
    return n;
  };
  // Two lock files per live entry at most (fill lock and use lock).
  CHECK(count_files(env.dir / "state" / "locks") <= 2 * 2);
  if (kRbd) {
    std::string out;
    REQUIRE(
        RunCommand({"rados", "--conf", CephConf().string(), "-p", "volumes", "-N",
                    env.ns + ".cachemgr-locks", "ls"},
                   &out) == 0);
    size_t locks = 0;
    for (size_t pos = 0; (pos = out.find("cachemgr.lock.", pos)) != std::string::npos; ++pos) {
      ++locks;
    }
    CHECK(locks <= 2);
  } else {
    CHECK(count_files(env.dir / "root" / ".locks") <= 2);
  }
}

TEST_CASE("a fill killed while it holds its locks leaves no lock once a pass ran; held ones stay") {
  Env env;
  auto cache = env.Open();
  auto& b = *env.backend;
  cache->Prefill(env.AddImage(kMiB, 1));  // a live entry: its locks may stay
  auto before = b.ListLocks();
  const std::set<std::string> live_keys(before.begin(), before.end());
  // A miss stopped with its image locks held (no row, no object yet), then kill -9.
  auto killed = env.AddImage(kMiB, 2);
  pid_t pid = env.StartChild({"create:" + killed + ":killed"},
                             std::string(engine::kFillLockedFailpoint) + ":sleep");
  std::string key;
  // Until the child holds the new image's lock: listed (its file or object made) and
  // refused (taken; a lock file exists a moment before its flock).
  auto held_by_child = [&] {
    try {
      (void)b.AcquireLock(key, std::chrono::milliseconds(0));  // released at once
      return false;
    } catch (const Error& e) {
      return e.code() == Errc::kBusy;
    }
  };
  WaitUntil(
      [&] {
        for (const auto& k : b.ListLocks()) {
          if (!live_keys.count(k)) key = k;
        }
        return !key.empty() && held_by_child();
      },
      std::chrono::seconds(30));
  REQUIRE_FALSE(key.empty());
  // Held by the child now: taking it without waiting is refused.
  CHECK(CodeOf([&] { b.AcquireLock(key, std::chrono::milliseconds(0)); }) == Errc::kBusy);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  // A concurrent holder's lock on a key no entry has: the pass must not take it.
  auto other = storage::MakeBackend(env.options.backend, nullptr);
  const std::string held_key(40, 'e');
  auto held = other->AcquireLock(held_key, std::chrono::seconds(5));

  cache->RunEvictionPass({});
  auto after = b.ListLocks();
  const std::set<std::string> left(after.begin(), after.end());
  CHECK_FALSE(left.count(key));
  CHECK(left.count(held_key));
  for (const auto& k : left) CHECK((k == held_key || live_keys.count(k)));
  CHECK(CodeOf([&] { b.AcquireLock(held_key, std::chrono::milliseconds(0)); }) == Errc::kBusy);
  // No engine lock file of the killed fill either.
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(env.dir / "state" / "locks", ec)) {
    CHECK_FALSE(f.path().filename().string().starts_with(key));
  }
  if (kRbd) {  // the lock objects live apart from the images, in a namespace of their own
    std::string out;
    REQUIRE(
        RunCommand({"rados", "--conf", CephConf().string(), "-p", "volumes", "-N", env.ns, "ls"},
                   &out) == 0);
    CHECK(out.find("cachemgr.lock.") == std::string::npos);
    REQUIRE(RunCommand({"rados", "--conf", CephConf().string(), "-p", "volumes", "-N",
                        env.ns + ".cachemgr-locks", "ls"},
                       &out) == 0);
    CHECK(out.find("cachemgr.lock." + key) == std::string::npos);
    CHECK(out.find("cachemgr.lock." + held_key) != std::string::npos);
  }
  // The image is cached normally afterwards.
  held.reset();
  cache->CreateVolume({.image_id = killed, .volume = "after"});
  CHECK(env.SameData("after", killed));
}

namespace {
// A client killed with `name` open for writing: its watch (and exclusive lock) stay on
// the image until the OSD times the watch out (30 s), as after a kill -9 mid-import.
void LeaveDeadWatcher(Env& env, const std::string& name) {
  std::string out;
  RunCommand({"timeout", "-s", "KILL", "3", "rbd", "--conf", CephConf().string(), "-p", "volumes",
              "--namespace", env.ns, "bench", "--io-type", "write", "--io-size", "4096",
              "--io-total", "1G", "--io-pattern", "rand", name},
             &out);
  std::string watchers;
  RunCommand({"rbd", "--conf", CephConf().string(), "status", "-p", "volumes", "--namespace",
              env.ns, name},
             &watchers);
  REQUIRE(watchers.find("watcher=") != std::string::npos);
}
}  // namespace

TEST_CASE("an entry renamed into place before its row went ready is adopted in one pass") {
  for (std::string fp : {"after_rename", "before_ready"}) {
    CAPTURE(fp);
    Env env;
    auto id = env.AddImage(4 * kMiB, 9);
    REQUIRE(WIFSIGNALED(env.RunChild({"create:" + id + ":v"}, fp)));
    std::string entry;
    for (const auto& name : env.EntryObjects()) {
      if (name.size() == 40) entry = name;  // the entry's name (sha1 of the image id)
    }
    REQUIRE_FALSE(entry.empty());
    REQUIRE(env.CountRows("SELECT count(*) FROM entries WHERE cache_name = '" + entry + "'") == 0);
    if (kRbd) LeaveDeadWatcher(env, entry);
    auto cache = env.Open();
    cache->RunEvictionPass({});
    CHECK(env.CountRows("SELECT count(*) FROM entries WHERE state = 'ready' AND cache_name = '" +
                        entry + "'") == 1);
    CHECK(env.CountRows("SELECT count(*) FROM entries WHERE state != 'ready'") == 0);
    cache->CreateVolume({.image_id = id, .volume = "v"});
    CHECK(env.SameData("v", id));
  }
}
