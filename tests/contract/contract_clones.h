// tests/contract/contract_clones.h: the Backend contract on snapshots and what depends
// on them: clones, copies, flatten, the trash; and the locks.
// Included by backend_contract.h.
#pragma once

#include <sys/wait.h>

#include <stdexcept>

#include "contract/contract_support.h"

namespace cachemgr::contract {

TEST_CASE("contract: snapshots: create, protect, list, unprotect, remove") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef ref = scrub.Add({b.entry_pool(), UniqueName("snaps")});
  std::string content = Pattern(2 * kMiB, 8);
  CreateImage(b, ref, content);
  CHECK(b.ListSnapshots(ref).empty());

  b.CreateSnapshot({ref, "s1"});
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists, b.CreateSnapshot({ref, "s1"}));
  b.CreateSnapshot({ref, "s2"});
  auto snaps = b.ListSnapshots(ref);
  REQUIRE(snaps.size() == 2);
  std::sort(snaps.begin(), snaps.end(),
            [](const auto& x, const auto& y) { return x.name < y.name; });
  CHECK(snaps[0].name == "s1");
  CHECK(snaps[1].name == "s2");
  CHECK_FALSE(snaps[0].is_protected);

  b.ProtectSnapshot({ref, "s1"});
  snaps = b.ListSnapshots(ref);
  for (const auto& s : snaps) CHECK(s.is_protected == (s.name == "s1"));
  CHECK(ReadAll(b, ref, std::string("s1")) == content);

  CONTRACT_CHECK_ERRC(Errc::kBusy, b.RemoveSnapshot({ref, "s1"}));
  CHECK(b.ListSnapshots(ref).size() == 2);
  b.UnprotectSnapshot({ref, "s1"});
  b.RemoveSnapshot({ref, "s1"});
  b.RemoveSnapshot({ref, "s2"});
  CHECK(b.ListSnapshots(ref).empty());
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.RemoveSnapshot({ref, "s1"}));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.ProtectSnapshot({ref, "nope"}));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Open(ref, std::string("nope")));
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.CreateSnapshot({ref, "../bad"}));
  CHECK(ReadAll(b, ref) == content);
}

TEST_CASE("contract: an image with snapshots and no clones is removed outright") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 9);
  CHECK(b.Remove(base.ref) == storage::RemoveOutcome::kRemoved);
  CHECK_FALSE(b.Exists(base.ref));
  for (const auto& entry : b.ListTrash()) CHECK_FALSE(entry.original == base.ref);
}

TEST_CASE("contract: clone reads the parent; writes to the clone leave the parent alone") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 10);
  ImageRef clone = scrub.Add({b.volume_pool(), UniqueName("clone")});
  b.Clone(base.snap, clone);
  CHECK(b.Exists(clone));
  CHECK(b.Stat(clone).size == base.content.size());
  CHECK(ReadAll(b, clone) == base.content);
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists, b.Clone(base.snap, clone));

  REQUIRE(t.write_bytes);
  t.write_bytes(clone, 512 * 1024, 64 * 1024, 0x5a);
  t.write_bytes(clone, 2 * kMiB, 4096, 0x33);  // into the parent's hole
  std::string expect = base.content;
  std::fill_n(expect.begin() + 512 * 1024, 64 * 1024, '\x5a');
  std::fill_n(expect.begin() + 2 * kMiB, 4096, '\x33');
  CHECK(ReadAll(b, clone) == expect);
  CHECK(ReadAll(b, base.ref) == base.content);
  CHECK(ReadAll(b, base.ref, std::string("snap")) == base.content);

  if (t.linked_clones) {
    auto parent = b.Parent(clone);
    REQUIRE(parent.has_value());
    CHECK(*parent == base.snap);
    REQUIRE(b.Stat(clone).parent.has_value());
    CHECK(*b.Stat(clone).parent == base.snap);
    CHECK(b.Depth(clone) == 1);
    auto children = b.Children(base.snap);
    REQUIRE(children.size() == 1);
    CHECK(children[0] == clone);
    CONTRACT_CHECK_ERRC(Errc::kBusy, b.UnprotectSnapshot(base.snap));
  } else {
    CHECK_FALSE(b.Parent(clone).has_value());
    CHECK(b.Depth(clone) == 0);
    CHECK(b.Children(base.snap).empty());
  }
}

