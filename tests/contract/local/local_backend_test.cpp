// What only the local directory backend does: hard-link prefill, overlays of other
// tools and names, owner and mode, clone-mode detection, sidecars, temporaries. (Bases
// kept while overlays use them, and their stable links: local_backing_links_test.cpp.)
// Over 600 lines: one case per rule of the local backend alone; the listing, removal
// batches, foreign files and looks have files of their own beside it.
#include "storage/local/local_backend.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cachemgr/error.h"
#include "contract/local/local_test_util.h"
#include "contract/local/reflink_root.h"
#include "storage/factory.h"
#include "support/test_util.h"

namespace cachemgr::test {
namespace {

TEST_CASE("hard-link prefill from an image store on the same filesystem copies nothing") {
  TempDir dir("local-adopt");
  auto store = dir.path() / "images";
  fs::create_directories(store);
  auto src = store / "3f2c-image";
  WriteRawImage(src, 8 * kMiB, 3 * kMiB, 42);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef ref{b->entry_pool(), kBaseName};

  REQUIRE(b->Adopt(src, ref));
  auto s = StatOf(src);
  auto d = StatOf(b->PathOf(ref));
  CHECK(s.st_ino == d.st_ino);
  CHECK(s.st_dev == d.st_dev);
  CHECK(d.st_nlink == 2);
  CHECK(b->Stat(ref).size == 8 * kMiB);
  CHECK(QemuCompare(b->PathOf(ref), "raw", src) == 0);
  CHECK(b->GetMetadata(ref).empty());
  CHECK_THROWS_AS(b->Adopt(src, ref), Error);

  // The cached entry survives the store deleting its file.
  fs::remove(src);
  CHECK(StatOf(b->PathOf(ref)).st_nlink == 1);
  CHECK(b->Stat(ref).size == 8 * kMiB);
}

TEST_CASE("prefill across filesystems is refused so the caller copies") {
  TempDir dir("local-adopt-xdev");
  auto b = MakeLocal(dir.path() / "root");
  // /dev/shm is a tmpfs: another filesystem than the run dir.
  fs::path other = "/dev/shm/cachemgr-adopt-" + std::to_string(::getpid());
  WriteRawImage(other, 1 * kMiB, 1 * kMiB, 7);
  bool different = StatOf(other).st_dev != StatOf(dir.path()).st_dev;
  ImageRef ref{b->entry_pool(), kBaseName};
  bool adopted = b->Adopt(other, ref);
  fs::remove(other);
  REQUIRE_MESSAGE(different, "/dev/shm is on the run dir's filesystem here");
  CHECK_FALSE(adopted);
  CHECK_FALSE(b->Exists(ref));
  CHECK_FALSE(fs::exists(b->PathOf(ref).parent_path() / ".meta" / (kBaseName + ".json")));
}

TEST_CASE("an overlay made by another tool is also seen as a user of a base") {
  TempDir dir("local-foreign");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 12);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  // Like a Nova instance disk: a qcow2 overlay with no sidecar, in a pool folder.
  auto foreign = b->PathOf({b->volume_pool(), "instance-0001-disk"});
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(base).string(), foreign.string()}) == 0);
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(foreign, "qcow2", src) == 0);
}

