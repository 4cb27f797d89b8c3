// Inputs are hostile until checked: the image store's files (symlinks, FIFOs, files that
// change while read, sidecars), hard-linked bases whose source changes, truncated images
// with no checksum to catch them, and a conversion dir shared with others.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "convert/format.h"
#include "fetch/workdir.h"
#include "fetch_util.h"
#include "source/source.h"

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}
ino_t InodeOf(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_ino;
}
bool Contains(const Error& e, const std::string& what) {
  return std::string(e.what()).find(what) != std::string::npos;
}
// Overwrites bytes in place (same inode, same size), as an editor of the store would.
void OverwriteInPlace(const fs::path& p, uint64_t offset, const std::string& bytes) {
  int fd = ::open(p.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) ==
          static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

TEST_CASE("the image store never follows a symlink, never opens a FIFO, and stays unchanged") {
  DirBed bed;
  const fs::path secret = bed.tmp / "secret";
  WriteFile(secret, std::string(1 << 20, 'S'));
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write);
  fs::create_symlink(secret, bed.images / "leak");
  fs::create_symlink("../secret", bed.images / "leak-relative");
  REQUIRE(::mkfifo((bed.images / "fifo").c_str(), 0644) == 0);
  fs::create_directory(bed.images / "subdir");
  fs::copy_file(bed.golden, bed.images / "good");

  for (const std::string id : {"leak", "leak-relative", "fifo", "subdir"}) {
    CAPTURE(id);
    Error e = Thrown([&] { bed.source->Describe(id); });
    CHECK_MESSAGE(e.code() == Errc::kRefused, e.what());
    CHECK_MESSAGE(Contains(e, (bed.images / id).string()), e.what());
    CHECK(Thrown([&] { bed.source->OpenLocal(id); }).code() == Errc::kRefused);
    CHECK(Thrown([&] { bed.source->Download(id, [](std::span<const std::byte>) {}); }).code() ==
          Errc::kRefused);
  }
  CHECK(Contains(Thrown([&] { bed.source->Describe("leak"); }), "symlink"));
  CHECK(Contains(Thrown([&] { bed.source->Describe("fifo"); }), "FIFO"));

  // A listing skips them and still lists the rest.
  auto listed = bed.source->ListActive();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == "good");

  // Described while it was a regular file, a symlink by the time it is fetched: the fetch
  // opens it again, without following, and is refused; nothing reaches the backend.
  for (const std::string disk_format : {"raw", "qcow2"}) {
    CAPTURE(disk_format);
    const std::string id = "swapped-" + disk_format;
    if (disk_format == "raw") {
      fs::copy_file(bed.golden, bed.images / id);
    } else {
      bed.Add(id, "qcow2");
    }
    auto meta = bed.source->Describe(id);
    fs::remove(bed.images / id);
    fs::create_symlink(secret, bed.images / id);
    Error e = bed.FetchFails(id, meta);
    CHECK_MESSAGE(e.code() == Errc::kRefused, e.what());
  }
  // The secret is as it was: its bytes never read into an image, its mode unchanged.
  CHECK(ModeOf(secret) == 0600);
  CHECK(ReadFile(secret) == std::string(1 << 20, 'S'));
  CHECK(EntryImages(bed).empty());
}

