// What the local backend did not make, under its root: folders of its own replaced by
// links, and files planted where its own live, with names like its own. None is
// followed, removed or read as the cache's; the passes go on past them.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>

#include "cachemgr/error.h"
#include "contract/local/local_test_util.h"
#include "storage/local/local_backend.h"

namespace cachemgr::test {
namespace {

bool Names(const std::vector<storage::Leftover>& found, const fs::path& path) {
  return std::any_of(found.begin(), found.end(),
                     [&](const storage::Leftover& l) { return fs::path(l.path) == path; });
}

TEST_CASE("a folder of the cache's own that is a symlink is refused, and nothing is written "
          "through it") {
  for (const std::string sub : {".backing", "_base", "volumes", "_base/.meta", ".state", ".locks",
                                ".trash", ".tmp"}) {
    CAPTURE(sub);
    TempDir dir("local-own-link");
    const fs::path root = dir.path() / "root";
    MakeLocal(root);  // made and marked
    const fs::path outside = dir.path() / "outside";
    fs::create_directories(outside);
    WriteFile(outside / "precious", "data");
    fs::remove_all(root / sub);
    fs::create_directory_symlink(outside, root / sub);
    try {
      MakeLocal(root);
      FAIL("the backend opened with " << sub << " a symlink");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::kBackend);
      CHECK(std::string(e.what()).find(sub) != std::string::npos);
      CHECK(std::string(e.what()).find("symlink") != std::string::npos);
    }
    CHECK(ReadFile(outside / "precious") == "data");
    CHECK(std::distance(fs::directory_iterator(outside), fs::directory_iterator{}) == 1);
  }
}

TEST_CASE("a table folder that is a symlink is neither read nor written through") {
  TempDir dir("local-table-link");
  auto b = MakeLocal(dir.path() / "root");
  const fs::path outside = dir.path() / "outside";
  fs::create_directories(outside);
  WriteFile(outside / "k", "v");
  fs::create_directory_symlink(outside, dir.path() / "root" / ".state" / "t");
  CHECK_THROWS(b->ReadTable("t"));
  CHECK_THROWS(b->WriteTable("t", {{"k2", "v2"}}, {}));
  CHECK_FALSE(fs::exists(outside / "k2"));
}

TEST_CASE("files planted in .backing are not taken for stable links") {
  BaseWithClone f("local-backing-planted", 4 * kMiB, kMiB, 21);
  auto& [dir, src, b, base, v, backing] = f;
  const fs::path links = dir.path() / "root" / ".backing";
  // A name that is no inode number, and a number that is not its file's inode.
  WriteFile(links / "notes.txt", "mine");
  WriteFile(links / "99999999", "mine too");
  REQUIRE(StatOf(links / "99999999").st_ino != 99999999);
  const auto dry = b->SweepTemporaries(true);
  CHECK_FALSE(Names(dry, links / "notes.txt"));
  CHECK_FALSE(Names(dry, links / "99999999"));
  b->SweepTemporaries(false);
  // Emptying the trash sweeps the stable links too: still not these.
  CHECK(b->Remove(v) == storage::RemoveOutcome::kRemoved);
  b->Remove(base);
  for (const auto& t : b->ListTrash()) b->PurgeTrash(t);
  b->SweepTemporaries(false);
  CHECK(ReadFile(links / "notes.txt") == "mine");
  CHECK(ReadFile(links / "99999999") == "mine too");
  CHECK_FALSE(fs::exists(backing));  // the cache's own link went
}

TEST_CASE("foreign folders and records in the trash are left alone, and passes go on") {
  BaseWithClone f("local-trash-foreign", 4 * kMiB, kMiB, 22);
  auto& [dir, src, b, base, v, backing] = f;
  const fs::path trash = dir.path() / "root" / ".trash";
  // Not a trash id; a trash id whose record is not one; an empty folder with a trash id
  // (as a kill leaves one) is the cache's.
  fs::create_directories(trash / "foreigndir");
  fs::create_directories(trash / "zz");
  WriteFile(trash / "zz" / "entry.json", R"({"note":"x"})");
  const fs::path odd = trash / (kBaseName + ".0123456789ab");
  fs::create_directories(odd);
  WriteFile(odd / "entry.json", R"({"original": ["not", "an", "object"]})");
  const fs::path array = trash / (kBaseName + ".abcdefabcdef");
  fs::create_directories(array);
  WriteFile(array / "entry.json", "[1, 2]");
  const fs::path left = trash / (kBaseName + ".aaaaaaaaaaaa");
  fs::create_directories(left);

  // The real entry goes to the trash beside them.
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  std::vector<storage::TrashEntry> listed;
  REQUIRE_NOTHROW(listed = b->ListTrash());
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].original == base);
  const auto found = b->SweepTemporaries(false);
  CHECK(Names(found, left));
  CHECK_FALSE(fs::exists(left));
  for (const auto& p : {trash / "foreigndir", trash / "zz", odd, array}) {
    CAPTURE(p);
    CHECK_FALSE(Names(found, p));
    CHECK(fs::exists(p));
  }
  CHECK(ReadFile(trash / "zz" / "entry.json") == R"({"note":"x"})");

  // A file someone put into the cache's own trash folder stays when the image is purged.
  const fs::path ours = trash / listed[0].id;
  WriteFile(ours / "theirs.txt", "keep");
  CHECK(b->Remove(v) == storage::RemoveOutcome::kRemoved);
  CHECK(b->PurgeTrash(listed[0]));
  CHECK_FALSE(fs::exists(ours / "image"));
  CHECK(ReadFile(ours / "theirs.txt") == "keep");
}

