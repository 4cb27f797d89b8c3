// The names of RBD images as the backend reads and takes them through their objects
// (rbd_headers.h): ids, metadata, renames, and what a killed rename leaves, checked
// against librbd and the rados tool on the "ceph" fixture's cluster.
#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cachemgr/error.h"
#include "rbd_target.h"
#include "rbd_test_helpers.h"
#include "storage/factory.h"
#include "support/test_util.h"

namespace cachemgr {
namespace {

using namespace rbdtest;  // NOLINT(google-build-using-namespace): the tests' helpers

TEST_CASE("a name a killed rename left bound to a removed image is unbound, and only that") {
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  ImageRef staging{"volumes", Unique("staging")};
  ImageRef name{"volumes", Unique("name")};
  Import(*b, staging, Data(kMiB, 5));
  const std::string id = b->Identity(staging);
  // The first step of a rename: the new name's id object, written before the directory
  // is rebound. Killed there; then the staging image is removed by the pass.
  test::TempDir tmp("dangling");
  const std::string file = (tmp / "id-object").string();
  auto cmd = [&](const std::vector<std::string>& args, std::string* out = nullptr) {
    return Rados(options, args, out);
  };
  REQUIRE(cmd({"get", "rbd_id." + staging.name, file}) == 0);
  REQUIRE(cmd({"put", "rbd_id." + name.name, file}) == 0);
  // While the image exists, the name is not dangling: nothing is touched.
  CHECK_FALSE(b->RemoveDanglingName(name, id));
  b->Remove(staging);
  CHECK_FALSE(b->Exists(name));
  CHECK(Catch([&] { Import(*b, name, Data(kMiB, 6)); }).code() == Errc::kAlreadyExists);
  // Another identity: not the cache's binding, left as it is.
  CHECK_FALSE(b->RemoveDanglingName(name, "1234abcd"));
  CHECK(cmd({"stat", "rbd_id." + name.name}) == 0);
  // The row's own identity: unbound, and the name can be made again.
  CHECK(b->RemoveDanglingName(name, id));
  CHECK(cmd({"stat", "rbd_id." + name.name}) != 0);
  Import(*b, name, Data(kMiB, 6));
  CHECK(b->Exists(name));
  b->Remove(name);
}

TEST_CASE("identity and metadata read from the image's objects agree with librbd's") {
  // The backend reads an image's id and metadata, and writes its metadata, through the
  // id and header objects without opening the image: `rbd` (librbd) must see the same.
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  std::vector<std::string> rbd{"rbd", "--conf", options.conf};
  auto spec = [&](const ImageRef& ref) {
    return ref.pool + "/" + (options.namespace_.empty() ? "" : options.namespace_ + "/") +
           ref.name;
  };
  auto cmd = [&](std::vector<std::string> extra, std::string* out = nullptr) {
    auto argv = rbd;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return test::RunCommand(argv, out);
  };
  ImageRef parent{"volumes", Unique("meta-parent")};
  ImageRef child{"volumes", Unique("meta-child")};
  Import(*b, parent, Data(kMiB, 7));
  const SnapRef snap{parent, "s"};
  b->CreateSnapshot(snap);
  b->ProtectSnapshot(snap);
  b->Clone(snap, child);
  for (const auto& ref : {parent, child}) {
    CAPTURE(ref.name);
    std::string info;
    REQUIRE(cmd({"info", "--format", "json", spec(ref)}, &info) == 0);
    CHECK(b->Identity(ref) == nlohmann::json::parse(info).at("id").get<std::string>());
    // Written here, read by librbd.
    b->SetMetadata(ref, "cachemgr.test", "entry 1a2b c3");
    std::string got;
    REQUIRE(cmd({"image-meta", "get", spec(ref), "cachemgr.test"}, &got) == 0);
    CHECK(got.substr(0, got.find_last_not_of('\n') + 1) == "entry 1a2b c3");
    // Written by librbd, read here; a second write replaces the first.
    REQUIRE(cmd({"image-meta", "set", spec(ref), "other.key", "v w"}) == 0);
    b->SetMetadata(ref, "cachemgr.test", "volume 9");
    auto meta = b->GetMetadata(ref);
    CHECK(meta["other.key"] == "v w");
    CHECK(meta["cachemgr.test"] == "volume 9");
    b->RemoveMetadata(ref, "other.key");
    CHECK(b->GetMetadata(ref).count("other.key") == 0);
  }
  // The identity follows the image across a rename; the old name has none.
  const std::string id = b->Identity(child);
  ImageRef renamed{"volumes", Unique("meta-renamed")};
  b->Rename(child, renamed.name);
  CHECK(b->Identity(renamed) == id);
  CHECK(b->GetMetadata(renamed)["cachemgr.test"] == "volume 9");
  CHECK_FALSE(b->Exists(child));
  // librbd sees the rename (done through the objects) as its own: the new name opens and
  // is listed, the old one is neither.
  std::string listed;
  REQUIRE(cmd({"ls", options.namespace_.empty() ? "volumes" : "volumes/" + options.namespace_},
              &listed) == 0);
  CHECK(Contains(listed, renamed.name + "\n"));
  CHECK_FALSE(Contains(listed, child.name + "\n"));
  std::string info;
  REQUIRE(cmd({"info", "--format", "json", spec(renamed)}, &info) == 0);
  CHECK(nlohmann::json::parse(info).at("id").get<std::string>() == id);
  CHECK(cmd({"info", spec(child)}) != 0);
  // A name taken by another image is refused and nothing moves; then it works back.
  CHECK(Catch([&] { b->Rename(renamed, parent.name); }).code() == Errc::kAlreadyExists);
  CHECK(b->Identity(renamed) == id);
  CHECK(b->Exists(parent));
  b->Rename(renamed, child.name);
  CHECK(b->Identity(child) == id);
  b->Rename(child, renamed.name);
  CHECK(Catch([&] { b->Identity(child); }).code() == Errc::kNotFound);
  CHECK(Catch([&] { b->GetMetadata(child); }).code() == Errc::kNotFound);
  // Nothing at a name: not found, and no object is made by the attempt to write.
  CHECK(Catch([&] { b->SetMetadata(child, "cachemgr.test", "x"); }).code() == Errc::kNotFound);
  CHECK_FALSE(b->Exists(child));
  // A removed image's header is not written again through a stale id either.
  b->Remove(renamed);
  CHECK(Catch([&] { b->SetMetadata(renamed, "k", "v"); }).code() == Errc::kNotFound);
  CHECK(Rados(options, {"stat", "rbd_header." + id}) != 0);
  b->UnprotectSnapshot(snap);
  b->RemoveSnapshot(snap);
  b->Remove(parent);
}

TEST_CASE("reads started side by side answer as one after the other; a rename takes no name") {
  // Exists, HasIdentity and Rename start the reads that usually come next beside the
  // first (rbd_headers.h, NameGuess): whatever the guess, the answers must be the ones
  // the reads in turn give.
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  auto cmd = [&](const std::vector<std::string>& args, std::string* out = nullptr) {
    return Rados(options, args, out);
  };
  test::TempDir tmp("guess");
  ImageRef a{"volumes", Unique("guess-a")};
  ImageRef other{"volumes", Unique("guess-b")};
  ImageRef absent{"volumes", Unique("guess-none")};
  Import(*b, a, Data(kMiB, 11));
  Import(*b, other, Data(kMiB, 12));
  const std::string id = b->Identity(a);
  const std::string other_id = b->Identity(other);
  REQUIRE(id != other_id);
  // The right identity, another image's, one no image has, and a name with nothing.
  CHECK(b->HasIdentity(a, id));
  CHECK_FALSE(b->HasIdentity(a, other_id));
  CHECK_FALSE(b->HasIdentity(a, "0000dead"));
  CHECK_FALSE(b->HasIdentity(absent, id));
  CHECK_FALSE(b->Exists(absent));
  CHECK(b->Exists(a));
  // A name bound to a removed image (a killed rename's leftover): no image, whatever the
  // guess, and its identity is not had.
  const std::string id_file = (tmp / "id").string();
  REQUIRE(cmd({"get", "rbd_id." + other.name, id_file}) == 0);
  ImageRef dangling{"volumes", Unique("guess-dangling")};
  REQUIRE(cmd({"put", "rbd_id." + dangling.name, id_file}) == 0);
  CHECK(b->HasIdentity(dangling, other_id));  // bound to a whole image: it is that image
  b->Remove(other);
  CHECK_FALSE(b->Exists(dangling));
  CHECK_FALSE(b->HasIdentity(dangling, other_id));
  CHECK(b->RemoveDanglingName(dangling, other_id));
  // A rename onto a name any binding holds is refused, and nothing moves.
  REQUIRE(cmd({"put", "rbd_id." + dangling.name, id_file}) == 0);
  CHECK(Catch([&] { b->Rename(a, dangling.name); }).code() == Errc::kAlreadyExists);
  CHECK(b->HasIdentity(a, id));
  CHECK(b->RemoveDanglingName(dangling, other_id));
  // A format-1 header at the name holds it too: refused, the source left as it was, and
  // the id object the attempt made beside the look taken back.
  ImageRef v1{"volumes", Unique("guess-v1")};
  REQUIRE(cmd({"put", v1.name + ".rbd", id_file}) == 0);
  CHECK(Catch([&] { b->Rename(a, v1.name); }).code() == Errc::kAlreadyExists);
  CHECK(cmd({"stat", "rbd_id." + v1.name}) != 0);
  CHECK(b->HasIdentity(a, id));
  CHECK(ReadAll(*b, a) == Data(kMiB, 11));
  REQUIRE(cmd({"rm", v1.name + ".rbd"}) == 0);
  // Once free, the name is taken, and the identity follows the image.
  b->Rename(a, v1.name);
  CHECK(b->HasIdentity(v1, id));
  CHECK_FALSE(b->HasIdentity(a, id));
  CHECK_FALSE(b->Exists(a));
  b->Remove(v1);
}

// Ceph's encoding of a string (32-bit little-endian length, then the bytes): an id
// object's content, and a directory value.
std::string Encoded(const std::string& v) {
  std::string out;
  const auto n = static_cast<uint32_t>(v.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + v;
}

TEST_CASE("anything that binds a name takes it, and a dangling binding goes only if it is ours") {
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  auto cmd = [&](const std::vector<std::string>& args, std::string* out = nullptr) {
    return Rados(options, args, out);
  };
  test::TempDir tmp("bindings");
  int files = 0;
  auto file_of = [&](const std::string& bytes) {
    const std::string path = (tmp / ("f" + std::to_string(files++))).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  };
  auto put = [&](const std::string& oid, const std::string& bytes) {
    REQUIRE(cmd({"put", oid, file_of(bytes)}) == 0);
  };
  // A directory entry as librbd writes one: both keys.
  auto list_in_directory = [&](const std::string& name, const std::string& id) {
    REQUIRE(cmd({"setomapval", "rbd_directory", "name_" + name, "--input-file",
                 file_of(Encoded(id))}) == 0);
    REQUIRE(cmd({"setomapval", "rbd_directory", "id_" + id, "--input-file",
                 file_of(Encoded(name))}) == 0);
  };
  auto directory_keys = [&] {
    std::string keys;
    REQUIRE(cmd({"listomapkeys", "rbd_directory"}, &keys) == 0);
    return keys;
  };
  ImageRef a{"volumes", Unique("bind-a")};
  Import(*b, a, Data(kMiB, 21));
  const std::string id = b->Identity(a);

  ImageRef dangling{"volumes", Unique("bind-dangling")};
  put("rbd_id." + dangling.name, Encoded("00dead00"));
  ImageRef garbage{"volumes", Unique("bind-garbage")};
  put("rbd_id." + garbage.name, "ab");
  ImageRef empty_id{"volumes", Unique("bind-empty")};
  put("rbd_id." + empty_id.name, "");
  ImageRef listed{"volumes", Unique("bind-listed")};
  list_in_directory(listed.name, "0foreign0");
  ImageRef v1{"volumes", Unique("bind-v1")};
  put(v1.name + ".rbd", "not a header");
  ImageRef free_name{"volumes", Unique("bind-free")};

  // Taken, whether or not an image opens there; free only when nothing binds it.
  CHECK(b->NameTaken(a));
  for (const auto& ref : {dangling, garbage, empty_id, listed, v1}) {
    CAPTURE(ref.name);
    CHECK(b->NameTaken(ref));
    // A rename onto it is refused and binds nothing there, not even for a moment.
    CHECK(Catch([&] { b->Rename(a, ref.name); }).code() == Errc::kAlreadyExists);
    CHECK(b->HasIdentity(a, id));
  }
  CHECK_FALSE(b->NameTaken(free_name));
  CHECK(cmd({"stat", "rbd_id." + listed.name}) != 0);
  CHECK(cmd({"stat", "rbd_id." + v1.name}) != 0);

  // What a rename killed after its first step leaves, beside what is someone else's: the
  // name's id object bound to the cache's (now removed) image.
  const std::string dead = "0cache0dead";
  put("rbd_id." + listed.name, Encoded(dead));
  put("rbd_id." + v1.name, Encoded(dead));
  // Not the cache's identity: nothing goes.
  CHECK_FALSE(b->RemoveDanglingName(listed, "0other0"));
  CHECK(cmd({"stat", "rbd_id." + listed.name}) == 0);
  // The cache's: its id object goes, and only it. The directory entry binding the name to
  // another image and the format-1 header stay as they were.
  CHECK(b->RemoveDanglingName(listed, dead));
  CHECK(cmd({"stat", "rbd_id." + listed.name}) != 0);
  const std::string keys = directory_keys();
  CHECK(Contains(keys, "name_" + listed.name + "\n"));
  CHECK(Contains(keys, "id_0foreign0\n"));
  CHECK(b->RemoveDanglingName(v1, dead));
  CHECK(cmd({"stat", "rbd_id." + v1.name}) != 0);
  CHECK(cmd({"stat", v1.name + ".rbd"}) == 0);
  // An id object rebound to a live image is no leftover.
  CHECK_FALSE(b->RemoveDanglingName(dangling, id));
  CHECK(cmd({"stat", "rbd_id." + dangling.name}) == 0);

  // A staging name's directory entry with no id object (a create killed between the
  // two): removed when its image is gone, whatever id it names; kept while it lives.
  ImageRef staging{"volumes", Unique("bind-staging")};
  list_in_directory(staging.name, "0stage0dead");
  CHECK(b->RemoveDanglingName(staging, ""));
  CHECK_FALSE(Contains(directory_keys(), "name_" + staging.name + "\n"));
  CHECK_FALSE(b->NameTaken(staging));
  // A directory entry left without its id object (a clean-up killed between the two, or
  // a rename killed between them): still the cache's, and removed; beside an id object of
  // another image's, only the entry goes.
  ImageRef half{"volumes", Unique("bind-half")};
  list_in_directory(half.name, dead);
  CHECK(b->NameTaken(half));
  CHECK_FALSE(b->RemoveDanglingName(half, "0other0"));
  CHECK(Contains(directory_keys(), "name_" + half.name + "\n"));
  CHECK(b->RemoveDanglingName(half, dead));
  CHECK_FALSE(Contains(directory_keys(), "name_" + half.name + "\n"));
  CHECK_FALSE(Contains(directory_keys(), "id_" + dead + "\n"));
  CHECK_FALSE(b->NameTaken(half));
  list_in_directory(half.name, dead);
  put("rbd_id." + half.name, Encoded(id));  // a's id: a live image
  CHECK(b->RemoveDanglingName(half, dead));
  CHECK_FALSE(Contains(directory_keys(), "name_" + half.name + "\n"));
  CHECK(cmd({"stat", "rbd_id." + half.name}) == 0);
  CHECK(cmd({"rm", "rbd_id." + half.name}) == 0);
  // (a's own name: its image lives, nothing goes)
  CHECK_FALSE(b->RemoveDanglingName(a, ""));
  CHECK(b->HasIdentity(a, id));

  // A clone that takes its name in one call (a hit) is refused by every binding as well,
  // with nothing made at the name, the binding as it was, and the clone undone.
  const SnapRef snap{a, "s"};
  b->CreateSnapshot(snap);
  b->ProtectSnapshot(snap);
  list_in_directory(listed.name, "0foreign0");  // (its id object went above)
  for (const auto& ref : {dangling, garbage, listed, v1}) {
    CAPTURE(ref.name);
    ImageRef staging_vol{"volumes", Unique("bind-clone")};
    CHECK(Catch([&] {
            b->CloneInPlace(snap, staging_vol, ref, 0, [](const std::string& clone_id) {
              return std::map<std::string, std::string>{{"cachemgr.mark", "volume " + clone_id}};
            });
          }).code() == Errc::kAlreadyExists);
    CHECK_FALSE(b->Exists(staging_vol));
    CHECK(b->NameTaken(ref));
  }
  CHECK(cmd({"stat", "rbd_id." + listed.name}) != 0);
  CHECK(cmd({"stat", "rbd_id." + v1.name}) != 0);
  CHECK(cmd({"stat", v1.name + ".rbd"}) == 0);
  CHECK(Contains(directory_keys(), "name_" + listed.name + "\n"));
  CHECK(b->Children(snap).empty());
  b->UnprotectSnapshot(snap);
  b->RemoveSnapshot(snap);

  for (const auto& oid : {"rbd_id." + dangling.name, "rbd_id." + garbage.name,
                          "rbd_id." + empty_id.name, v1.name + ".rbd"}) {
    CHECK(cmd({"rm", oid}) == 0);
  }
  CHECK(cmd({"rmomapkey", "rbd_directory", "name_" + listed.name}) == 0);
  CHECK(cmd({"rmomapkey", "rbd_directory", "id_0foreign0"}) == 0);
  b->Remove(a);
}

}  // namespace
}  // namespace cachemgr
