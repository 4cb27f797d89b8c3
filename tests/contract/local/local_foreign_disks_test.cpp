// Disks other tools made on a base, wherever under a pool's folder they sit and however
// their header names it: each keeps the base (moved to the trash for it, never unlinked
// under it), and a move to the trash a kill cut short is finished, never left behind.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
      {"json: flat filename", pool_dir / "inst-4" / "disk", R"(json:{"file.filename": "{}"})"},
      {"json: flattened two deep", pool_dir / "inst-5" / "disk",
       R"(json:{"driver": "raw", "file.driver": "raw", "file.file.filename": "{}"})"},
      {"json: flattened in a child", pool_dir / "inst-6" / "disk",
       R"(json:{"driver": "raw", "file": {"driver": "raw", "file.filename": "{}"}})"}};
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

TEST_CASE("a file: name qemu opens from its working directory keeps every base it may reach") {
  TempDir dir("local-foreign-cwd");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 34);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  const fs::path disk = b->PathOf({b->volume_pool(), "cwd-disk"});
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(base).string(), disk.string()}) == 0);
  // Relative to "/": what qemu run from "/" opens, whatever the overlay's folder.
  const std::string name = "file:" + b->PathOf(base).relative_path().string();
  REQUIRE(RunCommand({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", name,
                      disk.string()}) == 0);
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  // Rebased into the trash by an absolute name: it reads from any folder now.
  CHECK(QemuCompare(disk, "qcow2", src) == 0);
  CHECK_FALSE(b->PurgeTrash(b->ListTrash().at(0)));
}

TEST_CASE("what the scan cannot read keeps every file: a removal fails, naming it") {
  TempDir dir("local-foreign-unknown");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 35);
  const fs::path root = dir.path() / "root";
  auto b = MakeLocal(root);
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  // A disk deeper than the scan walks (a loop of bind mounts ends there).
  fs::path deep = b->PathOf({b->volume_pool(), "x"}).parent_path();
  for (int i = 0; i < 20; ++i) deep /= "d";
  fs::create_directories(deep);
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(base).string(), (deep / "disk").string()}) == 0);
  try {
    b->Remove(base);
    FAIL("removed");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kBackend);
    CHECK(std::string(e.what()).find("cannot be read") != std::string::npos);
    CHECK(std::string(e.what()).find("/d/d/d/") != std::string::npos);
  }
  CHECK(b->Exists(base));
  CHECK(QemuCompare(deep / "disk", "qcow2", src) == 0);
  fs::remove_all(b->PathOf({b->volume_pool(), "x"}).parent_path() / "d");
  CHECK(b->Remove(base) == storage::RemoveOutcome::kRemoved);
}

TEST_CASE("a header or folder the cache may not read keeps every file (run as another user)") {
  if (::getuid() != 0) return;  // needs to act as another user
  for (const std::string what : {"file", "folder"}) {
    CAPTURE(what);
    TempDir dir("local-foreign-unreadable");
    auto src = dir.path() / "source.raw";
    WriteRawImage(src, 4 * kMiB, 1 * kMiB, 36);
    const fs::path root = dir.path() / "root";
    ImageRef base{"_base", kBaseName};
    fs::path disk;
    {
      auto b = MakeLocal(root);
      base = {b->entry_pool(), kBaseName};
      Import(*b, src, base);
      const fs::path pool_dir = b->PathOf({b->volume_pool(), "x"}).parent_path();
      disk = what == "file" ? pool_dir / "disk" : pool_dir / "private" / "disk";
      fs::create_directories(disk.parent_path());
      REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                          b->PathOf(base).string(), disk.string()}) == 0);
    }
    // The cache runs as nobody and owns its root; the disk (or its folder) is root's alone.
    REQUIRE(RunCommand({"chown", "-R", "65534:65534", dir.path().string()}) == 0);
    REQUIRE(RunCommand({"chown", "-R", "0:0", what == "file" ? disk.string()
                                                             : disk.parent_path().string()}) == 0);
    fs::permissions(what == "file" ? disk : disk.parent_path(), fs::perms::owner_all);
    if (what == "file") fs::permissions(disk, fs::perms::owner_read | fs::perms::owner_write);
    if (what == "file") fs::permissions(disk, fs::perms::none);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(10);
      try {
        auto b = MakeLocal(root);
        b->Remove(base);
        _exit(1);  // removed
      } catch (const Error& e) {
        _exit(std::string(e.what()).find("cannot be read") != std::string::npos ? 0 : 2);
      } catch (...) {
        _exit(3);
      }
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(fs::exists(root / base.pool / base.name));
    CHECK(QemuCompare(disk, "qcow2", src) == 0);
  }
}

}  // namespace
}  // namespace cachemgr::test