TEST_CASE("contract: depth follows the parent chain; flatten detaches and keeps the data") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 11);
  ImageRef c1 = scrub.Add({b.volume_pool(), UniqueName("c1")});
  b.Clone(base.snap, c1);
  t.write_bytes(c1, 0, 4096, 0x11);
  SnapRef c1_snap{c1, "s"};
  b.CreateSnapshot(c1_snap);
  b.ProtectSnapshot(c1_snap);
  ImageRef c2 = scrub.Add({b.volume_pool(), UniqueName("c2")});
  b.Clone(c1_snap, c2);
  std::string expect = base.content;
  std::fill_n(expect.begin(), 4096, '\x11');
  CHECK(ReadAll(b, c2) == expect);

  uint32_t chain = t.linked_clones ? 1 : 0;
  CHECK(b.Depth(base.ref) == 0);
  CHECK(b.Depth(c1) == chain);
  CHECK(b.Depth(c2) == 2 * chain);

  uint64_t last_done = 0;
  b.Flatten(c2, [&](uint64_t done, uint64_t) { last_done = done; });
  CHECK(b.Depth(c2) == 0);
  CHECK_FALSE(b.Parent(c2).has_value());
  CHECK_FALSE(b.Stat(c2).parent.has_value());
  CHECK(b.Children(c1_snap).empty());
  CHECK(ReadAll(b, c2) == expect);
  // Independent now: the snapshot it came from can go.
  b.UnprotectSnapshot(c1_snap);
  b.RemoveSnapshot(c1_snap);
  CHECK(ReadAll(b, c2) == expect);
  // Flattening an independent image is a no-op.
  b.Flatten(base.ref, {});
  CHECK(ReadAll(b, base.ref) == base.content);
}

TEST_CASE("contract: copy is independent of its source") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 12);
  ImageRef clone = scrub.Add({b.volume_pool(), UniqueName("clone")});
  b.Clone(base.snap, clone);
  t.write_bytes(clone, 4096, 4096, 0x77);
  std::string clone_content = base.content;
  std::fill_n(clone_content.begin() + 4096, 4096, '\x77');

  ImageRef from_snap = scrub.Add({b.volume_pool(), UniqueName("copy-snap")});
  ImageRef from_clone = scrub.Add({b.volume_pool(), UniqueName("copy-clone")});
  b.Copy(base.snap, from_snap, {});
  b.Copy(clone, from_clone, [](uint64_t, uint64_t) {});
  CHECK(b.Depth(from_snap) == 0);
  CHECK(b.Depth(from_clone) == 0);
  CHECK_FALSE(b.Parent(from_clone).has_value());
  CHECK(b.Stat(from_snap).size == base.content.size());
  // Copies keep holes. The hole must cover a whole RBD object (4 MiB) to be visible
  // there, so this uses its own 12 MiB image: 1 MiB data, 10 MiB hole, 1 MiB data.
  {
    ImageRef sparse = scrub.Add({b.entry_pool(), UniqueName("sparse")});
    std::string sparse_content =
        Pattern(1 * kMiB, 21) + std::string(10 * kMiB, '\0') + Pattern(1 * kMiB, 22);
    CreateImage(b, sparse, sparse_content);
    ImageRef sparse_copy = scrub.Add({b.volume_pool(), UniqueName("sparse-copy")});
    b.Copy(sparse, sparse_copy, {});
    CHECK(b.AllocatedBytes(sparse_copy) <= 8 * kMiB);
    CHECK(ReadAll(b, sparse_copy) == sparse_content);
  }
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists, b.Copy(clone, from_clone, {}));

  CHECK(b.Remove(clone) == storage::RemoveOutcome::kRemoved);
  CHECK(b.Remove(base.ref) == storage::RemoveOutcome::kRemoved);
  CHECK_FALSE(b.Exists(base.ref));
  CHECK(ReadAll(b, from_snap) == base.content);
  CHECK(ReadAll(b, from_clone) == clone_content);
}