TEST_CASE("an overlay reaching a base by another name keeps it: symlinked folder, relative name, symlink") {
  // qemu opens the backing name as written (a relative one from the overlay's folder),
  // through every symlink: each of these reaches the base, and a removal that took the
  // base's name for unused would break the disk.
  TempDir dir("local-other-names");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 15);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  fs::create_directory_symlink(dir.path() / "root", dir.path() / "root-link");
  fs::create_symlink(b->PathOf(base), dir.path() / "base-link");
  const std::vector<std::pair<std::string, std::string>> ways{
      {"instance-folder-link", (dir.path() / "root-link" / b->entry_pool() / kBaseName).string()},
      {"instance-relative", "../" + b->entry_pool() + "/" + kBaseName},
      {"instance-file-link", (dir.path() / "base-link").string()}};
  std::vector<fs::path> overlays;
  for (const auto& [name, backing] : ways) {
    overlays.push_back(b->PathOf({b->volume_pool(), name}));
    REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing,
                        overlays.back().string()}) == 0);
    REQUIRE(QemuCompare(overlays.back(), "qcow2", src) == 0);
  }
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK_FALSE(fs::exists(b->PathOf(base)));
  for (const auto& o : overlays) {
    CAPTURE(o);
    CHECK(QemuCompare(o, "qcow2", src) == 0);
  }
  auto trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK(trash[0].has_children);
  CHECK_FALSE(b->PurgeTrash(trash[0]));
  for (const auto& o : overlays) fs::remove(o);
  trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK(b->PurgeTrash(trash[0]));
}

TEST_CASE("users are found by the path qemu opens: `..` after a symlink, the stable link by another name") {
  TempDir dir("local-opened-path");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 17);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  SnapRef snap = SnapAndProtect(*b, base);
  ImageRef ours{b->volume_pool(), "vm-ours"};
  b->Clone(snap, ours);
  const auto stable = BackingOf(b->PathOf(ours));
  REQUIRE(stable.find("/.backing/") != std::string::npos);
  const auto volumes = b->PathOf(ours).parent_path();
  // `down/..` where `down` is a symlink to a folder inside _base: qemu opens
  // root/_base/<base>, though lexically the name is root/volumes/<base> (nothing).
  fs::create_directory(dir.path() / "root" / b->entry_pool() / "deeper");
  fs::create_directory_symlink(dir.path() / "root" / b->entry_pool() / "deeper",
                               volumes / "down");
  auto dotdot = volumes / "instance-dotdot";
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      "down/../" + kBaseName, dotdot.string()}) == 0);
  REQUIRE(QemuCompare(dotdot, "qcow2", src) == 0);
  // The stable link through a symlinked folder.
  fs::create_directory_symlink(dir.path() / "root" / ".backing", dir.path() / "backing-link");
  auto via_stable = volumes / "instance-stable-link";
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      (dir.path() / "backing-link" / fs::path(stable).filename()).string(),
                      via_stable.string()}) == 0);
  // A name that looks like the base's but leads elsewhere: `away/..` is not volumes'
  // parent, so `away/../../_base/<base>` is a zero file of the same name outside the root.
  fs::create_directories(dir.path() / "elsewhere" / "a" / "b");
  fs::create_directories(dir.path() / "elsewhere" / b->entry_pool());
  const auto lookalike = dir.path() / "elsewhere" / b->entry_pool() / kBaseName;
  REQUIRE(RunCommand({"truncate", "-s", std::to_string(4 * kMiB), lookalike.string()}) == 0);
  fs::create_directory_symlink(dir.path() / "elsewhere" / "a" / "b", volumes / "away");
  auto other = volumes / "instance-elsewhere";
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      "away/../../" + b->entry_pool() + "/" + kBaseName, other.string()}) == 0);
  const auto other_header = ReadFile(other);

  b->Remove(ours);
  b->UnprotectSnapshot(snap);
  b->RemoveSnapshot(snap);
  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(dotdot, "qcow2", src) == 0);
  CHECK(QemuCompare(via_stable, "qcow2", src) == 0);
  // Not a user: not rebased, still on its own base.
  CHECK(ReadFile(other) == other_header);
  // With the first gone, the stable link's user alone still keeps the bytes.
  fs::remove(dotdot);
  auto trash = b->ListTrash();
  REQUIRE(trash.size() == 1);
  CHECK(trash[0].has_children);
  CHECK_FALSE(b->PurgeTrash(trash[0]));
  CHECK(QemuCompare(via_stable, "qcow2", src) == 0);
  fs::remove(via_stable);
  CHECK(b->PurgeTrash(b->ListTrash().at(0)));
}

