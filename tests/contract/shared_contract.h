// tests/contract/shared_contract.h: the part of the Backend contract that hosts sharing
// one pool (or root) rely on: tables every backend object sees alike, and the listing of
// images with their identities. Included at the end of backend_contract.h.
#pragma once

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