TEST_CASE("a sidecar is swept only when it reads whole as one of the cache's") {
  TempDir dir("local-sidecar-foreign");
  auto b = MakeLocal(dir.path() / "root");
  const fs::path meta = dir.path() / "root" / "volumes" / ".meta";
  WriteFile(meta / "app.json", R"({"schema":"my app"})");
  WriteFile(meta / "one.json", R"({"schema":1})");
  WriteFile(meta / "text.json", R"({"schema":1, "format": "raw", "note": "almost"})");
  // Every field of one, and one more: not what the backend writes.
  WriteFile(meta / "extra.json",
            R"({"schema":1,"format":"raw","metadata":{},"snapshots":[],"parent":null,"c":1})");
  // One as the backend writes them, whose image is gone: the cache's leftover.
  WriteFile(meta / "gone.json",
            R"({"schema":1,"format":"raw","metadata":{},"snapshots":[],"parent":null})");
  const auto found = b->SweepTemporaries(false);
  CHECK(Names(found, meta / "gone.json"));
  CHECK_FALSE(fs::exists(meta / "gone.json"));
  for (const char* name : {"app.json", "one.json", "text.json", "extra.json"}) {
    CAPTURE(name);
    CHECK(fs::exists(meta / name));
    CHECK_FALSE(Names(found, meta / name));
  }
}

TEST_CASE("folders the backend does not write temporaries in are not swept") {
  TempDir dir("local-foreign-folders");
  auto b = MakeLocal(dir.path() / "root");
  const fs::path root = dir.path() / "root";
  const std::string sidecar =
      R"({"schema":1,"format":"raw","metadata":{},"snapshots":[],"parent":null})";
  const std::vector<fs::path> planted = {
      root / "operator" / ".tmp-notes-abc123", root / "operator" / "sub" / ".tmp-data-QWERTY",
      root / "operator" / ".meta" / "a.json",  root / ".locks" / ".tmp-x-abc123",
      root / ".trash" / "notes" / ".tmp-y-abc123", root / "volumes" / "sub" / ".tmp-z-abc123"};
  for (const auto& p : planted) {
    fs::create_directories(p.parent_path());
    WriteFile(p, p.extension() == ".json" ? sidecar : "mine");
  }
  // The cache's own: a dead writer's temporary in a pool.
  WriteFile(root / "volumes" / ".tmp-vol-XXdead", "dead");
  const auto found = b->SweepTemporaries(false);
  CHECK(Names(found, root / "volumes" / ".tmp-vol-XXdead"));
  for (const auto& p : planted) {
    CAPTURE(p);
    CHECK(fs::exists(p));
    CHECK_FALSE(Names(found, p));
  }
}

TEST_CASE("a file at a new image's sidecar name is replaced only when it is a sidecar left "
          "behind") {
  TempDir dir("local-sidecar-taken");
  auto b = MakeLocal(dir.path() / "root");
  const fs::path meta = dir.path() / "root" / "volumes" / ".meta";
  WriteFile(meta / "nv1.json", R"({"foreign":true})");
  try {
    b->Create({b->volume_pool(), "nv1"}, kMiB)->Finish();
    FAIL("made over a foreign file");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kAlreadyExists);
    CHECK(std::string(e.what()).find("nv1.json") != std::string::npos);
  }
  CHECK(ReadFile(meta / "nv1.json") == R"({"foreign":true})");
  // Shaped as one, with a field the backend never writes: someone's too.
  const std::string extra =
      R"({"schema":1,"format":"raw","metadata":{},"snapshots":[],"parent":null,"mine":1})";
  WriteFile(meta / "nv3.json", extra);
  CHECK_THROWS(b->Create({b->volume_pool(), "nv3"}, kMiB)->Finish());
  CHECK(ReadFile(meta / "nv3.json") == extra);
  CHECK_FALSE(b->Exists({b->volume_pool(), "nv1"}));
  // One as a kill leaves it (its image never linked): the name is free.
  WriteFile(meta / "nv2.json",
            R"({"schema":1,"format":"raw","metadata":{},"snapshots":[],"parent":null})");
  b->Create({b->volume_pool(), "nv2"}, kMiB)->Finish();
  CHECK(b->Exists({b->volume_pool(), "nv2"}));
}