TEST_CASE("an overlay of another hard link of a base's file is not its user") {
  // A base hard-linked from an image store shares its file with the store's name; an
  // overlay of the store's name loses nothing when the base's name goes, and its header
  // is left as it is.
  TempDir dir("local-hardlink-user");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 16);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  auto store = dir.path() / "store-image";
  REQUIRE(::link(b->PathOf(base).c_str(), store.c_str()) == 0);
  auto overlay = b->PathOf({b->volume_pool(), "instance-of-store"});
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", store.string(),
                      overlay.string()}) == 0);
  const auto header = ReadFile(overlay);
  CHECK(b->Remove(base) == storage::RemoveOutcome::kRemoved);
  CHECK(ReadFile(overlay) == header);
  CHECK(QemuCompare(overlay, "qcow2", src) == 0);
}

TEST_CASE("the overlay scan sees headers rewritten in place and overlays made since") {
  // The scan keeps what it read of each file and reads again only what changed: a file
  // rebased in place (qemu-img rebase -u, a block job) and a new overlay must show.
  TempDir dir("local-scan");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 1 * kMiB, 15);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef first{b->entry_pool(), kBaseName};
  ImageRef second{b->entry_pool(), "second"};
  ImageRef third{b->entry_pool(), "third"};
  ImageRef fourth{b->entry_pool(), "fourth"};
  ImageRef fifth{b->entry_pool(), "fifth"};
  for (const auto& ref : {first, second, third, fourth, fifth}) Import(*b, src, ref);
  auto foreign = b->PathOf({b->volume_pool(), "instance-0002-disk"});
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(first).string(), foreign.string()}) == 0);
  // A plain (not qcow2) file that later becomes an overlay in place, under the same inode.
  auto in_place = b->PathOf({b->volume_pool(), "instance-0004-disk"});
  WriteFile(in_place, std::string(64 * 1024, 'x'));
  // An overlay of `fifth` written through a shared mapping, its first byte not yet qcow2's:
  // the last byte, written later through the still-dirty page, changes no time at all.
  auto mapped_staged = dir.path() / "mapped.qcow2";
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(fifth).string(), mapped_staged.string()}) == 0);
  const std::string mapped_bytes = ReadFile(mapped_staged);
  auto mapped = b->PathOf({b->volume_pool(), "instance-0005-disk"});
  const int mapped_fd = ::open(mapped.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  REQUIRE(mapped_fd >= 0);
  REQUIRE(::ftruncate(mapped_fd, static_cast<off_t>(mapped_bytes.size())) == 0);
  void* map =
      ::mmap(nullptr, mapped_bytes.size(), PROT_READ | PROT_WRITE, MAP_SHARED, mapped_fd, 0);
  REQUIRE(map != MAP_FAILED);
  auto* page = static_cast<char*>(map);
  std::memcpy(page, mapped_bytes.data(), mapped_bytes.size());
  page[0] = 'X';
  // Files changed within the filesystem's timestamp granularity are read on every scan:
  // wait until these are settled, and scan so that they are remembered.
  ::sleep(3);
  CHECK(b->ListTrash().empty());
  REQUIRE(RunCommand({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(second).string(), foreign.string()}) == 0);
  CHECK(b->Remove(second) == storage::RemoveOutcome::kTrashed);
  CHECK(b->Remove(first) == storage::RemoveOutcome::kRemoved);
  auto another = b->PathOf({b->volume_pool(), "instance-0003-disk"});
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(third).string(), another.string()}) == 0);
  CHECK(b->Remove(third) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(foreign, "qcow2", src) == 0);
  CHECK(QemuCompare(another, "qcow2", src) == 0);

  // The remembered plain file is rewritten in place into an overlay of `fourth` (as
  // `qemu-img create` over an existing name does), its mtime then put back: only its
  // ctime tells, and the base it now needs must not be removed.
  struct stat before {};
  REQUIRE(::stat(in_place.c_str(), &before) == 0);
  auto staged = dir.path() / "staged.qcow2";
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                      b->PathOf(fourth).string(), staged.string()}) == 0);
  {
    const std::string bytes = ReadFile(staged);
    std::ofstream out(in_place, std::ios::binary | std::ios::in | std::ios::out | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
  }
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, in_place.c_str(), times, 0) == 0);
  struct stat after {};
  REQUIRE(::stat(in_place.c_str(), &after) == 0);
  REQUIRE(after.st_ino == before.st_ino);
  CHECK(b->Remove(fourth) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(in_place, "qcow2", src) == 0);

  page[0] = mapped_bytes[0];  // now qcow2, through the mapping
  CHECK(b->Remove(fifth) == storage::RemoveOutcome::kTrashed);
  CHECK(QemuCompare(mapped, "qcow2", src) == 0);
  ::munmap(map, mapped_bytes.size());
  ::close(mapped_fd);
}

