// The local backend's listings of a pool large enough that ListIdentities stats its
// files on several threads: every image once, each with its own Identity, and nothing
// that is not an image (folders, FIFOs, links to neither).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "contract/local/local_test_util.h"
#include "storage/local/local_backend.h"

namespace cachemgr::test {
namespace {

TEST_CASE("a pool of 20,000 images is listed whole, each with its Identity, and nothing else") {
  TempDir dir("local-listing");
  auto b = MakeLocal(dir.path() / "root");
  const std::string pool = b->entry_pool();
  const fs::path pool_dir = dir.path() / "root" / pool;
  fs::create_directories(pool_dir);
  // More names than one thread of the listing stats (8,192 each), and not a multiple.
  constexpr int kImages = 20'003;
  std::set<std::string> images;
  for (int i = 0; i < kImages; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "img-%05d", (i * 7919) % kImages);  // not made in order
    const int fd = ::open((pool_dir / name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    REQUIRE_MESSAGE(fd >= 0, name);
    ::close(fd);
    images.insert(name);
  }
  // What is not an image: a folder, a FIFO, a dangling link, a link to a folder, a dot file.
  fs::create_directory(pool_dir / "zz-folder");
  REQUIRE(::mkfifo((pool_dir / "zz-fifo").c_str(), 0600) == 0);
  fs::create_symlink(dir.path() / "nowhere", pool_dir / "zz-dangling");
  fs::create_directory_symlink(pool_dir / "zz-folder", pool_dir / "zz-folder-link");
  WriteFile(pool_dir / ".hidden", "x");

  const auto listed = b->ListIdentities(pool);
  std::set<std::string> names;
  for (const auto& [name, identity] : listed) names.insert(name);
  CHECK(names == images);
  size_t wrong = 0;
  std::string first_wrong;
  std::set<std::string> identities;
  for (const auto& [name, identity] : listed) {
    identities.insert(identity);
    if (identity != b->Identity({pool, name})) {
      if (wrong++ == 0) first_wrong = name;
    }
  }
  CHECK_MESSAGE(wrong == 0, wrong << " identities differ from Identity, first " << first_wrong);
  CHECK(identities.size() == images.size());  // each file its own

  const auto list = b->List(pool);
  CHECK(std::is_sorted(list.begin(), list.end()));
  CHECK(std::set<std::string>(list.begin(), list.end()) == images);
}

TEST_CASE("List names a link to an image in the pool, not a link to anything else") {
  TempDir dir("local-listing-links");
  auto b = MakeLocal(dir.path() / "root");
  const std::string pool = b->entry_pool();
  const fs::path pool_dir = dir.path() / "root" / pool;
  fs::create_directories(pool_dir);
  WriteFile(pool_dir / "img", "x");
  fs::create_symlink(pool_dir / "img", pool_dir / "img-link");
  fs::create_symlink(dir.path() / "nowhere", pool_dir / "dangling");
  fs::create_directory(pool_dir / "folder");
  fs::create_directory_symlink(pool_dir / "folder", pool_dir / "folder-link");
  REQUIRE(::mkfifo((pool_dir / "fifo").c_str(), 0600) == 0);
  CHECK(b->List(pool) == std::vector<std::string>{"img", "img-link"});
}

TEST_CASE("names the cache cannot make are listed, files and links alike, and fail nothing") {
  TempDir dir("local-listing-odd");
  auto b = MakeLocal(dir.path() / "root");
  const std::string pool = b->entry_pool();
  const fs::path pool_dir = dir.path() / "root" / pool;
  fs::create_directories(pool_dir);
  // Outside [A-Za-z0-9._-], longer than 200, a leading '-': ValidateName refuses each.
  const std::vector<std::string> odd = {"has space", "-dash", "caf\xc3\xa9", std::string(230, 'x'),
                                        "semi;colon", "tab\tname"};
  for (const auto& n : odd) {
    CHECK_THROWS(storage::ValidateName("image", n));
    WriteFile(pool_dir / n, "x");
  }
  WriteFile(pool_dir / "img", "x");
  WriteFile(dir.path() / "outside", "x");
  fs::create_symlink(pool_dir / "img", pool_dir / "link to img");
  fs::create_symlink(dir.path() / "outside", pool_dir / "link;out");
  fs::create_symlink(dir.path() / "nowhere", pool_dir / "dangling link");
  std::set<std::string> expected(odd.begin(), odd.end());
  expected.insert({"img", "link to img", "link;out"});

  std::map<std::string, std::string> listed;
  REQUIRE_NOTHROW(listed = b->ListIdentities(pool));
  std::set<std::string> names;
  for (const auto& [name, identity] : listed) names.insert(name);
  CHECK(names == expected);
  // A link's identity is the link's own (as Identity() gives it for a valid name).
  CHECK(listed.at("link to img") != listed.at("img"));
  CHECK(listed.at("img") == b->Identity({pool, "img"}));
  std::vector<std::string> list;
  REQUIRE_NOTHROW(list = b->List(pool));
  CHECK(std::set<std::string>(list.begin(), list.end()) == expected);
}

}  // namespace
}  // namespace cachemgr::test