TEST_CASE("contract: an image whose snapshot has clones goes to the trash, not away") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 18);
  ImageRef clone = scrub.Add({b.volume_pool(), UniqueName("clone")});
  b.Clone(base.snap, clone);

  auto outcome = b.Remove(base.ref);
  if (!t.linked_clones) {
    CHECK(outcome == storage::RemoveOutcome::kRemoved);
    CHECK(ReadAll(b, clone) == base.content);
    return;
  }
  CHECK(outcome == storage::RemoveOutcome::kTrashed);
  CHECK_FALSE(b.Exists(base.ref));
  auto names = b.List(base.ref.pool);
  CHECK(std::find(names.begin(), names.end(), base.ref.name) == names.end());
  CHECK(ReadAll(b, clone) == base.content);
  CHECK(b.Depth(clone) == 1);

  auto find_entry = [&]() -> std::optional<storage::TrashEntry> {
    for (const auto& e : b.ListTrash())
      if (e.original == base.ref) return e;
    return std::nullopt;
  };
  auto entry = find_entry();
  REQUIRE(entry.has_value());
  CHECK(entry->has_children);
  CHECK_FALSE(b.PurgeTrash(*entry));
  CHECK(find_entry().has_value());
  CHECK(ReadAll(b, clone) == base.content);

  // The name is free for a fresh image while the old one waits in the trash.
  std::string fresh = Pattern(1 * kMiB, 19);
  CreateImage(b, base.ref, fresh);
  CHECK(ReadAll(b, base.ref) == fresh);
  CHECK(ReadAll(b, clone) == base.content);
  CHECK(b.Remove(base.ref) == storage::RemoveOutcome::kRemoved);

  CHECK(b.Remove(clone) == storage::RemoveOutcome::kRemoved);
  entry = find_entry();
  REQUIRE(entry.has_value());
  CHECK_FALSE(entry->has_children);
  CHECK(b.PurgeTrash(*entry));
  CHECK_FALSE(find_entry().has_value());
}

TEST_CASE("contract: a flattened clone no longer holds its parent") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 20);
  ImageRef clone = scrub.Add({b.volume_pool(), UniqueName("clone")});
  b.Clone(base.snap, clone);
  b.Flatten(clone, {});
  CHECK(b.Children(base.snap).empty());
  CHECK(b.Remove(base.ref) == storage::RemoveOutcome::kRemoved);
  CHECK(ReadAll(b, clone) == base.content);
}

TEST_CASE("contract: locks are exclusive until released") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  std::string key = UniqueName("lock");
  auto held = b.AcquireLock(key, std::chrono::milliseconds(200));
  REQUIRE(held);
  CONTRACT_CHECK_ERRC(Errc::kBusy, b.AcquireLock(key, std::chrono::milliseconds(100)));
  // Another backend object (another process would be the same) is refused as well.
  auto t2 = MakeTarget();
  CONTRACT_CHECK_ERRC(Errc::kBusy, t2.backend->AcquireLock(key, std::chrono::milliseconds(100)));
  // Other keys are independent.
  auto other = b.AcquireLock(UniqueName("lock2"), std::chrono::milliseconds(200));
  CHECK(other);
  held.reset();
  auto again = t2.backend->AcquireLock(key, std::chrono::milliseconds(2000));
  CHECK(again);
}

TEST_CASE("contract: a clone owns what was written into it, not its parent's data") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  // 16 MiB of data (four RBD objects), so one written object is not the whole image.
  ImageRef parent = scrub.Add({b.entry_pool(), UniqueName("ownbase")});
  CreateImage(b, parent, Pattern(16 * kMiB, 40));
  SnapRef snap{parent, "snap"};
  b.CreateSnapshot(snap);
  b.ProtectSnapshot(snap);
  CHECK(b.OwnBytes(parent) == b.AllocatedBytes(parent));  // independent: all of it
  CHECK(b.OwnBytes(parent) >= 16 * kMiB);

  ImageRef clone = scrub.Add({b.volume_pool(), UniqueName("own")});
  b.Clone(snap, clone);
  const uint64_t fresh = b.OwnBytes(clone);
  // A linked clone holds nothing yet (a qcow2 overlay: its header and tables).
  if (t.linked_clones) CHECK(fresh < 1 * kMiB);
  t.write_bytes(clone, 0, 1 * kMiB, 0x5a);
  const uint64_t written = b.OwnBytes(clone);
  CHECK(written >= 1 * kMiB);
  // At most the objects the write touched (RBD copies a whole 4 MiB object up).
  if (t.linked_clones) CHECK(written <= fresh + 4 * kMiB);
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.OwnBytes({b.volume_pool(), UniqueName("none")}));
}

}  // namespace cachemgr::contract