TEST_CASE("renaming a base keeps its overlays reading") {
  TempDir dir("local-rename");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 2 * kMiB, 13);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef staging{b->entry_pool(), "staging-1"};
  Import(*b, src, staging);
  SnapAndProtect(*b, staging);
  ImageRef v{b->volume_pool(), "vol"};
  b->Clone({staging, "snap"}, v);
  b->Rename(staging, kBaseName);
  ImageRef base{b->entry_pool(), kBaseName};
  CHECK(StatOf(BackingOf(b->PathOf(v))).st_ino == StatOf(b->PathOf(base)).st_ino);
  CHECK(QemuCompare(b->PathOf(v), "qcow2", src) == 0);
  REQUIRE(b->Parent(v).has_value());
  CHECK(b->Parent(v)->image == base);
  CHECK(b->Children({base, "snap"}).size() == 1);
}

TEST_CASE("owner, group and mode are applied to bases and volumes") {
  REQUIRE_MESSAGE(::geteuid() == 0, "chown to another user needs root");
  struct passwd* pw = ::getpwnam("nobody");
  struct group* gr = ::getgrnam("nogroup");
  REQUIRE(pw);
  REQUIRE(gr);
  TempDir dir("local-owner");
  auto b = MakeLocal(dir.path() / "root", CloneMode::kQcow2, "nobody", "nogroup", 0640);
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 2 * kMiB, 1 * kMiB, 14);
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  SnapAndProtect(*b, base);
  ImageRef clone{b->volume_pool(), "clone"};
  ImageRef copy{b->volume_pool(), "copy"};
  b->Clone({base, "snap"}, clone);
  b->Copy(base, copy, {});
  for (const auto& ref : {base, clone, copy}) {
    CAPTURE(ref.name);
    auto st = StatOf(b->PathOf(ref));
    CHECK(st.st_uid == pw->pw_uid);
    CHECK(st.st_gid == gr->gr_gid);
    CHECK((st.st_mode & 07777) == 0640);
  }
  b->Flatten(clone, {});
  CHECK((StatOf(b->PathOf(clone)).st_mode & 07777) == 0640);
  CHECK(StatOf(b->PathOf(clone)).st_uid == pw->pw_uid);

  auto adopted_src = dir.path() / "store.raw";
  WriteRawImage(adopted_src, 1 * kMiB, 1 * kMiB, 15);
  ImageRef adopted{b->entry_pool(), "adopted"};
  REQUIRE(b->Adopt(adopted_src, adopted));
  CHECK(StatOf(b->PathOf(adopted)).st_uid == pw->pw_uid);
  CHECK((StatOf(b->PathOf(adopted)).st_mode & 07777) == 0640);
}

