// tests/contract/backend_contract.h: the storage::Backend contract, as doctest cases.
//
// Every backend (local in each clone mode, RBD, the fault-injecting wrapper) must pass
// the same cases. Include this header in exactly one .cpp of a test executable and
// define, in that .cpp:
//
//   cachemgr::contract::Target cachemgr::contract::MakeTarget();
//
// MakeTarget() is called once per test case. Images the cases make are named with
// contract::UniqueName() (unique per process and per call) and removed at the end of
// each case by a Scrub guard, so a shared RBD pool is left as it was found.
//
// Semantics the cases pin down (what the engine relies on):
// - Create(ref, size) + Append + Finish makes an image of `size` bytes; bytes not
//   appended read as zeros; all-zero runs are not written (the image stays sparse).
//   A writer destroyed without Finish leaves no image behind.
// - A snapshot is taken of an image that is not written afterwards (the engine never
//   writes a cache entry after its snapshot); Open(ref, snap) reads it.
// - Remove() removes the image's snapshots itself (unprotecting them). An image whose
//   snapshot still has clones is moved to the trash instead (kTrashed): the name is
//   free at once, the clones keep reading, PurgeTrash refuses until they are gone.
// - RemoveSnapshot of a protected snapshot and UnprotectSnapshot of a snapshot with
//   clones throw kBusy.
// - Errors: kNotFound for a missing image or snapshot, kAlreadyExists for a taken name,
//   kInvalidArgument for a bad name, kBusy for a held lock.
// - Target::linked_clones: whether Clone() makes a child that depends on its parent
//   (RBD clone, qcow2 overlay: depth 1, listed in Children, parent trashed on Remove)
//   or an independent copy (reflink, sparse copy: depth 0, no children). Both kinds
//   must read the parent's data and must not change the parent when written.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "storage/backend.h"

namespace cachemgr::contract {

using storage::Backend;
using storage::ImageRef;
using storage::SnapRef;

struct Target {
  std::unique_ptr<Backend> backend;
  // See the header comment: clones depend on their parent (true) or are copies (false).
  bool linked_clones = true;
  // Overwrites [offset, offset+length) of an existing image with `byte`, the way a VM
  // would write its disk (the Backend has no such verb: the engine never writes a
  // volume). RBD: rbd_write; local: pwrite on a raw file, qemu-io on a qcow2 overlay.
  std::function<void(const ImageRef& ref, uint64_t offset, uint64_t length, uint8_t byte)>
      write_bytes;
};

// Defined by the test executable.
Target MakeTarget();

constexpr uint64_t kMiB = 1024 * 1024;

// A name no other case, process or run uses: "ct-<pid>-<time>-<n>-<tag>".
inline std::string UniqueName(const std::string& tag) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t start = static_cast<uint64_t>(
      std::chrono::system_clock::now().time_since_epoch() / std::chrono::milliseconds(1) %
      100000000);
  return "ct-" + std::to_string(::getpid()) + "-" + std::to_string(start) + "-" +
         std::to_string(counter++) + "-" + tag;
}

// Deterministic bytes, never an all-zero 4 KiB block (so no writer may skip them).
inline std::string Pattern(uint64_t length, uint32_t seed) {
  std::string out(length, '\0');
  uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (uint64_t i = 0; i < length; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>((x & 0xff) | 1);
  }
  return out;
}

inline std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Reads [offset, offset+length) (or to the end) of an image or snapshot.
inline std::string ReadRange(Backend& backend, const ImageRef& ref, uint64_t offset,
                             uint64_t length, const std::optional<std::string>& snap = {}) {
  auto reader = backend.Open(ref, snap);
  std::string out;
  uint64_t end = std::min(reader->size(), offset + length);
  std::string buf(1 * kMiB, '\0');
  uint64_t pos = offset;
  while (pos < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
    size_t got = reader->Read(pos, {reinterpret_cast<std::byte*>(buf.data()), want});
    if (got == 0) break;
    out.append(buf.data(), got);
    pos += got;
  }
  return out;
}

inline std::string ReadAll(Backend& backend, const ImageRef& ref,
                           const std::optional<std::string>& snap = {}) {
  return ReadRange(backend, ref, 0, UINT64_MAX, snap);
}

inline bool AllZero(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == 0; });
}

// Writes `content` (in odd-sized pieces, to exercise buffering) as a new image.
inline storage::ImportStats CreateImage(Backend& backend, const ImageRef& ref,
                                        const std::string& content, uint64_t size = 0) {
  auto writer = backend.Create(ref, size ? size : content.size());
  size_t pos = 0;
  size_t piece = 65536 + 512;
  while (pos < content.size()) {
    size_t n = std::min(piece, content.size() - pos);
    writer->Append(Bytes(content.substr(pos, n)));
    pos += n;
  }
  return writer->Finish();
}

// Removes what a case made, children first (reverse order of Add), then purges the
// trash entries that came from those names. Best effort: the case's own assertions
// already ran.
class Scrub {
 public:
  explicit Scrub(Backend& backend) : backend_(backend) {}
  ~Scrub() {
    for (auto it = refs_.rbegin(); it != refs_.rend(); ++it) Drop(*it);
    for (int round = 0; round < 3; ++round) {
      try {
        for (const auto& entry : backend_.ListTrash()) {
          if (std::find(refs_.begin(), refs_.end(), entry.original) == refs_.end()) continue;
          try {
            backend_.PurgeTrash(entry);
          } catch (const std::exception&) {
          }
        }
      } catch (const std::exception&) {
      }
    }
  }
  Scrub(const Scrub&) = delete;
  Scrub& operator=(const Scrub&) = delete;

  const ImageRef& Add(ImageRef ref) {
    refs_.push_back(std::move(ref));
    return refs_.back();
  }

 private:
  void Drop(const ImageRef& ref) {
    try {
      if (!backend_.Exists(ref)) return;
      backend_.Remove(ref);
    } catch (const std::exception&) {
    }
  }
  Backend& backend_;
  std::vector<ImageRef> refs_;
};

// Checks that the statement throws cachemgr::Error with code `errc` (the statement is
// last so that it may contain commas).
#define CONTRACT_CHECK_ERRC(errc, ...)                                        \
  do {                                                                        \
    bool contract_thrown_ = false;                                            \
    try {                                                                     \
      __VA_ARGS__;                                                            \
    } catch (const ::cachemgr::Error& e) {                                    \
      contract_thrown_ = true;                                                \
      CHECK_MESSAGE(e.code() == (errc), "wrong code, message: " << e.what()); \
    }                                                                         \
    CHECK_MESSAGE(contract_thrown_, #__VA_ARGS__ " did not throw");           \
  } while (0)

// A base image: 1 MiB of data, 2 MiB hole, 1 MiB of data (4 MiB), written through
// Create(), with a protected snapshot "snap".
struct BaseImage {
  ImageRef ref;
  SnapRef snap;
  std::string content;
};

inline BaseImage MakeBase(Backend& backend, Scrub& scrub, uint32_t seed) {
  BaseImage base;
  base.ref = scrub.Add({backend.entry_pool(), UniqueName("base")});
  base.content = Pattern(1 * kMiB, seed) + std::string(2 * kMiB, '\0') + Pattern(1 * kMiB, seed + 7);
  CreateImage(backend, base.ref, base.content);
  base.snap = {base.ref, "snap"};
  backend.CreateSnapshot(base.snap);
  backend.ProtectSnapshot(base.snap);
  return base;
}

// ---------------------------------------------------------------------------------

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

}  // namespace cachemgr::contract

#include "shared_contract.h"  // IWYU pragma: export