TEST_CASE("a sidecar that is a symlink, too large, or names a hash it cannot check is refused") {
  DirBed bed;
  fs::copy_file(bed.golden, bed.images / "img");
  auto sidecar = bed.images / "img.json";

  WriteSidecar(bed.images, "img", {{"os_hash_algo", "whirlpool"}, {"os_hash_value", "ab"}});
  Error e = Thrown([&] { bed.source->Describe("img"); });
  CHECK(e.code() == Errc::kRefused);
  CHECK_MESSAGE(Contains(e, sidecar.string()), e.what());
  CHECK_MESSAGE(Contains(e, "whirlpool"), e.what());

  // An algorithm with no value to compare is refused the same way: the claim cannot be
  // checked.
  WriteSidecar(bed.images, "img", {{"os_hash_algo", "crc32"}});
  CHECK(Contains(Thrown([&] { bed.source->Describe("img"); }), "crc32"));

  // Algorithms a hasher knows but a fill cannot verify with: refused here, not accepted
  // and then fetched unverified (md5 goes in "checksum").
  for (const std::string weak : {"sha1", "md5"}) {
    WriteSidecar(
        bed.images, "img",
        {{"os_hash_algo", weak}, {"os_hash_value", util::HashFile(weak, bed.golden.string())}});
    e = Thrown([&] { bed.source->Describe("img"); });
    CHECK(e.code() == Errc::kRefused);
    CHECK_MESSAGE(Contains(e, "'" + weak + "'"), e.what());
  }

  // A digest that is not one of its algorithm.
  WriteSidecar(bed.images, "img", {{"os_hash_algo", "sha256"}, {"os_hash_value", "abc"}});
  CHECK(Thrown([&] { bed.source->Describe("img"); }).code() == Errc::kRefused);
  WriteSidecar(bed.images, "img", {{"checksum", "not-an-md5"}});
  CHECK(Thrown([&] { bed.source->Describe("img"); }).code() == Errc::kRefused);

  // Known algorithms pass.
  WriteSidecar(bed.images, "img",
               {{"os_hash_algo", "sha256"},
                {"os_hash_value", util::HashFile("sha256", bed.golden.string())}});
  CHECK(bed.source->Describe("img").os_hash_algo == "sha256");

  // A sidecar that is a symlink to a file elsewhere.
  fs::remove(sidecar);
  WriteFile(bed.tmp / "elsewhere.json", R"({"disk_format": "raw"})");
  fs::create_symlink(bed.tmp / "elsewhere.json", sidecar);
  e = Thrown([&] { bed.source->Describe("img"); });
  CHECK(e.code() == Errc::kRefused);
  CHECK_MESSAGE(Contains(e, sidecar.string()), e.what());

  // Far larger than a sidecar can be.
  fs::remove(sidecar);
  WriteFile(sidecar, "{\"disk_format\": \"raw\", \"x\": \"" + std::string(2 << 20, 'x') + "\"}");
  CHECK(Thrown([&] { bed.source->Describe("img"); }).code() == Errc::kRefused);
}

TEST_CASE("digests match whatever the case of their hex letters") {
  DirBed bed;
  fs::copy_file(bed.golden, bed.images / "up");
  auto upper = [](std::string h) {
    for (auto& c : h) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return h;
  };
  WriteSidecar(bed.images, "up",
               {{"disk_format", "raw"},
                {"os_hash_algo", "sha256"},
                {"os_hash_value", upper(util::HashFile("sha256", bed.golden.string()))},
                {"checksum", upper(util::HashFile("md5", bed.golden.string()))}});
  bed.Fetch("up", "entry-up");
  CHECK(bed.ReadImage(bed.Ref("entry-up")) == ReadFile(bed.golden));
  bed.backend->Remove(bed.Ref("entry-up"));
  // Only the md5, upper case.
  WriteSidecar(
      bed.images, "up",
      {{"disk_format", "raw"}, {"checksum", upper(util::HashFile("md5", bed.golden.string()))}});
  bed.Fetch("up", "entry-up");
}

TEST_CASE("a file that changes while it is read is kCorrupt") {
  DirBed bed;
  fs::copy_file(bed.golden, bed.images / "growing");
  fs::copy_file(bed.golden, bed.images / "rewritten");
  bed.Add("growing-q2", "qcow2");
  WriteSidecar(bed.images, "growing-q2", {{"disk_format", "qcow2"}});

  for (const std::string id : {"growing", "growing-q2", "rewritten"}) {
    CAPTURE(id);
    auto meta = bed.source->Describe(id);
    bool touched = false;
    bed.options.progress = [&](const std::string& stage, uint64_t, uint64_t) {
      if (stage != "download" || touched) return;
      touched = true;
      if (id == "rewritten") {
        // Same size, new bytes, and a new mtime.
        OverwriteInPlace(bed.images / id, 0, "changed");
        struct timespec times[2] = {{0, UTIME_NOW}, {1, 0}};
        ::utimensat(AT_FDCWD, (bed.images / id).c_str(), times, 0);
      } else {
        std::ofstream(bed.images / id, std::ios::app) << "more bytes";
      }
    };
    Error e = bed.FetchFails(id, meta);
    CHECK_MESSAGE(e.code() == Errc::kCorrupt, e.what());
    bed.options.progress = nullptr;
  }
}