TEST_CASE("an unknown owner or group is a configuration error naming it") {
  TempDir dir("local-badowner");
  try {
    MakeLocal(dir.path() / "root", CloneMode::kQcow2, "no-such-user-cm");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find("no-such-user-cm") != std::string::npos);
    CHECK(std::string(e.what()).find("backend.local.owner") != std::string::npos);
  }
  try {
    MakeLocal(dir.path() / "root", CloneMode::kQcow2, "", "no-such-group-cm");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find("no-such-group-cm") != std::string::npos);
  }
}

TEST_CASE("auto mode picks reflink where the filesystem has it, else qcow2 overlays") {
  TempDir dir("local-auto");
  // Decide independently of the backend's probe: coreutils' cp --reflink=always.
  auto a = dir.path() / "a";
  WriteFile(a, std::string(4096, 'x'));
  bool reflink_here =
      RunCommand({"cp", "--reflink=always", a.string(), (dir.path() / "b").string()}) == 0;
  auto b = MakeLocal(dir.path() / "root", CloneMode::kAuto);
  CHECK(b->clone_mode() == (reflink_here ? CloneMode::kReflink : CloneMode::kQcow2));
  if (!reflink_here) {
    try {
      MakeLocal(dir.path() / "root2", CloneMode::kReflink);
      FAIL("reflink mode accepted on a filesystem without it");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::kConfig);
    }
  }
  // And on a filesystem that has reflinks (XFS), auto picks them and clones share extents.
  ReflinkRoot xfs;
  auto r = MakeLocal(xfs.path() / "auto", CloneMode::kAuto);
  CHECK(r->clone_mode() == CloneMode::kReflink);
  auto src = dir.path() / "src.raw";
  WriteRawImage(src, 4 * kMiB, 4 * kMiB, 16);
  ImageRef base{r->entry_pool(), kBaseName};
  Import(*r, src, base);
  SnapAndProtect(*r, base);
  ImageRef v{r->volume_pool(), "v"};
  r->Clone({base, "snap"}, v);
  CHECK(r->FormatOf(v) == "raw");
  CHECK(r->Depth(v) == 0);
  CHECK(QemuCompare(r->PathOf(v), "raw", src) == 0);
}

TEST_CASE("the sidecar carries what the index is rebuilt from") {
  TempDir dir("local-sidecar");
  auto root = dir.path() / "root";
  auto b = MakeLocal(root);
  ImageRef base{b->entry_pool(), kBaseName};
  auto src = dir.path() / "s.raw";
  WriteRawImage(src, 1 * kMiB, 1 * kMiB, 17);
  Import(*b, src, base);
  b->SetMetadata(base, "cachemgr.image_id", "3f2c");
  SnapAndProtect(*b, base);
  auto j = nlohmann::json::parse(ReadFile(root / "_base" / ".meta" / (kBaseName + ".json")));
  CHECK(j["metadata"]["cachemgr.image_id"] == "3f2c");
  CHECK(j["snapshots"][0]["name"] == "snap");
  CHECK(j["snapshots"][0]["protected"] == true);
  // A new backend on the same root (a restart) sees the same state.
  auto again = MakeLocal(root);
  CHECK(again->GetMetadata(base).at("cachemgr.image_id") == "3f2c");
  CHECK(again->ListSnapshots(base).at(0).is_protected);
  // No temporary names are left behind in the pool folder.
  for (const auto& e : fs::directory_iterator(root / "_base"))
    CHECK(e.path().filename().string().rfind(".tmp-", 0) != 0);
}

TEST_CASE("MakeBackend makes the local backend from options") {
  TempDir dir("local-factory");
  BackendOptions options;
  options.type = BackendType::kLocal;
  options.local.root = (dir.path() / "root").string();
  options.local.clone_mode = CloneMode::kCopy;
  auto b = storage::MakeBackend(options, nullptr);
  CHECK(b->kind() == "local");
  CHECK(b->entry_pool() == "_base");
  CHECK(b->volume_pool() == "volumes");
  CHECK(b->location() == fs::weakly_canonical(dir.path() / "root").string());
  CHECK(fs::is_directory(dir.path() / "root" / "_base"));
}

}  // namespace
}  // namespace cachemgr::test

