// The local backend's bases kept while overlays use them: the trash, the stable links
// `.backing/<inode>` that overlays name, and what a kill between two of their steps
// leaves for the next pass.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "contract/local/local_test_util.h"
#include "storage/local/local_backend.h"

namespace cachemgr::test {
namespace {

TEST_CASE("a base in use survives removal and goes once its last overlay is deleted") {
  BaseWithClone f("local-trash", 6 * kMiB, 2 * kMiB, 11);
  auto& [dir, src, b, base, v1, backing] = f;
  ImageRef v2{b->volume_pool(), "vm2-disk"};
  b->Clone({base, "snap"}, v2);
  // The overlays name the base's stable link: the same file, under a name that never
  // changes while they need it.
  CHECK(backing.find("/.backing/") != std::string::npos);
  CHECK(BackingOf(b->PathOf(v2)) == backing);
  CHECK(StatOf(backing).st_ino == StatOf(b->PathOf(base)).st_ino);
  CHECK(QemuCompare(b->PathOf(v1), "qcow2", src) == 0);

  // The eviction pass removes the entry: its bytes are parked, not deleted, and the
  // overlays' headers are not touched (a reader that read one a moment ago still finds
  // its backing file).
  auto header_before = ReadFile(b->PathOf(v1));
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK_FALSE(fs::exists(b->PathOf(base)));
  CHECK(ReadFile(b->PathOf(v1)) == header_before);
  CHECK(BackingOf(b->PathOf(v1)) == backing);
  CHECK(fs::exists(backing));
  CHECK(QemuCompare(b->PathOf(v1), "qcow2", src) == 0);
  CHECK(QemuCompare(b->PathOf(v2), "qcow2", src) == 0);

  auto trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK(trash[0].original == base);
  CHECK(trash[0].has_children);
  CHECK_FALSE(b->PurgeTrash(trash[0]));

  // One overlay gone: still in use.
  CHECK(b->Remove(v1) == storage::RemoveOutcome::kRemoved);
  CHECK_FALSE(b->PurgeTrash(b->ListTrash().at(0)));
  CHECK(QemuCompare(b->PathOf(v2), "qcow2", src) == 0);
  // The last overlay gone: the gc pass purges it.
  CHECK(b->Remove(v2) == storage::RemoveOutcome::kRemoved);
  trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK_FALSE(trash[0].has_children);
  CHECK(b->PurgeTrash(trash[0]));
  CHECK(b->ListTrash().empty());
  CHECK_FALSE(fs::exists(backing));
  CHECK(fs::is_empty(dir.path() / "root" / ".backing"));
}

TEST_CASE("a base flattened in place keeps the old file for the overlays made before") {
  TempDir dir("local-flatten-parent");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 2 * kMiB, 14);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  SnapAndProtect(*b, base);
  // A mid-chain image (like an entry made by a direct clone) with an overlay of its own.
  ImageRef mid{b->entry_pool(), "mid"};
  b->Clone({base, "snap"}, mid);
  SnapAndProtect(*b, mid);
  ImageRef top{b->volume_pool(), "top"};
  b->Clone({mid, "snap"}, top);

  b->Flatten(mid, {});
  CHECK(b->Depth(mid) == 0);
  CHECK(b->Depth(top) == 2);  // through the old file, still backed by the base
  CHECK(QemuCompare(b->PathOf(top), "qcow2", src) == 0);
  // The base is still in use through that old file: removing it parks it.
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(b->PathOf(top), "qcow2", src) == 0);
  CHECK(b->Remove(top) == storage::RemoveOutcome::kRemoved);
  // The old file goes with its last overlay; then the base's trash entry is free.
  auto trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK(b->PurgeTrash(trash[0]));
  CHECK(b->ListTrash().empty());
  CHECK(fs::is_empty(dir.path() / "root" / ".backing"));
  CHECK(QemuCompare(b->PathOf(mid), "qcow2", src) == 0);
}

TEST_CASE("a stable link that a kill left alone goes with the next pass, even with an empty trash") {
  BaseWithClone f("local-lone-link", 4 * kMiB, 2 * kMiB, 15);
  auto& [dir, src, b, base, v, backing] = f;
  REQUIRE(fs::exists(backing));
  // Every stable link has its image's other name beside it: nothing to sweep.
  CHECK(b->SweepTemporaries(false).empty());
  CHECK(fs::exists(backing));

  // Trashed, then purged once its overlay is gone; a kill after the purge unlinked the
  // trashed image and before it dropped the link leaves the link as the file's only
  // name, and a trash with no entry to purge.
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK(b->Remove(v) == storage::RemoveOutcome::kRemoved);
  auto trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  const fs::path trashed = dir.path() / "root" / ".trash" / trash[0].id;
  fs::remove_all(trashed);
  REQUIRE(fs::exists(backing));
  CHECK(StatOf(backing).st_nlink == 1);
  CHECK(b->ListTrash().empty());

  // A dry run names it and keeps it; a pass removes it.
  auto found = b->SweepTemporaries(true);
  REQUIRE(found.size() == 1);
  CHECK(found[0].path == backing);
  CHECK(found[0].bytes > 0);
  CHECK_FALSE(found[0].removed);
  CHECK(fs::exists(backing));
  found = b->SweepTemporaries(false);
  REQUIRE(found.size() == 1);
  CHECK(found[0].removed);
  CHECK_FALSE(fs::exists(backing));
  CHECK(fs::is_empty(dir.path() / "root" / ".backing"));
  CHECK(b->SweepTemporaries(false).empty());
}

TEST_CASE("a stable link that is a file's only name is kept while an overlay names it") {
  BaseWithClone f("local-lone-link-used", 4 * kMiB, 2 * kMiB, 16);
  auto& [dir, src, b, base, v, backing] = f;
  // The base's own name gone behind the cache's back: the link is the only name left,
  // and the overlay still reads through it.
  REQUIRE(::unlink(b->PathOf(base).c_str()) == 0);
  REQUIRE(StatOf(backing).st_nlink == 1);
  // (its sidecar, whose image is gone, is swept: only the link matters here)
  // (a lambda may not capture a structured binding before C++20: it takes the path)
  auto names_link = [link = backing](const std::vector<storage::Leftover>& found) {
    for (const auto& l : found)
      if (l.path == link) return true;
    return false;
  };
  CHECK_FALSE(names_link(b->SweepTemporaries(true)));
  CHECK_FALSE(names_link(b->SweepTemporaries(false)));
  CHECK(fs::exists(backing));
  CHECK(QemuCompare(b->PathOf(v), "qcow2", src) == 0);
  // Its overlay gone, the link goes with the next pass.
  CHECK(b->Remove(v) == storage::RemoveOutcome::kRemoved);
  CHECK(fs::exists(backing));
  auto found = b->SweepTemporaries(false);
  REQUIRE(found.size() == 1);
  CHECK(found[0].path == backing);
  CHECK(found[0].removed);
  CHECK_FALSE(fs::exists(backing));
}

}  // namespace
}  // namespace cachemgr::test
