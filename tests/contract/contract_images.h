// tests/contract/contract_images.h: the Backend contract on single images: writing and
// reading back, names, errors, resize, rename, identity and metadata.
// Included by backend_contract.h.
#pragma once

#include "contract/contract_support.h"

namespace cachemgr::contract {

TEST_CASE("contract: create, write, read back; holes read as zeros and stay unallocated") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef ref = scrub.Add({b.entry_pool(), UniqueName("img")});
  // 16 MiB: 1 MiB data, 14 MiB zeros (written as zeros), 1 MiB data. Large enough that
  // RBD's 4 MiB objects in the middle are never allocated.
  std::string content =
      Pattern(1 * kMiB, 1) + std::string(14 * kMiB, '\0') + Pattern(1 * kMiB, 2);
  CHECK_FALSE(b.Exists(ref));
  auto stats = CreateImage(b, ref, content);
  CHECK(stats.bytes_in == content.size());
  CHECK(stats.bytes_written >= 2 * kMiB);
  CHECK(stats.bytes_written <= 8 * kMiB);

  CHECK(b.Exists(ref));
  auto info = b.Stat(ref);
  CHECK(info.ref == ref);
  CHECK(info.size == content.size());
  CHECK_FALSE(info.parent.has_value());
  CHECK(b.Depth(ref) == 0);
  CHECK_FALSE(b.Parent(ref).has_value());

  std::string back = ReadAll(b, ref);
  REQUIRE(back.size() == content.size());
  CHECK(back == content);
  CHECK(AllZero(ReadRange(b, ref, 2 * kMiB, 12 * kMiB)));
  CHECK(ReadRange(b, ref, 15 * kMiB + 10, 100) == content.substr(15 * kMiB + 10, 100));

  uint64_t allocated = b.AllocatedBytes(ref);
  CHECK(allocated >= 2 * kMiB);
  CHECK(allocated <= 8 * kMiB);

  auto names = b.List(ref.pool);
  CHECK(std::find(names.begin(), names.end(), ref.name) != names.end());

  // Reading past the end returns nothing.
  auto reader = b.Open(ref);
  CHECK(reader->size() == content.size());
  std::string buf(16, '\0');
  CHECK(reader->Read(content.size(), {reinterpret_cast<std::byte*>(buf.data()), buf.size()}) ==
        0);
}

TEST_CASE("contract: bytes not appended read as zeros") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef ref = scrub.Add({b.volume_pool(), UniqueName("short")});
  std::string head = Pattern(1 * kMiB + 4096, 3);
  CreateImage(b, ref, head, 4 * kMiB);
  CHECK(b.Stat(ref).size == 4 * kMiB);
  std::string back = ReadAll(b, ref);
  REQUIRE(back.size() == 4 * kMiB);
  CHECK(back.substr(0, head.size()) == head);
  CHECK(AllZero(back.substr(head.size())));
}

TEST_CASE("contract: zeros appended as a count read back as zeros, between data") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef ref = scrub.Add({b.entry_pool(), UniqueName("zeros")});
  // Data that ends inside an object, zeros across whole objects and into the next,
  // data again, zeros to the end: every edge of the skipping.
  const std::string a = Pattern(1 * kMiB + 12345, 4);
  const uint64_t gap = 13 * kMiB + 777;
  const std::string c = Pattern(2 * kMiB + 4096, 5);
  const uint64_t tail = 3 * kMiB + 1;
  const uint64_t size = a.size() + gap + c.size() + tail;
  auto w = b.Create(ref, size);
  w->Append({reinterpret_cast<const std::byte*>(a.data()), a.size()});
  w->AppendZeros(gap);
  w->Append({reinterpret_cast<const std::byte*>(c.data()), c.size()});
  w->AppendZeros(tail);
  auto stats = w->Finish();
  CHECK(stats.bytes_in == size);
  CHECK(stats.bytes_written <= 8 * kMiB);
  const std::string expect = a + std::string(gap, '\0') + c + std::string(tail, '\0');
  CHECK(ReadAll(b, ref) == expect);
  CHECK(b.AllocatedBytes(ref) <= 12 * kMiB);

  // Past the size: refused like Append.
  ImageRef over = scrub.Add({b.entry_pool(), UniqueName("zeros-over")});
  auto w2 = b.Create(over, 1 * kMiB);
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, w2->AppendZeros(1 * kMiB + 1));
}

TEST_CASE("contract: a writer destroyed without Finish leaves no image") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef ref = scrub.Add({b.entry_pool(), UniqueName("abandoned")});
  {
    auto writer = b.Create(ref, 2 * kMiB);
    writer->Append(Bytes(Pattern(1 * kMiB, 4)));
  }
  CHECK_FALSE(b.Exists(ref));
  auto names = b.List(ref.pool);
  CHECK(std::find(names.begin(), names.end(), ref.name) == names.end());
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Stat(ref));
  // The name is free again.
  std::string content = Pattern(2 * kMiB, 5);
  CreateImage(b, ref, content);
  CHECK(ReadAll(b, ref) == content);
}