namespace cachemgr::test {
namespace {

std::vector<std::string> TempsUnder(const std::filesystem::path& root) {
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    if (e.path().filename().string().rfind(".tmp-", 0) == 0 && e.is_regular_file() &&
        !e.is_symlink()) {
      found.push_back(e.path().string());
    }
  }
  return found;
}

TEST_CASE("a writer's temporary is never swept; a dead writer's is, and nothing else") {
  TempDir dir("local-sweep");
  auto b = MakeLocal(dir / "root");
  const ImageRef ref{"_base", kBaseName};
  auto writer = b->Create(ref, 4 * kMiB);
  writer->Append(std::span<const std::byte>(
      reinterpret_cast<const std::byte*>(std::string(kMiB, 'x').data()), kMiB));
  const auto live = TempsUnder(dir / "root");
  REQUIRE(live.size() == 1);
  CHECK(b->SweepTemporaries(true).empty());
  CHECK(b->SweepTemporaries(false).empty());
  CHECK(TempsUnder(dir / "root") == live);

  // What a writer killed with -9 leaves: the same kind of name, no lock held.
  const fs::path dead = dir / "root" / "volumes" / ".tmp-vol-XXdead";
  const fs::path dead_meta = dir / "root" / "_base" / ".meta" / ".tmp-x.json-XXdead";
  WriteFile(dead, std::string(8192, 'd'));
  WriteFile(dead_meta, "{}");
  // Not ours to remove: a symlink with the name (its target outside), a folder, a file
  // in a folder the backend never writes temporaries in.
  WriteFile(dir / "outside", "secret");
  fs::create_symlink(dir / "outside", dir / "root" / "volumes" / ".tmp-link-XX");
  fs::create_directory(dir / "root" / "volumes" / ".tmp-dir-XX");

  auto found = b->SweepTemporaries(true);
  CHECK(found.size() == 2);
  for (const auto& l : found) CHECK(!l.removed);
  CHECK(fs::exists(dead));
  found = b->SweepTemporaries(false);
  REQUIRE(found.size() == 2);
  for (const auto& l : found) {
    CHECK(l.removed);
    CHECK((l.path == dead.string() || l.path == dead_meta.string()));
  }
  CHECK(!fs::exists(dead));
  CHECK(!fs::exists(dead_meta));
  CHECK(fs::is_symlink(dir / "root" / "volumes" / ".tmp-link-XX"));
  CHECK(ReadFile(dir / "outside") == "secret");
  CHECK(fs::is_directory(dir / "root" / "volumes" / ".tmp-dir-XX"));

  // The live writer still finishes, and leaves no temporary behind.
  writer->AppendZeros(3 * kMiB);
  writer->Finish();
  CHECK(b->Exists(ref));
  CHECK(TempsUnder(dir / "root").empty());
}

TEST_CASE("a sidecar whose image is gone is swept; one whose image is there is kept") {
  TempDir dir("local-sidecars");
  auto b = MakeLocal(dir / "root");
  const fs::path raw = dir / "a.raw";
  WriteFile(raw, std::string(kMiB, 'a'));
  const ImageRef kept{"_base", kBaseName};
  Import(*b, raw, kept);
  const fs::path meta = dir / "root" / "_base" / ".meta";
  const fs::path kept_sidecar = meta / (kBaseName + ".json");
  REQUIRE(fs::exists(kept_sidecar));
  // What a kill between the sidecar's link and the image's leaves: a sidecar of ours (a
  // copy of a real one) under a name no image has.
  const std::string lost = "b94a8fe5ccb19ba61c4c0873d391e987982fbbd3";
  fs::copy_file(kept_sidecar, meta / (lost + ".json"));
  // Not ours: a file that does not read as a sidecar, under the same kind of name.
  const std::string foreign = "c94a8fe5ccb19ba61c4c0873d391e987982fbbd3";
  WriteFile(meta / (foreign + ".json"), "not a sidecar");
  // A name in the pool that is not an image file (a symlink): its sidecar stays.
  const std::string linked = "d94a8fe5ccb19ba61c4c0873d391e987982fbbd3";
  fs::create_symlink(dir / "nowhere", dir / "root" / "_base" / linked);
  fs::copy_file(kept_sidecar, meta / (linked + ".json"));

  auto found = b->SweepTemporaries(true);
  REQUIRE(found.size() == 1);
  CHECK(found[0].path == (meta / (lost + ".json")).string());
  CHECK_FALSE(found[0].removed);
  CHECK(fs::exists(meta / (lost + ".json")));
  found = b->SweepTemporaries(false);
  REQUIRE(found.size() == 1);
  CHECK(found[0].removed);
  CHECK_FALSE(fs::exists(meta / (lost + ".json")));
  CHECK(fs::exists(kept_sidecar));
  CHECK(ReadFile(meta / (foreign + ".json")) == "not a sidecar");
  CHECK(fs::exists(meta / (linked + ".json")));
  CHECK(b->Exists(kept));
  CHECK(b->SweepTemporaries(false).empty());
}

TEST_CASE("a table's keys are its files of at most 4 KiB; anything else planted there is not") {
  TempDir dir("local-tables");
  auto b = MakeLocal(dir / "root");
  b->WriteTable("uses", {{"a", "17 host-a"}, {"b", std::string(4096, 'b')}}, {});
  const fs::path table = dir / "root" / ".state" / "uses";
  WriteFile(table / "big", std::string(4097, 'x'));  // over 4 KiB: not a value of ours
  WriteFile(table / "empty", "");
  WriteFile(dir / "outside", "secret");
  fs::create_symlink(dir / "outside", table / "link");
  REQUIRE(::mkfifo((table / "fifo").c_str(), 0644) == 0);
  fs::create_directory(table / "folder");
  const auto read = b->ReadTable("uses");
  CHECK(read.size() == 3);
  CHECK(read.at("a") == "17 host-a");
  CHECK(read.at("b") == std::string(4096, 'b'));
  CHECK(read.at("empty").empty());
  // One key read alone follows the same rules, a hard link to a file elsewhere included.
  fs::create_hard_link(dir / "outside", table / "hard");
  for (const char* planted : {"big", "link", "fifo", "folder", "hard"}) {
    CAPTURE(planted);
    CHECK_FALSE(b->ReadTableValue("uses", planted).has_value());
  }
  CHECK(b->ReadTableValue("uses", "a") == std::optional<std::string>("17 host-a"));
  CHECK(b->ReadTableValue("uses", "empty") == std::optional<std::string>(""));
}

TEST_CASE("a root that holds someone else's files is refused before anything is made") {
  TempDir dir("local-root");
  const fs::path root = dir / "root";
  fs::create_directories(root);
  WriteFile(root / "notes.txt", "mine");
  try {
    MakeLocal(root);
    FAIL("an unmarked root with files in it was taken");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find("backend.local.root") != std::string::npos);
  }
  CHECK(std::distance(fs::directory_iterator(root), fs::directory_iterator{}) == 1);
  fs::remove(root / "notes.txt");
  MakeLocal(root);  // empty: made the cache's
  CHECK(fs::is_regular_file(root / ".cachemgr-root"));
  MakeLocal(root);  // marked: taken again
  MakeLocal(dir / "new" / "root");
  CHECK(fs::is_regular_file(dir / "new" / "root" / ".cachemgr-root"));
}

}  // namespace
}  // namespace cachemgr::test

