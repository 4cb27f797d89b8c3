// tests/contract/shared_contract.h: the part of the Backend contract that hosts sharing
// one pool (or root) rely on: tables every backend object sees alike, and the listing of
// images with their identities, and the pool's stamp. Included at the end of
// backend_contract.h.
#pragma once

#include <chrono>
#include <thread>

namespace cachemgr::contract {

TEST_CASE("contract: tables: empty until written; set, overwrite, erase; seen by every host") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  const std::string table = UniqueName("table");
  CHECK(b.ReadTable(table).empty());
  b.WriteTable(table, {{"k1", "v1"}, {"k2", "two words"}});
  CHECK(b.ReadTable(table) == std::map<std::string, std::string>{{"k1", "v1"}, {"k2", "two words"}});
  // Another backend object (another host would be the same) reads what this one wrote.
  auto t2 = MakeTarget();
  CHECK(t2.backend->ReadTable(table).at("k2") == "two words");
  t2.backend->WriteTable(table, {{"k1", "v1b"}, {"k3", ""}}, {"k2"});
  CHECK(b.ReadTable(table) == std::map<std::string, std::string>{{"k1", "v1b"}, {"k3", ""}});
  // Erasing a key that is not there is not an error; an empty write does nothing.
  b.WriteTable(table, {}, {"nope"});
  b.WriteTable(table, {});
  CHECK(b.ReadTable(table).size() == 2);
  // Tables are independent.
  CHECK(b.ReadTable(UniqueName("other")).empty());
  b.WriteTable(table, {}, {"k1", "k3"});
  CHECK(b.ReadTable(table).empty());
}

TEST_CASE("contract: tables: one key read alone, as ReadTable reads it") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  const std::string table = UniqueName("table");
  CHECK_FALSE(b.ReadTableValue(table, "k1").has_value());  // a table never written
  b.WriteTable(table, {{"k1", "v1"}, {"k2", ""}, {"k3", std::string(4096, 'z')}});
  CHECK(b.ReadTableValue(table, "k1") == std::optional<std::string>("v1"));
  CHECK(b.ReadTableValue(table, "k2") == std::optional<std::string>(""));
  CHECK(b.ReadTableValue(table, "k3") == std::optional<std::string>(std::string(4096, 'z')));
  CHECK_FALSE(b.ReadTableValue(table, "k4").has_value());
  auto t2 = MakeTarget();
  t2.backend->WriteTable(table, {{"k1", "v1b"}}, {"k2"});
  CHECK(b.ReadTableValue(table, "k1") == std::optional<std::string>("v1b"));
  CHECK_FALSE(b.ReadTableValue(table, "k2").has_value());
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.ReadTableValue(table, "../escape"));
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.ReadTableValue(".hidden", "k1"));
  for (const auto& [k, v] : b.ReadTable(table)) CHECK(b.ReadTableValue(table, k) == v);
}

TEST_CASE("contract: tables: many keys read back whole; bad names and large values refused") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  const std::string table = UniqueName("table");
  std::map<std::string, std::string> many;
  for (int i = 0; i < 1500; ++i) many["key" + std::to_string(i)] = std::to_string(i * 7);
  b.WriteTable(table, many);
  CHECK(b.ReadTable(table) == many);  // more than one page of keys
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.WriteTable(table, {{"../escape", "x"}}));
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.WriteTable("a/b", {{"k", "x"}}));
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument, b.ReadTable(".hidden"));
  CONTRACT_CHECK_ERRC(Errc::kInvalidArgument,
                      b.WriteTable(table, {{"big", std::string(4097, 'x')}}));
  std::vector<std::string> keys;
  for (const auto& [k, v] : many) keys.push_back(k);
  b.WriteTable(table, {}, keys);
  CHECK(b.ReadTable(table).empty());
}