TEST_CASE("a raw base never shares the source's inode unless configured, and then is checked") {
  DirBed bed;
  const fs::path src = bed.images / "raw1";
  fs::copy_file(bed.golden, src);
  fs::permissions(src, fs::perms::owner_read | fs::perms::owner_write);
  const std::string golden = ReadFile(bed.golden);

  // Default: a reflink where the filesystem has one, else a copy; never a hard link, and
  // the configured mode (0644) lands on the base alone.
  auto r = bed.Fetch("raw1", "entry-default");
  const fs::path base = bed.tmp / "backend" / bed.backend->entry_pool() / "entry-default";
  CHECK(InodeOf(base) != InodeOf(src));
  CHECK(ModeOf(src) == 0600);
  CHECK(ModeOf(base) == 0644);
  CHECK(r.md5 == Md5(bed.golden));
  // Rewriting the source in place leaves the base as it was.
  OverwriteInPlace(src, 4096, "rewritten in place");
  CHECK(bed.ReadImage(bed.Ref("entry-default")) == golden);
  fs::copy_file(bed.golden, src, fs::copy_options::overwrite_existing);
  fs::permissions(src, fs::perms::owner_read | fs::perms::owner_write);

  // hardlink_prefill with a mode that would change the source: copied all the same.
  LocalBackendOptions lo;
  lo.root = (bed.tmp / "backend").string();
  lo.clone_mode = CloneMode::kCopy;
  lo.hardlink_prefill = true;
  bed.backend = storage::MakeLocalBackend(lo, nullptr);
  bed.Fetch("raw1", "entry-mode");
  CHECK(InodeOf(bed.tmp / "backend" / bed.backend->entry_pool() / "entry-mode") != InodeOf(src));
  CHECK(ModeOf(src) == 0600);

  // hardlink_prefill and a mode the source already has: a hard link, checked on use.
  lo.mode = 0600;
  bed.backend = storage::MakeLocalBackend(lo, nullptr);
  r = bed.Fetch("raw1", "entry-linked");
  CHECK(r.adopted);
  const auto linked = bed.Ref("entry-linked");
  CHECK(InodeOf(bed.tmp / "backend" / linked.pool / linked.name) == InodeOf(src));
  CHECK(bed.ReadImage(linked) == golden);
  bed.backend->RequireIntact(linked);
  // The backend's own links (a snapshot, a clone) are not changes of the file.
  bed.backend->CreateSnapshot({linked, "snap"});
  bed.backend->ProtectSnapshot({linked, "snap"});
  bed.backend->Clone({linked, "snap"}, {bed.backend->volume_pool(), "vol-1"});
  bed.backend->RequireIntact(linked);

  OverwriteInPlace(src, 4096, "rewritten in place");
  Error e = Thrown([&] { bed.backend->RequireIntact(linked); });
  CHECK(e.code() == Errc::kCorrupt);
  CHECK_MESSAGE(Contains(e, "entry-linked"), e.what());
  // Every use of it is refused: a read, a clone, a copy.
  CHECK(Thrown([&] { bed.backend->Open(linked, std::nullopt); }).code() == Errc::kCorrupt);
  CHECK(Thrown([&] {
          bed.backend->Clone({linked, "snap"}, {bed.backend->volume_pool(), "vol-2"});
        }).code() == Errc::kCorrupt);
  CHECK(Thrown([&] {
          bed.backend->Copy(linked, {bed.backend->volume_pool(), "vol-3"}, {});
        }).code() == Errc::kCorrupt);

  // A chmod of the shared file (same bytes, same mtime) is a change too.
  fs::copy_file(bed.golden, bed.images / "raw2");
  fs::permissions(bed.images / "raw2", fs::perms::owner_read | fs::perms::owner_write);
  bed.Fetch("raw2", "entry-chmod");
  bed.backend->RequireIntact(bed.Ref("entry-chmod"));
  fs::permissions(bed.images / "raw2", fs::perms::owner_read);
  CHECK(Thrown([&] { bed.backend->RequireIntact(bed.Ref("entry-chmod")); }).code() ==
        Errc::kCorrupt);

  // A link added by anyone moves ctime and the link count and no byte: still intact.
  fs::copy_file(bed.golden, bed.images / "raw3");
  fs::permissions(bed.images / "raw3", fs::perms::owner_read | fs::perms::owner_write);
  bed.Fetch("raw3", "entry-links");
  fs::create_hard_link(bed.images / "raw3", bed.tmp / "someone-elses-link");
  bed.backend->RequireIntact(bed.Ref("entry-links"));
  CHECK(bed.ReadImage(bed.Ref("entry-links")) == golden);
  // A rewrite with its size and mtime put back, together with a link added or dropped:
  // only ctime and the link count differ, as for a link alone; the bytes tell.
  struct stat before {};
  REQUIRE(::stat((bed.images / "raw3").c_str(), &before) == 0);
  OverwriteInPlace(bed.images / "raw3", 4096, "rewritten, mtime put back");
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, (bed.images / "raw3").c_str(), times, 0) == 0);
  fs::remove(bed.tmp / "someone-elses-link");
  CHECK(Thrown([&] { bed.backend->RequireIntact(bed.Ref("entry-links")); }).code() ==
        Errc::kCorrupt);
}