namespace cachemgr::test {
namespace {

TEST_CASE("a clone in place links the file it wrote, not what its temporary's name holds by then") {
  // The engine's part of CloneInPlace (the source's answer, the index) may take seconds;
  // meanwhile someone moves the temporary away and puts a file of theirs at its name. The
  // volume is the overlay written, with the identity given to `publish`; their file stays.
  TempDir dir("local-inplace-swap");
  auto src = dir.path() / "source.raw";
  WriteRawImage(src, 4 * kMiB, 2 * kMiB, 17);
  auto b = MakeLocal(dir.path() / "root");
  ImageRef base{b->entry_pool(), kBaseName};
  Import(*b, src, base);
  const SnapRef snap = SnapAndProtect(*b, base);
  const ImageRef staging{b->volume_pool(), "staging-vol-0123456789abcdef0123456789abcdef"};
  const ImageRef vol{b->volume_pool(), "vol-swapped"};
  const fs::path tmp = b->PathOf(vol).parent_path() / (".tmp-" + staging.name + "-placed");
  const fs::path moved = dir.path() / "moved-away";
  std::string given;
  REQUIRE(b->CloneInPlace(snap, staging, vol, 0, [&](const std::string& identity) {
    given = identity;
    REQUIRE(fs::exists(tmp));
    fs::rename(tmp, moved);
    std::ofstream(tmp) << "theirs";
    return std::map<std::string, std::string>{{"k", identity}};
  }));
  CHECK(b->Identity(vol) == given);
  CHECK(b->GetMetadata(vol).at("k") == given);
  CHECK(StatOf(b->PathOf(vol)).st_ino == StatOf(moved).st_ino);
  CHECK(QemuCompare(b->PathOf(vol), "qcow2", src) == 0);
  std::ifstream theirs(tmp);
  std::string text;
  theirs >> text;
  CHECK(text == "theirs");  // left where they put it

  // The temporary gone altogether (no name holds the overlay any more): nothing is
  // published, nothing is left at the volume's name.
  const ImageRef vol2{b->volume_pool(), "vol-vanished"};
  const ImageRef staging2{b->volume_pool(), "staging-vol-fedcba9876543210fedcba9876543210"};
  const fs::path tmp2 = b->PathOf(vol2).parent_path() / (".tmp-" + staging2.name + "-placed");
  CHECK_THROWS_AS(b->CloneInPlace(snap, staging2, vol2, 0,
                                  [&](const std::string&) {
                                    fs::remove(tmp2);
                                    return std::map<std::string, std::string>{};
                                  }),
                  Error);
  CHECK_FALSE(b->Exists(vol2));
  CHECK_FALSE(fs::exists(b->PathOf(vol2)));
  CHECK_FALSE(fs::exists(b->PathOf(vol2).parent_path() / ".meta" / (vol2.name + ".json")));

  // Swapped, and the call fails after (the volume's name taken meanwhile): its clean-up
  // takes back only its own temporary, never their file at that name.
  const ImageRef vol3{b->volume_pool(), "vol-taken"};
  const ImageRef staging3{b->volume_pool(), "staging-vol-00112233445566778899aabbccddeeff"};
  const fs::path tmp3 = b->PathOf(vol3).parent_path() / (".tmp-" + staging3.name + "-placed");
  CHECK_THROWS_AS(b->CloneInPlace(snap, staging3, vol3, 0,
                                  [&](const std::string&) {
                                    fs::rename(tmp3, dir.path() / "moved-3");
                                    std::ofstream(tmp3) << "theirs";
                                    std::ofstream(b->PathOf(vol3)) << "taken";
                                    return std::map<std::string, std::string>{};
                                  }),
                  Error);
  std::string at_tmp;
  std::ifstream(tmp3) >> at_tmp;
  CHECK(at_tmp == "theirs");
  std::string at_name;
  std::ifstream(b->PathOf(vol3)) >> at_name;
  CHECK(at_name == "taken");
}

}  // namespace
}  // namespace cachemgr::test