TEST_CASE("contract: a taken name is refused") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef ref = scrub.Add({b.entry_pool(), UniqueName("taken")});
  std::string content = Pattern(1 * kMiB, 6);
  CreateImage(b, ref, content);
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists, {
    auto w = b.Create(ref, 1 * kMiB);
    w->Append(Bytes(Pattern(1 * kMiB, 7)));
    w->Finish();
  });
  CHECK(ReadAll(b, ref) == content);
}

TEST_CASE("contract: missing images are kNotFound") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  ImageRef ref{b.entry_pool(), UniqueName("missing")};
  CHECK_FALSE(b.Exists(ref));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Stat(ref));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Open(ref));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Remove(ref));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Resize(ref, 8 * kMiB));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Rename(ref, UniqueName("other")));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.GetMetadata(ref));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.SetMetadata(ref, "k", "v"));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.ListSnapshots(ref));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.CreateSnapshot({ref, "s"}));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Depth(ref));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Clone({ref, "s"}, {b.volume_pool(), UniqueName("c")}));
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Copy(ref, {b.volume_pool(), UniqueName("c")}, {}));
}

TEST_CASE("contract: names are validated") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  const std::vector<std::string> bad = {"../x",
                                        "a;rm -rf",
                                        std::string("a\0b", 3),
                                        "",
                                        ".hidden",
                                        "-dash",
                                        "a/b",
                                        std::string(201, 'a'),
                                        "caf\xc3\xa9",
                                        "sp ace"};
  for (const auto& name : bad) {
    CAPTURE(name);
    CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, storage::ValidateName("image", name));
    CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.Stat({b.entry_pool(), name}));
    CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.Create({b.volume_pool(), name}, 1 * kMiB));
    CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.Exists({name, "x"}));
  }
  // The message names the offending thing.
  try {
    storage::ValidateName("image", "../x");
    FAIL("no throw");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("../x") != std::string::npos);
  }
  storage::ValidateName("image", std::string(200, 'a'));
  storage::ValidateName("image", "Abc_0.9-x");
  // A good name with a missing image is simply not found.
  CHECK_FALSE(b.Exists({b.entry_pool(), std::string(200, 'a')}));
}

TEST_CASE("contract: resize grows; old data kept, new space reads as zeros") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 13);
  ImageRef plain = scrub.Add({b.volume_pool(), UniqueName("plain")});
  std::string content = Pattern(2 * kMiB, 14);
  CreateImage(b, plain, content);
  b.Resize(plain, 6 * kMiB);
  CHECK(b.Stat(plain).size == 6 * kMiB);
  std::string back = ReadAll(b, plain);
  REQUIRE(back.size() == 6 * kMiB);
  CHECK(back.substr(0, content.size()) == content);
  CHECK(AllZero(back.substr(content.size())));

  ImageRef clone = scrub.Add({b.volume_pool(), UniqueName("clone")});
  b.Clone(base.snap, clone);
  b.Resize(clone, 8 * kMiB);
  CHECK(b.Stat(clone).size == 8 * kMiB);
  back = ReadAll(b, clone);
  REQUIRE(back.size() == 8 * kMiB);
  CHECK(back.substr(0, base.content.size()) == base.content);
  CHECK(AllZero(back.substr(base.content.size())));
  CHECK(b.Stat(base.ref).size == base.content.size());
}

TEST_CASE("contract: rename keeps data, metadata and snapshots") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef from = scrub.Add({b.entry_pool(), UniqueName("staging")});
  std::string content = Pattern(2 * kMiB, 15);
  CreateImage(b, from, content);
  b.SetMetadata(from, "cachemgr.image_id", "abc");
  b.CreateSnapshot({from, "snap"});
  ImageRef to = scrub.Add({b.entry_pool(), UniqueName("final")});
  b.Rename(from, to.name);
  CHECK_FALSE(b.Exists(from));
  CHECK(b.Exists(to));
  CHECK(ReadAll(b, to) == content);
  CHECK(b.GetMetadata(to).at("cachemgr.image_id") == "abc");
  REQUIRE(b.ListSnapshots(to).size() == 1);
  CHECK(ReadAll(b, to, std::string("snap")) == content);
  auto names = b.List(to.pool);
  CHECK(std::find(names.begin(), names.end(), to.name) != names.end());
  CHECK(std::find(names.begin(), names.end(), from.name) == names.end());

  ImageRef other = scrub.Add({b.entry_pool(), UniqueName("other")});
  CreateImage(b, other, Pattern(1 * kMiB, 16));
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists, b.Rename(other, to.name));
  CHECK(ReadAll(b, to) == content);
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.Rename(other, "../escape"));
}