// Cuts a copy of `whole` to `size` bytes as image `id`.
void Cut(DirBed& bed, const fs::path& whole, const std::string& id, uint64_t size) {
  fs::copy_file(whole, bed.images / id, fs::copy_options::overwrite_existing);
  fs::resize_file(bed.images / id, size);
}

TEST_CASE("truncated images of every format are refused with no checksum in the source") {
  DirBed bed;
  struct Case {
    std::string name, qemu_fmt, disk_format;
    std::vector<std::string> opts;
  };
  const std::vector<Case> cases = {
      {"q2", "qcow2", "qcow2", {}},
      {"q2c", "qcow2", "qcow2", {"-c"}},
      {"vm", "vmdk", "vmdk", {}},
      {"vms", "vmdk", "vmdk", {"-o", "subformat=streamOptimized"}},
      {"vd", "vdi", "vdi", {}},
      {"vh", "vpc", "vhd", {"-o", "subformat=dynamic"}},
      {"vhf", "vpc", "vhd", {"-o", "subformat=fixed"}},
      {"vx", "vhdx", "vhdx", {}},
  };
  for (const auto& c : cases) {
    bed.Add(c.name, c.qemu_fmt, c.opts);
    const fs::path whole = bed.tmp / (c.name + ".whole");
    fs::rename(bed.images / c.name, whole);
    const uint64_t size = fs::file_size(whole);
    // In the header, in the tables, in the data, and in the last sector.
    const std::vector<uint64_t> cuts = {100,      600,          70000,     200000,
                                        size / 2, size - 70000, size - 512};
    for (size_t i = 0; i < cuts.size(); ++i) {
      if (cuts[i] >= size) continue;
      const std::string id = c.name + "-cut" + std::to_string(i);
      CAPTURE(id);
      CAPTURE(cuts[i]);
      Cut(bed, whole, id, cuts[i]);
      // No sidecar digest: Describe hashes the cut file itself, so only the format's own
      // consistency can catch the cut.
      WriteSidecar(bed.images, id, {{"disk_format", c.disk_format}});
      Error e = bed.FetchFails(id);
      CHECK_MESSAGE((e.code() == Errc::kCorrupt || e.code() == Errc::kRefused), e.what());
      // A fixed VHD cut anywhere has lost its only footer and reads as raw data: refused
      // as not the vhd it claims.
      if (cuts[i] >= size / 2 && c.name != "vhf") {
        CHECK_MESSAGE(e.code() == Errc::kCorrupt, e.what());
      }
    }
    // The whole image still passes.
    fs::copy_file(whole, bed.images / c.name);
    WriteSidecar(bed.images, c.name, {{"disk_format", c.disk_format}});
    CAPTURE(c.name);
    bed.Fetch(c.name, "entry-" + c.name);
    bed.backend->Remove(bed.Ref("entry-" + c.name));
  }
}