namespace cachemgr::contract {

// --- CloneInPlace: a clone that appears at its name whole (marked, sized) or not at all

TEST_CASE("contract: a clone in place appears whole at its name, or nothing is made") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 21);
  const ImageRef staging{b.volume_pool(), UniqueName("staging")};
  const ImageRef child = scrub.Add({b.volume_pool(), UniqueName("inplace")});
  const uint64_t size = base.content.size() + 3 * kMiB;
  int asked = 0;
  std::string asked_identity;
  const bool placed = b.CloneInPlace(base.snap, staging, child, size, [&](const std::string& id) {
    ++asked;
    asked_identity = id;
    CHECK_FALSE(b.Exists(child));  // nothing at the name before the metadata is known
    return std::map<std::string, std::string>{{"k", "v " + id}};
  });
  CHECK_FALSE(b.Exists(staging));
  if (!placed) {  // a backend that cannot: nothing made, nothing asked
    CHECK(asked == 0);
    CHECK_FALSE(b.Exists(child));
    return;
  }
  CHECK(asked == 1);
  REQUIRE(b.Exists(child));
  CHECK(b.Identity(child) == asked_identity);
  CHECK(b.GetMetadata(child).at("k") == "v " + asked_identity);
  CHECK(b.Stat(child).size == size);
  std::string expect = base.content;
  expect.resize(size, '\0');
  CHECK(ReadAll(b, child) == expect);
  auto parent = b.Parent(child);
  REQUIRE(parent.has_value());
  CHECK(*parent == base.snap);
  CHECK(b.Children(base.snap) == std::vector<ImageRef>{child});
  CHECK_FALSE(b.RemoveDanglingName(staging, ""));  // no temporary left behind

  // Size 0: the snapshot's own.
  const ImageRef same = scrub.Add({b.volume_pool(), UniqueName("same")});
  REQUIRE(b.CloneInPlace(base.snap, staging, same, 0, [&](const std::string&) {
    return std::map<std::string, std::string>{};
  }));
  CHECK(b.Stat(same).size == base.content.size());
  CHECK(ReadAll(b, same) == base.content);
  CHECK_FALSE(b.Exists(staging));
  b.Remove(same);

  // Smaller than the snapshot: refused, nothing made (nor left under the staging name).
  const ImageRef small{b.volume_pool(), UniqueName("small")};
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument,
                      b.CloneInPlace(base.snap, staging, small, base.content.size() - 512,
                                     [&](const std::string&) {
                                       return std::map<std::string, std::string>{};
                                     }));
  CHECK_FALSE(b.Exists(small));
  CHECK_FALSE(b.Exists(staging));

  // The name taken, before or while the clone is made: kAlreadyExists, and what holds the
  // name is untouched (its bytes, its metadata).
  b.SetMetadata(child, "other", "kept");
  const std::string before = ReadAll(b, child);
  const std::string identity = b.Identity(child);
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists,
                      b.CloneInPlace(base.snap, staging, child, size, [&](const std::string&) {
                        return std::map<std::string, std::string>{{"other", "mine"}};
                      }));
  const ImageRef raced = scrub.Add({b.volume_pool(), UniqueName("raced")});
  const std::string theirs = Pattern(kMiB, 99);
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists,
                      b.CloneInPlace(base.snap, staging, raced, size, [&](const std::string&) {
                        CreateImage(b, raced, theirs);  // someone else takes the name
                        b.SetMetadata(raced, "theirs", "1");
                        return std::map<std::string, std::string>{{"k", "mine"}};
                      }));
  CHECK(ReadAll(b, raced) == theirs);
  CHECK(b.GetMetadata(raced) == std::map<std::string, std::string>{{"theirs", "1"}});
  CHECK(ReadAll(b, child) == before);
  CHECK(b.Identity(child) == identity);
  CHECK(b.GetMetadata(child).at("other") == "kept");
  CHECK_FALSE(b.RemoveDanglingName(staging, ""));

  // `publish` throws: the clone is undone, the name stays free and can be made after.
  const ImageRef undone{b.volume_pool(), UniqueName("undone")};
  CHECK_THROWS_AS(b.CloneInPlace(base.snap, staging, undone, size,
                                 [&](const std::string&) -> std::map<std::string, std::string> {
                                   throw std::runtime_error("the caller's check failed");
                                 }),
                  std::runtime_error);
  CHECK_FALSE(b.Exists(undone));
  CHECK_FALSE(b.RemoveDanglingName(staging, ""));
  CHECK(b.Children(base.snap) == std::vector<ImageRef>{child});
  scrub.Add(undone);
  CHECK(b.CloneInPlace(base.snap, staging, undone, size, [&](const std::string&) {
    return std::map<std::string, std::string>{};
  }));
  CHECK(ReadAll(b, undone) == expect);

  // Where the clone sits under the staging name while `publish` runs (RBD), someone moves
  // it away and puts an image of theirs there: the call fails, and their image (at the
  // staging name) and the clone (where they moved it) are both left as they are.
  const ImageRef swapped{b.volume_pool(), UniqueName("swapped")};
  const ImageRef moved = scrub.Add({b.volume_pool(), UniqueName("moved")});
  const ImageRef foreign_at_staging = scrub.Add(staging);
  bool was_there = false;
  const std::string foreign = Pattern(kMiB, 77);
  try {
    b.CloneInPlace(base.snap, staging, swapped, size, [&](const std::string&) {
      was_there = b.Exists(staging);
      if (was_there) {
        b.Rename(staging, moved.name);
        CreateImage(b, staging, foreign);
        b.SetMetadata(staging, "theirs", "1");
      }
      return std::map<std::string, std::string>{};
    });
  } catch (const Error&) {
    CHECK(was_there);  // only the swap may fail it
  }
  if (was_there) {
    CHECK_FALSE(b.Exists(swapped));
    REQUIRE(b.Exists(foreign_at_staging));
    CHECK(ReadAll(b, foreign_at_staging) == foreign);
    CHECK(b.GetMetadata(foreign_at_staging) == std::map<std::string, std::string>{{"theirs", "1"}});
    CHECK(b.Exists(moved));
  } else {
    scrub.Add(swapped);
    CHECK(ReadAll(b, swapped) == expect);
  }
}