// The pool's stamp once the backend gives one (local: once the folders' times are 2 s
// old); "" when it gives none within 5 s.
inline std::string SettledPoolStamp(Backend& b) {
  for (int i = 0; i < 20; ++i) {
    std::string stamp = b.PoolStamp(b.entry_pool());
    if (!stamp.empty()) return stamp;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return "";
}

TEST_CASE("contract: the pool stamp moves when an image is made, renamed or removed, and "
          "not when one is written or read") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  const ImageRef first = scrub.Add({b.entry_pool(), UniqueName("stamp")});
  CreateImage(b, first, Pattern(kMiB, 61));  // the pool (namespace) has an image
  const std::string before = SettledPoolStamp(b);
  REQUIRE_FALSE(before.empty());
  CHECK(SettledPoolStamp(b) == before);  // nothing happened: the same
  const ImageRef made = scrub.Add({b.entry_pool(), UniqueName("stamp")});
  CreateImage(b, made, Pattern(kMiB, 62));
  const std::string after_make = SettledPoolStamp(b);
  CHECK(after_make != before);
  // Read, and written the way a VM writes its disk: the names are as they were.
  CHECK(ReadAll(b, made) == Pattern(kMiB, 62));
  if (t.write_bytes) t.write_bytes(made, 0, 4096, 0x5a);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  CHECK(SettledPoolStamp(b) == after_make);
  const ImageRef renamed = scrub.Add({b.entry_pool(), UniqueName("stamp")});
  b.Rename(made, renamed.name);
  const std::string after_rename = SettledPoolStamp(b);
  CHECK(after_rename != after_make);
  b.Remove(renamed);
  const std::string after_remove = SettledPoolStamp(b);
  CHECK(after_remove != after_rename);
  CHECK(after_remove != before);
}

TEST_CASE("contract: the pool stamp moves whenever the pool's listing does: a base with a "
          "clone removed to the trash, the clone removed, the trash purged") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 63);
  const ImageRef clone = scrub.Add({b.entry_pool(), UniqueName("stamp-clone")});
  b.Clone(base.snap, clone);
  std::string stamp = SettledPoolStamp(b);
  REQUIRE_FALSE(stamp.empty());
  auto listing = b.ListIdentities(b.entry_pool());
  // After each step: a listing that changed comes with a stamp that changed.
  auto step = [&](const char* what) {
    CAPTURE(what);
    const std::string now = SettledPoolStamp(b);
    const auto listed = b.ListIdentities(b.entry_pool());
    if (listed != listing) CHECK(now != stamp);
    stamp = now;
    listing = listed;
  };
  const auto outcome = b.Remove(base.ref);
  if (t.linked_clones) CHECK(outcome == storage::RemoveOutcome::kTrashed);  // copies: removed
  step("base removed (to the trash while its clone uses it)");
  CHECK(b.Remove(clone) == storage::RemoveOutcome::kRemoved);
  step("clone removed");
  for (const auto& entry : b.ListTrash()) {
    if (entry.original == base.ref) CHECK(b.PurgeTrash(entry));
  }
  step("trash purged");
  CHECK(listing.count(base.ref.name) == 0);
  CHECK(listing.count(clone.name) == 0);
}

TEST_CASE("contract: ListIdentities lists each image with its Identity") {
  auto t = MakeTarget();
  auto& b = *t.backend;
  Scrub scrub(b);
  auto base = MakeBase(b, scrub, 8);
  ImageRef clone = scrub.Add({b.entry_pool(), UniqueName("clone")});
  b.Clone(base.snap, clone);
  const auto listed = b.ListIdentities(b.entry_pool());
  REQUIRE(listed.count(base.ref.name) == 1);
  REQUIRE(listed.count(clone.name) == 1);
  CHECK(listed.at(base.ref.name) == b.Identity(base.ref));
  CHECK(listed.at(clone.name) == b.Identity(clone));
  const auto names = b.List(b.entry_pool());
  for (const auto& [name, identity] : listed) {
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
  }
}

}  // namespace cachemgr::contract