TEST_CASE("each fill works in a private directory; a symlink in conversion.dir redirects nothing") {
  DirBed bed;
  const fs::path conv = bed.options.conversion.dir;
  fs::create_directories(conv);
  const fs::path victim = bed.tmp / "victim";
  WriteFile(victim, "precious");
  bed.Add("vd", "vdi");  // a vdi always goes through qemu-img convert
  WriteSidecar(bed.images, "vd", {{"disk_format", "vdi"}});
  // Every name a predictable staging scheme could use points at the victim.
  for (int n = 0; n < 1000; ++n) {
    const std::string stem = "vd." + std::to_string(::getpid()) + "." + std::to_string(n);
    for (const std::string ext : {".raw", ".download"}) {
      fs::create_symlink(victim, conv / (stem + ext));
    }
  }
  const size_t planted = bed.ConversionFiles();
  bool seen = false;
  bed.options.progress = [&](const std::string& stage, uint64_t, uint64_t) {
    if (stage != "convert" || seen) return;
    seen = true;
    size_t dirs = 0;
    for (const auto& e : fs::directory_iterator(conv)) {
      if (!e.is_symlink() && e.is_directory()) {
        ++dirs;
        CHECK(e.path().filename().string().starts_with(fetch::kWorkDirPrefix));
        CHECK(ModeOf(e.path()) == 0700);
      }
    }
    CHECK(dirs == 1);
  };
  bed.Fetch("vd", "entry-vd");
  CHECK(seen);
  CHECK(ReadFile(victim) == "precious");
  CHECK(bed.ConversionFiles() == planted);  // the private dir went; the planted links stay
  CHECK(bed.ReadImage(bed.Ref("entry-vd")) == ReadFile(bed.golden));
}

TEST_CASE("a dead fill's working directory is found and swept; nothing else is") {
  TempDir tmp("workdir");
  const fs::path conv = tmp / "conversion";

  // A fill killed with -9: its directory stays, its lock goes with the process.
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    fetch::WorkDir w(conv, "img", nullptr);
    WriteFile(w.File("image.download"), "partial");
    ::_exit(0);  // no destructor runs, as after kill -9
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  auto dead = fetch::ListDeadWorkDirs(conv);
  REQUIRE(dead.size() == 1);

  // A live fill, a symlink that looks like one, a directory of the right name owned by
  // someone else, and an unrelated directory.
  fetch::WorkDir live(conv, "img", nullptr);
  const fs::path target = tmp / "target";
  fs::create_directories(target);
  WriteFile(target / "keep", "keep");
  fs::create_symlink(target, conv / (std::string(fetch::kWorkDirPrefix) + "LINKED"));
  fs::create_directories(conv / "unrelated");
  const fs::path foreign = conv / (std::string(fetch::kWorkDirPrefix) + "OTHERS");
  fs::create_directories(foreign);
  const bool can_chown = ::geteuid() == 0 && ::chown(foreign.c_str(), 65534, 65534) == 0;

  CHECK(fetch::ListDeadWorkDirs(conv) == dead);
  CHECK(fetch::SweepWorkDirs(conv, /*dry_run=*/true, nullptr) == dead);
  CHECK(fs::exists(dead[0]));
  CHECK(fetch::SweepWorkDirs(conv, /*dry_run=*/false, nullptr) == dead);
  CHECK_FALSE(fs::exists(dead[0]));
  CHECK(fetch::ListDeadWorkDirs(conv).empty());
  CHECK(fs::exists(live.path() / fetch::kLockName));
  CHECK(ReadFile(target / "keep") == "keep");
  CHECK(fs::exists(conv / "unrelated"));
  if (can_chown) CHECK(fs::exists(foreign));
}