TEST_CASE("a sidecar whose writer holds it is never replaced: its name is being taken") {
  TempDir dir("local-sidecar-held");
  auto b = MakeLocal(dir.path() / "root");
  const fs::path meta = dir.path() / "root" / "volumes" / ".meta";
  const std::string text =
      R"({"schema":1,"format":"qcow2","metadata":{"theirs":"1"},"snapshots":[],"parent":null})";
  WriteFile(meta / "taken.json", text);
  // As SaveNew leaves it between writing a sidecar and linking its image: locked.
  const int held = ::open((meta / "taken.json").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX) == 0);
  auto base = SnapAndProtect(*b, [&] {
    ImageRef e{b->entry_pool(), "e"};
    b->Create(e, kMiB)->Finish();
    return e;
  }());
  const ImageRef taken{b->volume_pool(), "taken"};
  for (int how = 0; how < 3; ++how) {
    CAPTURE(how);
    try {
      if (how == 0) b->Create(taken, kMiB)->Finish();
      if (how == 1) b->Clone(base, taken);
      if (how == 2) b->CloneInPlace(base, {b->volume_pool(), "staging-x"}, taken, 0, {});
      FAIL("made over a sidecar its writer holds");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::kAlreadyExists);
    }
    CHECK(ReadFile(meta / "taken.json") == text);
    CHECK_FALSE(b->Exists(taken));
  }
  // Nor does a remove of the name take it (the image is not there yet), or a rename onto
  // it; the sweep passes it by too.
  CHECK_THROWS(b->Remove(taken));
  CHECK(ReadFile(meta / "taken.json") == text);
  const ImageRef other{b->volume_pool(), "other"};
  b->Create(other, kMiB)->Finish();
  try {
    b->Rename(other, "taken");
    FAIL("renamed over a sidecar its writer holds");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kAlreadyExists);
  }
  CHECK(b->Exists(other));
  CHECK_FALSE(Names(b->SweepTemporaries(false), meta / "taken.json"));
  CHECK(ReadFile(meta / "taken.json") == text);
  // Its writer gone (the lock free, no image): a leftover, and the name is free.
  ::close(held);
  b->Clone(base, taken);
  CHECK(b->Exists(taken));
  CHECK(b->GetMetadata(taken).empty());
  // A remove of an absent name takes a leftover sidecar, never a file not the cache's.
  WriteFile(meta / "gone.json",
            R"({"schema":1,"format":"raw","metadata":{},"snapshots":[],"parent":null})");
  WriteFile(meta / "theirs.json", R"({"schema":"their app"})");
  CHECK_THROWS(b->Remove({b->volume_pool(), "gone"}));
  CHECK_THROWS(b->Remove({b->volume_pool(), "theirs"}));
  CHECK_FALSE(fs::exists(meta / "gone.json"));
  CHECK(ReadFile(meta / "theirs.json") == R"({"schema":"their app"})");
}

TEST_CASE("hosts racing to make one name: one image appears, with its own sidecar") {
  TempDir dir("local-sidecar-race");
  const fs::path root = dir.path() / "root";
  auto b = MakeLocal(root);
  const ImageRef e{b->entry_pool(), "e"};
  Import(
      *b,
      [&] {
        const fs::path raw = dir.path() / "raw";
        std::string data(kMiB, '\0');
        for (size_t i = 0; i < data.size(); i += 4096) data[i] = static_cast<char>('a' + i % 26);
        WriteFile(raw, data);
        return raw;
      }(),
      e);
  const auto base = SnapAndProtect(*b, e);
  const auto want = b->Stat(e).size;
  constexpr int kHosts = 4;
  std::vector<std::unique_ptr<LocalBackend>> hosts;
  for (int h = 0; h < kHosts; ++h) hosts.push_back(MakeLocal(root));
  for (int round = 0; round < 25; ++round) {
    CAPTURE(round);
    const ImageRef name{b->volume_pool(), "v" + std::to_string(round)};
    std::atomic<int> winners{0};
    std::atomic<int> others{0};
    std::vector<std::thread> runs;
    for (int h = 0; h < kHosts; ++h) {
      runs.emplace_back([&, h] {
        try {
          const ImageRef staging{b->volume_pool(), "staging-" + std::to_string(round * 10 + h)};
          hosts[h]->CloneInPlace(base, staging, name, 0, [h](const std::string&) {
            return std::map<std::string, std::string>{{"host", std::to_string(h)}};
          });
          winners++;
        } catch (const Error& err) {
          if (err.code() != Errc::kAlreadyExists) others++;
        }
      });
    }
    for (auto& t : runs) t.join();
    CHECK(winners == 1);
    CHECK(others == 0);
    // The image reads as the clone it is (its sidecar says qcow2 over the entry), and
    // carries the winner's mark.
    CHECK(b->Stat(name).size == want);
    CHECK(b->GetMetadata(name).count("host") == 1);
    CHECK(QemuCompare(root / "volumes" / name.name, "qcow2", dir.path() / "raw") == 0);
    std::string read(want, '\0');
    CHECK(static_cast<storage::Backend&>(*b).Open(name)->Read(
              0, std::as_writable_bytes(std::span(read))) == want);
    CHECK(read == ReadFile(dir.path() / "raw"));
  }
  CHECK(b->SweepTemporaries(true).empty());
}

}  // namespace
}  // namespace cachemgr::test