TEST_CASE("contract: a clone in place whose maker died is cleared by its staging name") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  if (!t.forkable) return;
  auto base = MakeBase(b, scrub, 22);
  const ImageRef staging{b.volume_pool(), UniqueName("staging")};
  const ImageRef child = scrub.Add({b.volume_pool(), UniqueName("died")});
  // Whether this backend clones in place at all (a probe under another name).
  const ImageRef probe = scrub.Add({b.volume_pool(), UniqueName("probe")});
  if (!b.CloneInPlace(base.snap, {b.volume_pool(), UniqueName("staging")}, probe,
                      base.content.size(),
                      [](const std::string&) { return std::map<std::string, std::string>{}; })) {
    return;
  }
  // The maker is killed while `publish` runs (the clone exists under no name).
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    try {
      b.CloneInPlace(base.snap, staging, child, base.content.size(),
                     [](const std::string&) -> std::map<std::string, std::string> { ::_exit(0); });
    } catch (...) {
    }
    ::_exit(1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK_FALSE(b.Exists(child));
  // What the caller clears by its staging name: Remove (nothing there here), then
  // RemoveDanglingName, which takes the dead maker's temporary and nothing else.
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Remove(staging));
  CHECK_FALSE(b.RemoveDanglingName({b.volume_pool(), UniqueName("other")}, ""));
  CHECK_FALSE(b.RemoveDanglingName(staging, "some-identity"));  // only for a staging name
  CHECK(b.RemoveDanglingName(staging, ""));
  CHECK_FALSE(b.RemoveDanglingName(staging, ""));
  // The name is free and the snapshot has no other child.
  CHECK(b.Children(base.snap) == std::vector<ImageRef>{probe});
  CHECK(b.CloneInPlace(base.snap, staging, child, base.content.size(),
                       [](const std::string&) { return std::map<std::string, std::string>{}; }));
  CHECK(ReadAll(b, child) == base.content);
}

}  // namespace cachemgr::contract