TEST_CASE("a directory the cache did not make in the conversion dir is never removed") {
  TempDir tmp("workdir-foreign");
  const fs::path conv = tmp / "conversion";
  fs::create_directories(conv);
  const std::string prefix = fetch::kWorkDirPrefix;
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  // No lock file at all, old: once taken for a dead fill.
  const fs::path mine = conv / (prefix + "MYDATA");
  fs::create_directories(mine / "sub");
  WriteFile(mine / "notes.txt", "precious");
  WriteFile(mine / "sub" / "more.txt", "precious");
  fs::last_write_time(mine, old);
  // A lock file of the right name without the cache's mark, next to a fill's own names.
  const fs::path unmarked = conv / (prefix + "NOMARK");
  fs::create_directories(unmarked);
  WriteFile(unmarked / fetch::kLockName, "");
  WriteFile(unmarked / "image.raw", "precious");
  fs::last_write_time(unmarked, old);
  // A dead fill's directory into which someone put a file of their own.
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    fetch::WorkDir w(conv, "img", nullptr);
    WriteFile(w.File("image.download"), "partial");
    WriteFile(w.File("theirs.txt"), "precious");
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  auto dead = fetch::ListDeadWorkDirs(conv);
  REQUIRE(dead.size() == 1);  // the marked one only: never MYDATA or NOMARK
  CHECK(fetch::ListForeignWorkDirs(conv).size() == 2);

  std::vector<fetch::LeftAlone> left;
  CHECK(fetch::SweepWorkDirs(conv, /*dry_run=*/false, nullptr, &left).empty());
  CHECK(left.size() == 3);
  CHECK(ReadFile(mine / "notes.txt") == "precious");
  CHECK(ReadFile(mine / "sub" / "more.txt") == "precious");
  CHECK(ReadFile(unmarked / "image.raw") == "precious");
  CHECK(ReadFile(dead[0] / "theirs.txt") == "precious");
  CHECK_FALSE(fs::exists(dead[0] / "image.download"));  // the fill's own name went
  CHECK(fs::exists(dead[0] / fetch::kLockName));
}

TEST_CASE("a fill killed while making its working directory leaves nothing after a sweep") {
  TempDir tmp("halfmade");
  const fs::path conv = tmp / "conv";
  fs::create_directories(conv);
  const std::string prefix = fetch::kWorkDirPrefix;
  auto make_dir = [&](const std::string& tag, mode_t mode) {
    const fs::path d = conv / (prefix + tag);
    REQUIRE(::mkdir(d.c_str(), mode) == 0);
    REQUIRE(::chmod(d.c_str(), mode) == 0);  // whatever the umask
    return d;
  };
  // What the constructor leaves killed after mkdtemp, and after creating its lock.
  const fs::path empty = make_dir("HALF01", 0700);
  const fs::path empty_lock = make_dir("HALF02", 0700);
  WriteFile(empty_lock / fetch::kLockName, "");
  // Not what it leaves: not 0700, a lock with other bytes, a file of someone's.
  const fs::path wide = make_dir("OTHER1", 0755);
  const fs::path scribbled = make_dir("OTHER2", 0700);
  WriteFile(scribbled / fetch::kLockName, "x");
  const fs::path with_file = make_dir("OTHER3", 0700);
  WriteFile(with_file / "theirs.txt", "precious");
  // A constructor at work: its empty lock held.
  const fs::path live = make_dir("LIVE01", 0700);
  WriteFile(live / fetch::kLockName, "");
  const int held = ::open((live / fetch::kLockName).c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX) == 0);

  auto dead = fetch::ListDeadWorkDirs(conv);
  CHECK(dead.size() == 2);
  std::vector<fetch::LeftAlone> left;
  const auto swept = fetch::SweepWorkDirs(conv, /*dry_run=*/false, nullptr, &left);
  CHECK(swept.size() == 2);
  CHECK_FALSE(fs::exists(empty));
  CHECK_FALSE(fs::exists(empty_lock));
  CHECK(left.size() == 3);
  CHECK(fs::exists(wide));
  CHECK(ReadFile(scribbled / fetch::kLockName) == "x");
  CHECK(ReadFile(with_file / "theirs.txt") == "precious");
  CHECK(fs::exists(live / fetch::kLockName));
  ::close(held);
}

TEST_CASE("working directories made while sweeps run are never swept from under their fill") {
  TempDir tmp("sweeprace");
  const fs::path conv = tmp / "conv";
  fs::create_directories(conv);
  std::atomic<bool> stop{false};
  // Sweeps back to back: far more often than any cron or timer runs a pass.
  std::thread sweeper([&] {
    while (!stop) (void)fetch::SweepWorkDirs(conv, /*dry_run=*/false, nullptr, nullptr);
  });
  int made = 0;
  int usable = 0;
  std::string error;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  try {
    while (std::chrono::steady_clock::now() < until) {
      fetch::WorkDir w(conv, "img", nullptr);
      ++made;
      const int fd =
          ::open(w.File("image.raw").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ++usable;
        ::close(fd);
      }
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  stop = true;
  sweeper.join();
  CHECK_MESSAGE(error.empty(), error);
  CHECK(made > 0);
  CHECK(usable == made);
  CHECK(fs::is_empty(conv));
}

}  // namespace
}  // namespace cachemgr::test
