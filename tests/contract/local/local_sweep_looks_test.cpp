// The sweep of temporaries passes over a folder it found clean while the folder's stamp
// is the one it found then (Backend::SweepTemporaries, `looks`), and lists it again once
// anything was made or removed there, or when the stamp given is not that one.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "contract/local/local_test_util.h"
#include "storage/local/local_backend.h"
#include "storage/local/local_files.h"

namespace cachemgr::test {
namespace {

// Folder times give a stamp only once older than 2 s (whole seconds).
void Settle() { std::this_thread::sleep_for(std::chrono::milliseconds(3100)); }

bool Found(const std::vector<storage::Leftover>& found, const fs::path& path) {
  for (const auto& l : found)
    if (fs::path(l.path) == path) return true;
  return false;
}

TEST_CASE("a sweep passes over folders found clean while their stamps hold, and no longer") {
  TempDir dir("local-sweep-looks");
  const fs::path root = dir.path() / "root";
  auto b = MakeLocal(root);
  const fs::path raw = dir.path() / "a.raw";
  WriteFile(raw, std::string(kMiB, 'a'));
  Import(*b, raw, {"_base", kBaseName});
  b->WriteTable("uses", {{"k", "1 host"}}, {});
  Settle();

  storage::SweepLooks looks;
  CHECK(b->SweepTemporaries(false, &looks).empty());
  // The folders that hold many names: the pool, its sidecars, the table.
  for (const std::string key : {"_base", "_base/.meta", ".state/uses"}) {
    CAPTURE(key);
    REQUIRE(looks.count(key) == 1);
    CHECK_FALSE(looks.at(key).empty());
  }
  const storage::SweepLooks clean = looks;
  storage::SweepLooks again = clean;
  CHECK(b->SweepTemporaries(false, &again).empty());
  CHECK(again == clean);  // passed over, and kept as clean

  // Dead writers' temporaries in each of those folders, then the folders settled.
  const fs::path dead[] = {root / "_base" / ".tmp-img-XXdead", root / "_base" / ".meta" / ".tmp-s-XXdead",
                           root / ".state" / "uses" / ".tmp-k-XXdead"};
  for (const auto& p : dead) WriteFile(p, "d");
  Settle();

  SUBCASE("stamps given as they are now: passed over, nothing found") {
    storage::SweepLooks forged{
        {"_base", storage::SettledFolderStamp(root / "_base")},
        {"_base/.meta", storage::SettledFolderStamp(root / "_base") + "/" +
                            storage::SettledFolderStamp(root / "_base" / ".meta")},
        {".state/uses", storage::SettledFolderStamp(root / ".state" / "uses")}};
    for (const auto& [key, stamp] : forged) REQUIRE_FALSE(stamp.empty());
    CHECK(b->SweepTemporaries(false, &forged).empty());
    for (const auto& p : dead) CHECK(fs::exists(p));
  }
  SUBCASE("the stamps found clean before: every folder changed since, each listed again") {
    storage::SweepLooks old = clean;
    auto found = b->SweepTemporaries(true, &old);
    for (const auto& p : dead) CHECK(Found(found, p));
    for (const auto& p : dead) CHECK(fs::exists(p));  // a dry run
    // Not clean while the temporaries are there.
    CHECK(old.count("_base") == 0);
    CHECK(old.count("_base/.meta") == 0);
    CHECK(old.count(".state/uses") == 0);
    old = clean;
    found = b->SweepTemporaries(false, &old);
    for (const auto& p : dead) CHECK(Found(found, p));
    for (const auto& p : dead) CHECK_FALSE(fs::exists(p));
  }
  SUBCASE("no stamps: everything listed") {
    const auto found = b->SweepTemporaries(false);
    for (const auto& p : dead) CHECK(Found(found, p));
  }
}

TEST_CASE("a folder holding a live writer's temporary, or a sidecar without its image, is "
          "never recorded clean") {
  TempDir dir("local-sweep-looks-live");
  const fs::path root = dir.path() / "root";
  auto b = MakeLocal(root);
  const fs::path raw = dir.path() / "a.raw";
  WriteFile(raw, std::string(kMiB, 'a'));
  Import(*b, raw, {"_base", kBaseName});
  // A writer still making its image: its temporary is locked.
  auto writer = b->Create({"volumes", "being-made"}, kMiB);
  // A sidecar whose image is on its way (its lock held): not swept, and not clean.
  const fs::path meta = root / "_base" / ".meta";
  const std::string on_its_way = "b94a8fe5ccb19ba61c4c0873d391e987982fbbd3";
  fs::copy_file(meta / (kBaseName + ".json"), meta / (on_its_way + ".json"));
  const int held = ::open((meta / (on_its_way + ".json")).c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX | LOCK_NB) == 0);
  // A table being written: its temporary is locked.
  b->WriteTable("uses", {{"k", "1 host"}}, {});
  auto [table_temp, table_lock] = storage::MakeTemp(root / ".state" / "uses", "k");
  Settle();
  storage::SweepLooks looks;
  CHECK(b->SweepTemporaries(false, &looks).empty());
  CHECK(fs::exists(table_temp));
  CHECK(looks.count(".state/uses") == 0);
  CHECK(looks.count("volumes") == 0);
  CHECK(looks.count("_base/.meta") == 0);
  CHECK(looks.count("_base") == 1);  // no temporary in the pool folder itself
  ::close(held);
  writer.reset();  // its temporary removed with it
}

}  // namespace
}  // namespace cachemgr::test
