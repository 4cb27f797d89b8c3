// Disks other tools made on a base, wherever under a pool's folder they sit and however
// their header names it: each keeps the base (moved to the trash for it, never unlinked
// under it), and a move to the trash a kill cut short is finished, never left behind.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cachemgr/error.h"
#include "contract/local/local_test_util.h"
#include "storage/local/local_backend.h"

namespace cachemgr::test {
namespace {

TEST_CASE("a disk another tool made keeps its base: dot-named, in folders below a pool, and "
          "named with file: or json:") {
  TempDir dir("local-foreign-disks");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 31);
  auto b = MakeLocal(dir.path() / "root");
  const fs::path pool_dir = b->PathOf({b->volume_pool(), "x"}).parent_path();
  struct Way {
    std::string what;
    fs::path disk;
    std::string backing;  // {} for the base's path
  };
  const std::vector<Way> ways{
      {"dot-named", pool_dir / ".instance-disk", "{}"},
      {"one folder below", pool_dir / "inst-1" / "disk", "{}"},
      {"three folders below", pool_dir / "a" / "b" / "c" / "disk", "{}"},
      {"file: prefix", pool_dir / "inst-2" / "disk", "file:{}"},
      {"json: nested file", pool_dir / "inst-3" / "disk",
       R"(json:{"driver": "raw", "file": {"driver": "file", "filename": "{}"}})"},
      {"json: flat filename", pool_dir / "inst-4" / "disk", R"(json:{"file.filename": "{}"})"}};
  for (const auto& way : ways) {
    CAPTURE(way.what);
    ImageRef base{b->entry_pool(), kBaseName};
    Import(*b, src, base);
    fs::create_directories(way.disk.parent_path());
    REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        b->PathOf(base).string(), way.disk.string()}) == 0);
    std::string name = way.backing;
    name.replace(name.find("{}"), 2, b->PathOf(base).string());
    // -u: the header only, with the name as another tool would write it.
    REQUIRE(RunCommand({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", name,
                        way.disk.string()}) == 0);
    CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
    CHECK(QemuCompare(way.disk, "qcow2", src) == 0);
    const auto trash = b->ListTrash();
    REQUIRE(trash.size() == 1);
    CHECK(trash[0].has_children);
    CHECK_FALSE(b->PurgeTrash(trash[0]));
    fs::remove(way.disk);
    CHECK(b->PurgeTrash(b->ListTrash().at(0)));
    CHECK(b->ListTrash().empty());
  }
}

TEST_CASE("a backing name of another protocol reaches no file under the root") {
  TempDir dir("local-foreign-protocol");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 32);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  const fs::path disk = b->PathOf({b->volume_pool(), "nbd-disk"});
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(base).string(), disk.string()}) == 0);
  REQUIRE(RunCommand({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b",
                      "nbd:localhost:10809", disk.string()}) == 0);
  CHECK(b->Remove(base) == storage::RemoveOutcome::kRemoved);
}

TEST_CASE("a move to the trash a kill cut short is finished by the next removal, not left") {
  TempDir dir("local-trash-resume");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 33);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  // What a kill right after the link into the trash leaves: the same file in a trash
  // folder of the name, without its record.
  const fs::path folder = dir.path() / "root" / ".trash" / (kBaseName + ".00000000abcd");
  fs::create_directories(folder);
  REQUIRE(::link(b->PathOf(base).c_str(), (folder / "image").c_str()) == 0);
  // Nothing reads it now: the move is finished all the same (its caller records it and
  // purges it), never the name unlinked under a folder no one would purge.
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK_FALSE(b->Exists(base));
  const auto trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK(trash[0].original == base);
  CHECK_FALSE(trash[0].has_children);
  CHECK(b->PurgeTrash(trash[0]));
  CHECK_FALSE(fs::exists(folder));
}

}  // namespace
}  // namespace cachemgr::test
