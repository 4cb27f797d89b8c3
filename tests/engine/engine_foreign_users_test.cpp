// Local backend: disks other tools made on the cache's files (a Nova-style qcow2 overlay
// naming an entry's or a staging image's path). They are no clones of the entry's
// snapshot, yet they read the file: a removal moves it to the trash for them, and the
// cache records that trash folder as its own, so a pass purges it once they are gone.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <filesystem>
#include <string>

#include "cachemgr/cache.h"
#include "engine/naming.h"
#include "engine_fixture.h"
#include "storage/local/local_backend.h"

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;

// A disk like Nova's: a qcow2 overlay with no sidecar, naming `base` by its path.
fs::path ForeignDisk(const Env& env, const fs::path& base, const std::string& name) {
  auto& local = dynamic_cast<storage::LocalBackend&>(*env.backend);
  const fs::path disk = local.PathOf(env.Vol(name));
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.string(),
                      disk.string()}) == 0);
  return disk;
}

// The image cached, with no clone of the cache's own left; the path of its entry's file.
fs::path CachedWithoutClones(const Env& env, const std::string& image_id) {
  auto cache = env.Open();
  cache->CreateVolume({.image_id = image_id, .volume = "made-" + image_id});
  cache->DeleteVolume("made-" + image_id);
  return dynamic_cast<storage::LocalBackend&>(*env.backend)
      .PathOf({env.backend->entry_pool(), engine::EntryName(image_id)});
}

bool ReadsImage(const Env& env, const fs::path& disk, const std::string& image_id) {
  return RunCommand({"qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", disk.string(),
                     env.Image(image_id).string()}) == 0;
}

bool Purged(const EvictReport& report) {
  for (const auto& a : report.actions)
    if (a.kind == "purge" && a.done) return true;
  return false;
}

TEST_CASE("an evicted entry only a disk another tool made reads waits in the trash, recorded, "
          "and is purged once the disk is gone") {
  Env env;
  const auto a = env.AddImage(8 * kMiB, 1);
  const auto b = env.AddImage(8 * kMiB, 2);
  const fs::path disk = ForeignDisk(env, CachedWithoutClones(env, a), "inst-1");

  env.options.cache.max_count = 1;
  auto cache = env.Open();
  cache->CreateVolume({.image_id = b, .volume = "b1"});  // evicts a
  CHECK_FALSE(cache->Lookup(a));
  CHECK(ReadsImage(env, disk, a));
  // Recorded as the cache's: a deferred entry, in the trash, counted as pinned.
  const auto trash = env.backend->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK(trash[0].has_children);
  CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned != 0") == 1);
  CHECK(cache->GetStats().pinned_bytes == 8 * kMiB);

  auto report = cache->RunEvictionPass({});
  CHECK_FALSE(Purged(report));  // still read
  CHECK(env.backend->ListTrash().size() == 1);
  CHECK(ReadsImage(env, disk, a));

  fs::remove(disk);
  report = cache->RunEvictionPass({});
  CHECK(Purged(report));
  CHECK(env.backend->ListTrash().empty());
  CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned != 0") == 0);
  CHECK(cache->GetStats().pinned_bytes == 0);
  CHECK(cache->CreateVolume({.image_id = a, .volume = "a2"}).plan == Plan::kMiss);
  CHECK(env.SameData("a2", a));
}

TEST_CASE("a dead fill's staging image a disk another tool made reads waits in the trash, "
          "recorded, and is purged once the disk is gone") {
  Env env;
  auto& local = dynamic_cast<storage::LocalBackend&>(*env.backend);
  const auto a = env.AddImage(8 * kMiB, 3);
  const int status = env.RunChild({"create:" + a + ":va"}, "after_fetch");
  REQUIRE(WIFSIGNALED(status));
  std::string staging;
  for (const auto& name : env.EntryObjects())
    if (name.starts_with("staging-")) staging = name;
  REQUIRE_FALSE(staging.empty());
  const fs::path disk =
      ForeignDisk(env, local.PathOf({env.backend->entry_pool(), staging}), "inst-2");

  auto cache = env.Open();
  auto report = cache->RunEvictionPass({});
  for (const auto& name : env.EntryObjects()) CHECK_FALSE(name.starts_with("staging-"));
  CHECK(ReadsImage(env, disk, a));
  REQUIRE(env.backend->ListTrash().size() == 1);
  CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned != 0") == 1);
  CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned = 0") == 0);
  CHECK_FALSE(cache->Lookup(a));

  report = cache->RunEvictionPass({});  // kept, and not taken for a dead fill again
  CHECK(env.backend->ListTrash().size() == 1);
  CHECK(ReadsImage(env, disk, a));

  fs::remove(disk);
  report = cache->RunEvictionPass({});
  CHECK(Purged(report));
  CHECK(env.backend->ListTrash().empty());
  CHECK(env.CountRows("SELECT count(*) FROM entries") == 0);
  CHECK(cache->CreateVolume({.image_id = a, .volume = "a1"}).plan == Plan::kMiss);
  CHECK(env.SameData("a1", a));
}