TEST_CASE("contract: a refused rename leaves the image at the name, data and metadata") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef theirs = scrub.Add({b.volume_pool(), UniqueName("theirs")});
  CreateImage(b, theirs, Pattern(1 * kMiB, 41));
  b.SetMetadata(theirs, "owner", "someone else");
  b.CreateSnapshot({theirs, "keep"});
  const std::string their_id = b.Identity(theirs);
  ImageRef ours = scrub.Add({b.volume_pool(), UniqueName("ours")});
  CreateImage(b, ours, Pattern(1 * kMiB, 42));
  b.SetMetadata(ours, "owner", "cachemgr");
  CONTRACT_CHECK_ERRC(Errc::kAlreadyExists, b.Rename(ours, theirs.name));
  CHECK(ReadAll(b, theirs) == Pattern(1 * kMiB, 41));
  CHECK(b.GetMetadata(theirs) == std::map<std::string, std::string>{{"owner", "someone else"}});
  CHECK(b.ListSnapshots(theirs).size() == 1);
  CHECK(b.Identity(theirs) == their_id);
  CHECK(b.Exists(ours));
  CHECK(b.GetMetadata(ours).at("owner") == "cachemgr");
}

TEST_CASE("contract: identity: kept across rename, new for a copy or a new image of the name") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 43);
  const std::string id = b.Identity(base.ref);
  CHECK_FALSE(id.empty());
  CHECK(b.Identity(base.ref) == id);  // stable: not made up per call
  // A fresh backend object sees the same identity (it is the object's, not the handle's).
  CHECK(MakeTarget().backend->Identity(base.ref) == id);

  ImageRef renamed = scrub.Add({b.entry_pool(), UniqueName("renamed")});
  b.Rename(base.ref, renamed.name);
  CHECK(b.Identity(renamed) == id);

  // A copy carries the metadata along (as `rbd cp` does) but not the identity.
  b.SetMetadata(renamed, "cachemgr.mark", "entry " + id);
  ImageRef copy = scrub.Add({b.entry_pool(), UniqueName("copy")});
  b.Copy(renamed, copy, {});
  CHECK(b.Identity(copy) != id);
  ImageRef clone = scrub.Add({b.volume_pool(), UniqueName("clone")});
  b.Clone({renamed, "snap"}, clone);
  CHECK(b.Identity(clone) != id);
  CHECK(b.Identity(clone) != b.Identity(copy));

  // The name removed and made again: another object, whatever its inode number.
  ImageRef again = scrub.Add({b.volume_pool(), UniqueName("again")});
  CreateImage(b, again, Pattern(1 * kMiB, 44));
  const std::string first = b.Identity(again);
  b.Remove(again);
  CreateImage(b, again, Pattern(1 * kMiB, 44));
  CHECK(b.Identity(again) != first);

  ImageRef missing{b.volume_pool(), UniqueName("missing")};
  CONTRACT_CHECK_ERRC(Errc::kNotFound, b.Identity(missing));

  // HasIdentity answers what comparing Identity would: the name's own object only.
  CHECK(b.HasIdentity(renamed, id));
  CHECK_FALSE(b.HasIdentity(base.ref, id));  // renamed away
  CHECK_FALSE(b.HasIdentity(copy, id));
  CHECK(b.HasIdentity(copy, b.Identity(copy)));
  CHECK_FALSE(b.HasIdentity(again, first));  // the name's earlier object
  CHECK_FALSE(b.HasIdentity(missing, id));
}

TEST_CASE("contract: metadata set, get, overwrite, remove") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  ImageRef ref = scrub.Add({b.entry_pool(), UniqueName("meta")});
  CreateImage(b, ref, Pattern(1 * kMiB, 17));
  CHECK(b.GetMetadata(ref).empty());
  b.SetMetadata(ref, "cachemgr.image_id", "3f2c-01");
  b.SetMetadata(ref, "cachemgr.checksum", "d41d8cd98f00b204e9800998ecf8427e");
  b.SetMetadata(ref, "cachemgr.note", "spaces, \"quotes\" and = signs");
  auto meta = b.GetMetadata(ref);
  CHECK(meta.size() == 3);
  CHECK(meta["cachemgr.image_id"] == "3f2c-01");
  CHECK(meta["cachemgr.note"] == "spaces, \"quotes\" and = signs");
  b.SetMetadata(ref, "cachemgr.image_id", "3f2c-02");
  CHECK(b.GetMetadata(ref)["cachemgr.image_id"] == "3f2c-02");
  b.RemoveMetadata(ref, "cachemgr.note");
  meta = b.GetMetadata(ref);
  CHECK(meta.size() == 2);
  CHECK(meta.count("cachemgr.note") == 0);
  // A fresh backend object sees the same metadata (it lives on the image).
  auto t2 = MakeTarget();
  CHECK(t2.backend->GetMetadata(ref)["cachemgr.checksum"] == "d41d8cd98f00b204e9800998ecf8427e");
}

}  // namespace cachemgr::contract
