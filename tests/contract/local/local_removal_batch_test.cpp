// Removal batches of the local backend (Backend::BeginRemovals): removals of images the
// caller has locked are decided on one look at the overlays, which is never older than
// its limit and never used to rebase overlays, and images outside the batch are looked at
// anew as before.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "contract/local/local_test_util.h"
#include "storage/local/local_backend.h"

namespace cachemgr::test {
namespace {

// An overlay made by hand, as another tool makes one, of the image at `base`.
void ForeignOverlay(const fs::path& base, const fs::path& overlay) {
  std::string out;
  REQUIRE_MESSAGE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                              base.string(), overlay.string()},
                             &out) == 0,
                  out);
}

struct TwoBases {
  TempDir dir;
  fs::path src_a, src_b;
  std::unique_ptr<LocalBackend> b;
  ImageRef a, c;
  explicit TwoBases(const std::string& name)
      : dir(name), src_a(dir.path() / "a.raw"), src_b(dir.path() / "b.raw") {
    WriteRawImage(src_a, 4 * kMiB, 1 * kMiB, 3);
    WriteRawImage(src_b, 4 * kMiB, 1 * kMiB, 4);
    b = MakeLocal(dir.path() / "root");
    a = {b->entry_pool(), kBaseName};
    c = {b->entry_pool(), "c94a8fe5ccb19ba61c4c0873d391e987982fbbd3"};
    Import(*b, src_a, a);
    Import(*b, src_b, c);
    SnapAndProtect(*b, a);
    SnapAndProtect(*b, c);
  }
  // What the eviction does with an entry: unprotect, drop the snapshot, remove.
  storage::RemoveOutcome Evict(const ImageRef& ref) {
    b->UnprotectSnapshot({ref, "snap"});
    b->RemoveSnapshot({ref, "snap"});
    return b->Remove(ref);
  }
};

TEST_CASE("a batch's removal that finds a user moves it to the trash on a look of its own") {
  TwoBases f("local-batch-trash");
  CHECK(f.b->RemovalBatchLimit() > 1);
  const fs::path foreign = f.b->PathOf({f.b->volume_pool(), "foreign-disk"});
  ForeignOverlay(f.b->PathOf(f.c), foreign);
  auto batch = f.b->BeginRemovals({f.a, f.c});
  REQUIRE(batch);
  CHECK(f.b->Children({f.a, "snap"}).empty());  // the batch's look is taken here
  // The other tool renames its disk after the look: the trash move must rebase it by the
  // name it has now.
  const fs::path renamed = f.b->PathOf({f.b->volume_pool(), "foreign-disk-renamed"});
  fs::rename(foreign, renamed);
  CHECK(f.Evict(f.a) == storage::RemoveOutcome::kRemoved);
  CHECK(f.b->Remove(f.c) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(renamed, "qcow2", f.src_b) == 0);
  CHECK(BackingOf(renamed).find("/.trash/") != std::string::npos);
}

TEST_CASE("a batch's look older than its limit is taken anew before a removal") {
  TwoBases f("local-batch-age");
  auto batch = f.b->BeginRemovals({f.a});
  CHECK(f.b->Children({f.a, "snap"}).empty());  // a look of a small root: milliseconds
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const fs::path foreign = f.b->PathOf({f.b->volume_pool(), "late-disk"});
  ForeignOverlay(f.b->PathOf(f.a), foreign);
  // The look is older than it took to make: the overlay made since is seen, and the base
  // kept for it.
  CHECK(f.Evict(f.a) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(foreign, "qcow2", f.src_a) == 0);
}

TEST_CASE("images outside a batch, and every image once it ends, are looked at anew") {
  TwoBases f("local-batch-outside");
  {
    auto batch = f.b->BeginRemovals({f.a});
    CHECK(f.b->Children({f.a, "snap"}).empty());
    const fs::path foreign = f.b->PathOf({f.b->volume_pool(), "outside-disk"});
    ForeignOverlay(f.b->PathOf(f.c), foreign);
    CHECK(f.Evict(f.c) == storage::RemoveOutcome::kTrashed);
    CHECK(QemuCompare(foreign, "qcow2", f.src_b) == 0);
  }
  const fs::path after = f.b->PathOf({f.b->volume_pool(), "after-disk"});
  ForeignOverlay(f.b->PathOf(f.a), after);
  CHECK(f.Evict(f.a) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(after, "qcow2", f.src_a) == 0);
}

TEST_CASE("a batch's look forgets what the batch removed and keeps what it did not") {
  TwoBases f("local-batch-forget");
  // A cache clone of `a` made before the batch: the batch's look sees it.
  const ImageRef vol{f.b->volume_pool(), "vm-disk"};
  f.b->Clone({f.a, "snap"}, vol);
  auto batch = f.b->BeginRemovals({f.a, f.c, vol});
  CHECK(f.b->Children({f.a, "snap"}) == std::vector<ImageRef>{vol});
  CHECK(f.b->Children({f.c, "snap"}).empty());
  // Removing the clone is seen by the same look: its base is then unused.
  CHECK(f.b->Remove(vol) == storage::RemoveOutcome::kRemoved);
  CHECK(f.b->Children({f.a, "snap"}).empty());
  CHECK(f.Evict(f.a) == storage::RemoveOutcome::kRemoved);
  CHECK(f.Evict(f.c) == storage::RemoveOutcome::kRemoved);
  CHECK(f.b->ListTrash().empty());
}

TEST_CASE("an image the batch moved to the trash still uses its base in the batch's look") {
  TwoBases f("local-batch-moved");
  // `mid`: an image cloned from `a` that has a clone of its own, as a chain of entries.
  const ImageRef mid{f.b->entry_pool(), "d94a8fe5ccb19ba61c4c0873d391e987982fbbd3"};
  f.b->Clone({f.a, "snap"}, mid);
  SnapAndProtect(*f.b, mid);
  const ImageRef vol{f.b->volume_pool(), "vm-disk"};
  f.b->Clone({mid, "snap"}, vol);
  auto batch = f.b->BeginRemovals({mid, f.a});
  CHECK(f.b->Children({mid, "snap"}) == std::vector<ImageRef>{vol});
  // Its only user names its stable link: moved to the trash on the batch's look.
  CHECK(f.b->Remove(mid) == storage::RemoveOutcome::kTrashed);
  // In the trash it still reads through `a`: `a` keeps its clone and cannot go.
  CHECK(f.b->Children({f.a, "snap"}).size() == 1);
  CHECK_THROWS(f.b->UnprotectSnapshot({f.a, "snap"}));
  CHECK(f.b->Remove(f.a) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(f.b->PathOf(vol), "qcow2", f.src_a) == 0);
}

}  // namespace
}  // namespace cachemgr::test