TEST_CASE("an eviction killed right after its move to the trash: the next pass records the "
          "object there and purges it once nothing reads it") {
  for (const bool disk_stays : {false, true}) {
    CAPTURE(disk_stays);
    Env env;
    const auto a = env.AddImage(8 * kMiB, 4);
    const auto b = env.AddImage(8 * kMiB, 5);
    const fs::path disk = ForeignDisk(env, CachedWithoutClones(env, a), "inst-3");
    // b's miss evicts a, whose file the disk reads: moved to the trash, then killed.
    const int status = env.RunChild({"create:" + b + ":b1"}, "after_remove_image", 1);
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(env.backend->ListTrash().size() == 1);
    if (!disk_stays) fs::remove(disk);

    env.options.cache.max_count = 1;
    auto cache = env.Open();
    cache->RunEvictionPass({});
    if (disk_stays) {
      CHECK(ReadsImage(env, disk, a));
      CHECK(env.backend->ListTrash().size() == 1);
      CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned != 0") == 1);
      fs::remove(disk);
      cache->RunEvictionPass({});
    }
    CHECK(env.backend->ListTrash().empty());
    CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned != 0") == 0);
    CHECK(cache->GetStats().pinned_bytes == 0);
  }
}

TEST_CASE("a dead fill's staging image whose removal was killed after its move to the trash is "
          "recorded by the next pass and purged once nothing reads it") {
  Env env;
  auto& local = dynamic_cast<storage::LocalBackend&>(*env.backend);
  const auto a = env.AddImage(8 * kMiB, 6);
  REQUIRE(WIFSIGNALED(env.RunChild({"create:" + a + ":va"}, "after_fetch")));
  std::string staging;
  for (const auto& name : env.EntryObjects())
    if (name.starts_with("staging-")) staging = name;
  REQUIRE_FALSE(staging.empty());
  const fs::path disk =
      ForeignDisk(env, local.PathOf({env.backend->entry_pool(), staging}), "inst-4");
  REQUIRE(WIFSIGNALED(env.RunChild({"pass"}, "after_remove_image")));
  REQUIRE(env.backend->ListTrash().size() == 1);

  auto cache = env.Open();
  cache->RunEvictionPass({});
  CHECK(ReadsImage(env, disk, a));
  CHECK(env.backend->ListTrash().size() == 1);
  CHECK(env.CountRows("SELECT count(*) FROM entries WHERE pinned != 0") == 1);
  fs::remove(disk);
  cache->RunEvictionPass({});
  CHECK(env.backend->ListTrash().empty());
  CHECK(env.CountRows("SELECT count(*) FROM entries") == 0);
}

TEST_CASE("an eviction refused because the scan cannot read a path leaves the entry ready; "
          "once the path is gone the next pass evicts it") {
  Env env;
  auto& local = dynamic_cast<storage::LocalBackend&>(*env.backend);
  const auto a = env.AddImage(8 * kMiB, 7);
  const auto b = env.AddImage(8 * kMiB, 8);
  CachedWithoutClones(env, a);
  // A folder deeper than the scan walks: what is below it is unknown.
  const fs::path top = local.PathOf(env.Vol("x")).parent_path() / "deep";
  fs::path deep = top;
  for (int i = 0; i < 20; ++i) deep /= "d";
  fs::create_directories(deep);

  env.options.cache.max_count = 1;
  auto cache = env.Open();
  cache->CreateVolume({.image_id = b, .volume = "b1"});  // a's eviction is refused
  auto info = cache->Lookup(a);
  REQUIRE(info);
  CHECK(info->state == EntryState::kReady);
  CHECK(cache->CreateVolume({.image_id = a, .volume = "a2"}).plan == Plan::kClone);
  CHECK(env.SameData("a2", a));
  CHECK_THROWS_AS(cache->RunEvictionPass({}), Error);
  CHECK(cache->Lookup(a));
  CHECK(cache->Lookup(a)->state == EntryState::kReady);
  auto readers = [&] {
    for (const auto& check : cache->Doctor())
      if (check.name == "readers") return check;
    FAIL("doctor has no readers check");
    return Check{};
  };
  CHECK_FALSE(readers().ok);
  CHECK(readers().detail.find("/deep/d/d/d") != std::string::npos);

  fs::remove_all(top);
  CHECK(readers().ok);
  cache->DeleteVolume("a2");
  cache->RunEvictionPass({});
  CHECK(cache->GetStats().entries == 1);
  CHECK(env.CountRows("SELECT count(*) FROM entries WHERE state != 'ready'") == 0);
}

}  // namespace
}  // namespace cachemgr::test
