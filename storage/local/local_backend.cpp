// storage/local/local_backend.cpp: see local_backend.h for the layout and semantics.
// Over 600 lines: Impl (paths, sidecars, publishing, overlays, trash) is private to this
// file; it is to be split along those seams (the architecture work), with temporaries and
// the root already apart (local_temporaries.cpp, local_root.cpp).
#include "storage/local/local_backend.h"
#include "storage/local/local_files.h"

#include <cstdio>

#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include "cachemgr/error.h"
#include "storage/factory.h"
#include "storage/local/local_root.h"
#include "util/file_identity.h"
#include "util/hash.h"
#include "util/process.h"

namespace cachemgr::storage {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kBlock = 4096;
constexpr size_t kWriteBuffer = 1 << 20;
constexpr char kQcow2Magic[4] = {'Q', 'F', 'I', '\xfb'};

[[noreturn]] void Fail(Errc code, const std::string& message) { throw Error(code, message); }

std::string Errno(int e) { return std::strerror(e); }

[[noreturn]] void FailErrno(const std::string& what, const fs::path& path, int e) {
  Fail(e == ENOENT ? Errc::kNotFound : Errc::kBackend,
       what + " " + path.string() + ": " + Errno(e));
}

std::string RefName(const ImageRef& ref) { return ref.pool + "/" + ref.name; }

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Fd OpenOrFail(const fs::path& path, int flags, mode_t mode = 0) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) FailErrno("cannot open", path, errno);
  return Fd(fd);
}

void FsyncFd(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) FailErrno("fsync failed on", path, errno);
}

void FsyncDir(const fs::path& dir) {
  Fd fd = OpenOrFail(dir, O_RDONLY | O_DIRECTORY);
  FsyncFd(fd.get(), dir);
}

void PwriteAll(int fd, const char* data, size_t n, uint64_t offset, const fs::path& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      FailErrno("write failed on", path, errno);
    }
    data += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

std::string RandomHex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) out += kHex[rng() & 15];
  return out;
}

// A new file in `dir` under a name no image can have (images never start with '.'),
// locked (flock) for as long as the returned descriptor is open: a `.tmp-*` file whose
// lock is free belongs to a writer that died, and SweepTemporaries removes it. Keep the
// descriptor open until the temporary name is gone (published or unlinked).
std::pair<fs::path, Fd> MakeTemp(const fs::path& dir, const std::string& stem) {
  for (;;) {
    std::string tmpl = (dir / (".tmp-" + stem + "-XXXXXX")).string();
    int raw = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (raw < 0) FailErrno("cannot create a temporary file in", dir, errno);
    Fd fd(raw);
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) FailErrno("cannot lock", tmpl, errno);
    }
    // A sweep may have seen the file between mkostemp and flock, found it unlocked and
    // removed it: the name must still be ours, else start again under a new one.
    struct stat by_fd {};
    struct stat by_name {};
    if (::fstat(fd.get(), &by_fd) == 0 && ::lstat(tmpl.c_str(), &by_name) == 0 &&
        by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino) {
      return {fs::path(tmpl), std::move(fd)};
    }
  }
}

uint32_t Be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint64_t Be64(const unsigned char* p) { return (uint64_t{Be32(p)} << 32) | Be32(p + 4); }

struct Qcow2Header {
  bool is_qcow2 = false;
  uint64_t size = 0;
  std::optional<fs::path> backing;  // absolute
};

// Reads what the scans need from a qcow2 header (magic, virtual size, backing file name)
// without running qemu-img: a scan of every volume must stay cheap.
Qcow2Header ReadQcow2Header(const fs::path& path) {
  Qcow2Header h;
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) return h;
  Fd fd(raw);
  std::array<unsigned char, 32> buf{};
  if (::pread(fd.get(), buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) return h;
  if (std::memcmp(buf.data(), kQcow2Magic, 4) != 0) return h;
  h.is_qcow2 = true;
  uint64_t backing_offset = Be64(&buf[8]);
  uint32_t backing_size = Be32(&buf[16]);
  h.size = Be64(&buf[24]);
  if (backing_offset != 0 && backing_size > 0 && backing_size <= 1023) {
    std::string name(backing_size, '\0');
    if (::pread(fd.get(), name.data(), name.size(), static_cast<off_t>(backing_offset)) ==
        static_cast<ssize_t>(name.size())) {
      fs::path b(name);
      if (b.is_relative()) b = path.parent_path() / b;
      h.backing = b.lexically_normal();
    }
  }
  return h;
}

bool IsRegularFile(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// --- sidecar

struct SnapRecord {
  std::string name;
  bool is_protected = false;
  uint64_t size = 0;
};

struct Sidecar {
  std::string format = "raw";
  // Set when the file is a hard link of a file the cache does not own alone (see
  // AdoptShared): "dev:ino:size:mtime_ns:ctime_ns:nlink" when it was adopted.
  std::string shared_inode;
  // sha256 of the shared file's bytes when it was adopted: a link-count change moves
  // ctime as a write does, and only the bytes tell the two apart.
  std::string shared_sha256;
  std::map<std::string, std::string> metadata;
  std::vector<SnapRecord> snapshots;
  std::optional<SnapRef> parent;

  SnapRecord* Find(const std::string& snap) {
    for (auto& s : snapshots)
      if (s.name == snap) return &s;
    return nullptr;
  }
};

json ToJson(const Sidecar& s) {
  json j;
  j["schema"] = 1;
  j["format"] = s.format;
  if (!s.shared_inode.empty()) j["shared_inode"] = s.shared_inode;
  if (!s.shared_sha256.empty()) j["shared_sha256"] = s.shared_sha256;
  j["metadata"] = s.metadata;
  j["snapshots"] = json::array();
  for (const auto& snap : s.snapshots)
    j["snapshots"].push_back(
        {{"name", snap.name}, {"protected", snap.is_protected}, {"size", snap.size}});
  if (s.parent) {
    j["parent"] = {{"pool", s.parent->image.pool},
                   {"name", s.parent->image.name},
                   {"snap", s.parent->snap}};
  } else {
    j["parent"] = nullptr;
  }
  return j;
}

Sidecar FromJson(const json& j) {
  Sidecar s;
  s.format = j.value("format", "raw");
  s.shared_inode = j.value("shared_inode", "");
  s.shared_sha256 = j.value("shared_sha256", "");
  if (j.contains("metadata")) s.metadata = j["metadata"].get<std::map<std::string, std::string>>();
  if (j.contains("snapshots")) {
    for (const auto& e : j["snapshots"]) {
      s.snapshots.push_back({e.at("name").get<std::string>(), e.value("protected", false),
                             e.value("size", uint64_t{0})});
    }
  }
  if (j.contains("parent") && j["parent"].is_object()) {
    const auto& p = j["parent"];
    s.parent = SnapRef{{p.at("pool").get<std::string>(), p.at("name").get<std::string>()},
                       p.at("snap").get<std::string>()};
  }
  return s;
}

json ReadJsonFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) FailErrno("cannot read", path, errno ? errno : ENOENT);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    Fail(Errc::kCorrupt, "sidecar " + path.string() + ": " + e.what());
  }
}

class LocalReader final : public ImageReader {
 public:
  LocalReader(Fd fd, uint64_t size, fs::path path)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)) {}
  uint64_t size() const override { return size_; }
  size_t Read(uint64_t offset, std::span<std::byte> out) override {
    if (offset >= size_) return 0;
    size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
    size_t done = 0;
    while (done < want) {
      ssize_t r = ::pread(fd_.get(), out.data() + done, want - done,
                          static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        FailErrno("read failed on", path_, errno);
      }
      if (r == 0) {
        // Past the file's end but inside the image (a snapshot taken before a shrink
        // cannot happen; a sparse tail can): zeros.
        std::memset(out.data() + done, 0, want - done);
        done = want;
        break;
      }
      done += static_cast<size_t>(r);
    }
    return done;
  }

 private:
  Fd fd_;
  uint64_t size_;
  fs::path path_;
};

class LocalLock final : public Lock {
 public:
  LocalLock(Fd fd, fs::path path) : fd_(std::move(fd)), path_(std::move(path)) {}
  ~LocalLock() override {
    if (fd_.get() >= 0) ::flock(fd_.get(), LOCK_UN);
  }
  // Unlinked while held; AcquireLock re-checks after locking that it locked the file at
  // the path, so a waiter on the old file takes a new one.
  void Discard() override { ::unlink(path_.c_str()); }

 private:
  Fd fd_;
  fs::path path_;
};

struct Overlay {
  fs::path path;
  fs::path backing;
  std::optional<ImageRef> ref;  // set for images in a pool
  std::string trash_id;         // set for images in the trash
};

}  // namespace

// Declared in local_files.h.
void WriteDurable(const fs::path& path, const std::string& content) {
  auto [tmp, fd] = MakeTemp(path.parent_path(), path.filename().string());
  try {
    PwriteAll(fd.get(), content.data(), content.size(), 0, tmp);
    FsyncFd(fd.get(), tmp);
    // Renamed while still locked: a sweep never takes a temporary that is about to land.
    if (::rename(tmp.c_str(), path.c_str()) != 0) FailErrno("cannot rename into", path, errno);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  FsyncDir(path.parent_path());
}


// ---------------------------------------------------------------------------------

struct LocalBackend::Impl {
  LocalBackendOptions options;
  std::shared_ptr<spdlog::logger> log;
  fs::path root;
  CloneMode mode = CloneMode::kQcow2;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::recursive_mutex mu;  // sidecar read-modify-write
  // Clones hold it shared, so clones of one parent run side by side (their qemu-img run
  // is most of their time); what would pull a parent from under a clone in progress
  // (unprotect, remove, rename, flatten, purge) holds it exclusive. Taken before `mu`.
  std::shared_mutex users_mu;

  util::RunOptions run_options() const {
    util::RunOptions o;
    o.timeout = std::chrono::seconds(3600);
    return o;
  }
  std::string Qemu(const std::vector<std::string>& argv) const {
    return util::RunChecked(argv, run_options(), static_cast<int>(Errc::kBackend));
  }

  fs::path PoolDir(const std::string& pool) const { return root / pool; }
  fs::path PathOf(const ImageRef& ref) const { return root / ref.pool / ref.name; }
  fs::path SidecarPath(const ImageRef& ref) const {
    return root / ref.pool / ".meta" / (ref.name + ".json");
  }
  fs::path TrashDir() const { return root / ".trash"; }

  // The id of a trash folder for `name` ("<name>.<hex>") whose image is the file at
  // `path` (same device and inode): a move to the trash that a kill interrupted. "" if none.
  std::string TrashedCopyOf(const fs::path& path, const std::string& name) const {
    struct stat want {};
    if (::lstat(path.c_str(), &want) != 0) return "";
    const std::string prefix = name.substr(0, 100) + ".";
    std::error_code ec;
    for (const auto& dir : fs::directory_iterator(TrashDir(), ec)) {
      const std::string id = dir.path().filename().string();
      if (id.compare(0, prefix.size(), prefix) != 0) continue;
      struct stat st {};
      if (::lstat((dir.path() / "image").c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (st.st_dev == want.st_dev && st.st_ino == want.st_ino) return id;
    }
    return "";
  }
  fs::path BackingDir() const { return root / ".backing"; }

  // The stable backing name of the file at `path` (`.backing/<inode>`); empty when the
  // file cannot be stat'ed.
  fs::path StableOf(const fs::path& path) const {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {};
    return BackingDir() / std::to_string(st.st_ino);
  }

  // Makes (or finds) the stable backing name of `path` and returns it.
  fs::path EnsureStable(const fs::path& path) const {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
    auto stable = BackingDir() / std::to_string(st.st_ino);
    if (::link(path.c_str(), stable.c_str()) != 0) {
      int e = errno;
      struct stat have {};
      if (e != EEXIST) FailErrno("cannot link " + path.string() + " as", stable, e);
      // Made by an earlier clone. An inode number is not reused while this link holds it,
      // so the same number is the same file.
      if (::stat(stable.c_str(), &have) != 0 || have.st_ino != st.st_ino || have.st_dev != st.st_dev)
        Fail(Errc::kBackend, stable.string() + ": not a link of " + path.string() +
                                 " (move it away and retry)");
      return stable;
    }
    FsyncDir(BackingDir());
    return stable;
  }

  // Drops the stable name of a file whose last other name is going (or gone), when no
  // overlay names it.
  bool DropStableIfUnused(const fs::path& stable, const std::vector<Overlay>& overlays) const {
    if (stable.empty()) return false;
    for (const auto& o : overlays)
      if (o.backing == stable) return false;
    struct stat st {};
    if (::lstat(stable.c_str(), &st) != 0 || st.st_nlink > 1) return false;
    if (::unlink(stable.c_str()) != 0) return false;
    log->debug("dropped backing link {}", stable.string());
    return true;
  }

  // Stable names with no other name and no overlay: the old file of an image flattened
  // in place once its overlays are gone, or a link a crash left. Dropping one can free
  // the one it was backed by, hence the loop.
  void SweepStable() const {
    std::error_code ec;
    bool dropped = true;
    while (dropped) {
      dropped = false;
      auto overlays = ScanOverlays();
      for (const auto& e : fs::directory_iterator(BackingDir(), ec)) {
        if (DropStableIfUnused(e.path(), overlays)) {
          dropped = true;
          std::erase_if(overlays, [&](const Overlay& o) { return o.path == e.path(); });
        }
      }
    }
    FsyncDir(BackingDir());
  }

  static void Check(const ImageRef& ref) {
    ValidateName("pool", ref.pool);
    ValidateName("image", ref.name);
  }

  void EnsurePool(const std::string& pool) const {
    std::error_code ec;
    fs::create_directories(PoolDir(pool) / ".meta", ec);
    if (ec) Fail(Errc::kBackend, "cannot create pool folder " + PoolDir(pool).string() + ": " +
                                     ec.message());
  }

  bool ExistsChecked(const ImageRef& ref) const { return IsRegularFile(PathOf(ref)); }

  void Require(const ImageRef& ref) const {
    Check(ref);
    if (!ExistsChecked(ref))
      Fail(Errc::kNotFound, "image " + RefName(ref) + ": not found under " + root.string());
  }

  Sidecar Load(const ImageRef& ref) const {
    auto path = SidecarPath(ref);
    if (!fs::exists(path)) return {};  // an adopted or foreign raw file
    return FromJson(ReadJsonFile(path));
  }
  void Save(const ImageRef& ref, const Sidecar& s) const {
    EnsurePool(ref.pool);
    WriteDurable(SidecarPath(ref), ToJson(s).dump(2));
  }
  void DropSidecar(const ImageRef& ref) const { ::unlink(SidecarPath(ref).c_str()); }

  // Writes the sidecar of an image about to appear at `ref`, never over the sidecar of an
  // image that is there (kAlreadyExists then: a foreign image keeps its metadata). A
  // sidecar without an image (a crash between the two links) is replaced. Returns the
  // sidecar's inode for DropNewSidecar.
  // The sidecar stays locked (flock, held by `held`) until the caller drops the returned
  // value, after its image is linked: a pass never takes a sidecar whose image is on its
  // way for one a kill left alone (SweepLoneSidecars).
  struct NewSidecar {
    ino_t ino = 0;
    Fd held;
  };
  NewSidecar SaveNew(const ImageRef& ref, const Sidecar& s) const {
    EnsurePool(ref.pool);
    const auto path = SidecarPath(ref);
    const std::string content = ToJson(s).dump(2);
    auto [tmp, fd] = MakeTemp(path.parent_path(), path.filename().string());
    struct stat st {};
    try {
      PwriteAll(fd.get(), content.data(), content.size(), 0, tmp);
      FsyncFd(fd.get(), tmp);
      if (::fstat(fd.get(), &st) != 0) FailErrno("cannot stat", tmp, errno);
      // fd (and its lock) stays open until the temporary name is gone: see MakeTemp.
      if (::link(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        if (e != EEXIST) FailErrno("cannot link into place", path, e);
        if (ExistsChecked(ref))
          Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
        if (::rename(tmp.c_str(), path.c_str()) != 0) FailErrno("cannot rename into", path, errno);
      }
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
    ::unlink(tmp.c_str());
    FsyncDir(path.parent_path());
    return {st.st_ino, std::move(fd)};
  }
  // Removes the sidecar SaveNew wrote for an image that then did not appear, unless
  // something else has replaced it since.
  void DropNewSidecar(const ImageRef& ref, ino_t ino) const {
    struct stat st {};
    const auto path = SidecarPath(ref);
    if (::lstat(path.c_str(), &st) == 0 && st.st_ino == ino) ::unlink(path.c_str());
  }

  // Identity of the file at `path`: its inode number and birth time. An inode number is
  // reused once its file is gone; with the birth time it names one file on the root.
  static std::string IdentityOf(const fs::path& path) {
    struct statx stx {};
    if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME, &stx) != 0)
      FailErrno("cannot stat", path, errno);
    std::string id = "ino-" + std::to_string(stx.stx_ino);
    if (stx.stx_mask & STATX_BTIME) {
      id +=
          "-" + std::to_string(stx.stx_btime.tv_sec) + "." + std::to_string(stx.stx_btime.tv_nsec);
    }
    return id;
  }

  // The sidecar says what format a file is: a raw guest disk may begin with qcow2's magic,
  // and reading it as qcow2 would follow a backing file the guest chose. A sidecar that
  // says qcow2 over a file without the magic is trusted to be raw.
  std::string Format(const ImageRef& ref, const Sidecar& s) const {
    if (s.format == "qcow2" && ReadQcow2Header(PathOf(ref)).is_qcow2) return "qcow2";
    return "raw";
  }

  uint64_t VirtualSize(const ImageRef& ref, const std::string& format) const {
    auto path = PathOf(ref);
    if (format == "qcow2") return ReadQcow2Header(path).size;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  // A hard-linked base is only as good as the inode it shares: refused (kCorrupt) once its
  // bytes, size or times differ from when it was adopted. A link added or dropped (the
  // cache's own `.backing` name or rename, or anyone's `ln`) moves ctime with the link
  // count, and so does a write with its mtime put back: when only ctime and the link
  // count moved, the bytes are hashed and compared with those adopted, and the new
  // identity is recorded only if they are the same.
  void CheckShared(const ImageRef& ref, Sidecar& s) {
    if (s.shared_inode.empty()) return;
    auto path = PathOf(ref);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
    const std::string now = SharedIdentity(st);
    if (now == s.shared_inode) return;
    if (util::OnlyLinksMoved(s.shared_inode, now) && !s.shared_sha256.empty()) {
      const auto [sha, read_from] = HashShared(path);
      if (sha == s.shared_sha256 && read_from == now) {
        s.shared_inode = SettledIdentity(st);
        Save(ref, s);
        return;
      }
    }
    // The engine records the image id in the entry's metadata (cachemgr.image_id).
    auto id = s.metadata.find("cachemgr.image_id");
    const std::string who = id != s.metadata.end() && !id->second.empty()
                                ? "image " + id->second + " (entry " + RefName(ref) + ")"
                                : "entry " + RefName(ref);
    Fail(Errc::kCorrupt,
         who +
             ": refused: it is a hard link of a file outside the cache "
             "(backend.local.hardlink_prefill) and that file changed since it was adopted "
             "(identity " +
             s.shared_inode + ", now " + now +
             "); remove the entry (cachemgr evict) so the image is fetched again");
  }
  // After a link of our own to or from a shared file (rename, `.backing`): its ctime moved
  // for that alone, so the identity is recorded anew (checked just before).
  void Relinked(const ImageRef& ref, Sidecar& s) {
    if (s.shared_inode.empty()) return;
    auto path = PathOf(ref);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
    s.shared_inode = SettledIdentity(st);
    Save(ref, s);
  }
  static std::string SharedIdentity(const struct stat& st) { return util::FileIdentity(st); }
  // sha256 of the file at `path` and the identity it had while read ("" digest if it
  // changed meanwhile: the caller then sees no match).
  static std::pair<std::string, std::string> HashShared(const fs::path& path) {
    Fd fd = OpenOrFail(path, O_RDONLY);
    struct stat before {};
    if (::fstat(fd.get(), &before) != 0) FailErrno("cannot stat", path, errno);
    util::Hasher sha("sha256");
    std::vector<char> buf(1 << 20);
    for (;;) {
      const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) FailErrno("cannot read", path, errno);
      if (n == 0) break;
      sha.Update(buf.data(), static_cast<size_t>(n));
    }
    struct stat after {};
    if (::fstat(fd.get(), &after) != 0) FailErrno("cannot stat", path, errno);
    const std::string id = SharedIdentity(before);
    if (SharedIdentity(after) != id) return {"", ""};
    return {sha.HexDigest(), id};
  }
  static std::string SettledIdentity(const struct stat& st) {
    return util::SettledFileIdentity(st);
  }

  void ApplyOwnership(int fd, const fs::path& path) const {
    if (uid || gid) {
      if (::fchown(fd, uid ? *uid : static_cast<uid_t>(-1), gid ? *gid : static_cast<gid_t>(-1)) !=
          0)
        FailErrno("cannot chown", path, errno);
    }
    if (::fchmod(fd, static_cast<mode_t>(options.mode & 07777)) != 0)
      FailErrno("cannot chmod", path, errno);
  }

  // Makes `tmp` visible as `ref` with sidecar `s`, without replacing anything (link(2)
  // fails on an existing name, rename(2) would not), then drops the temporary name, also
  // on failure. The sidecar goes first, so the image never appears without it.
  void Publish(const fs::path& tmp, const ImageRef& ref, const Sidecar& s) const {
    NewSidecar sidecar;
    try {
      sidecar = SaveNew(ref, s);
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
    const auto final_path = PathOf(ref);
    if (::link(tmp.c_str(), final_path.c_str()) != 0) {
      int e = errno;
      ::unlink(tmp.c_str());
      DropNewSidecar(ref, sidecar.ino);
      if (e == EEXIST) Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
      FailErrno("cannot link into place", final_path, e);
    }
    ::unlink(tmp.c_str());
    FsyncDir(final_path.parent_path());
  }

  void RequireFree(const ImageRef& ref) const {
    Check(ref);
    if (fs::exists(PathOf(ref)))
      Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
  }

  // Every qcow2 file under the root with a backing file: the pools and the trash. Nova's
  // image cache manager decides what a base is used by the same way.
  std::vector<Overlay> ScanOverlays() const {
    std::vector<Overlay> out;
    std::error_code ec;
    for (const auto& pool : fs::directory_iterator(root, ec)) {
      auto pool_name = pool.path().filename().string();
      if (!pool.is_directory() || pool_name.empty() || pool_name[0] == '.') continue;
      std::error_code ec2;
      for (const auto& file : fs::directory_iterator(pool.path(), ec2)) {
        auto name = file.path().filename().string();
        if (name.empty() || name[0] == '.' || !file.is_regular_file()) continue;
        auto h = ReadQcow2Header(file.path());
        if (h.is_qcow2 && h.backing) out.push_back({file.path(), *h.backing, ImageRef{pool_name, name}, {}});
      }
    }
    for (const auto& dir : fs::directory_iterator(TrashDir(), ec)) {
      auto image = dir.path() / "image";
      auto h = ReadQcow2Header(image);
      if (h.is_qcow2 && h.backing)
        out.push_back({image, *h.backing, std::nullopt, dir.path().filename().string()});
    }
    // A stable name whose image was flattened in place (a new inode under the old name)
    // keeps the old overlay for its own users: it is a user of its parent too.
    for (const auto& file : fs::directory_iterator(BackingDir(), ec)) {
      auto h = ReadQcow2Header(file.path());
      if (h.is_qcow2 && h.backing) out.push_back({file.path(), *h.backing, std::nullopt, {}});
    }
    return out;
  }

  // Overlays whose backing file is the file at `path`, by its own name or its stable one.
  std::vector<Overlay> UsersOf(const fs::path& path) const {
    return UsersOf(path, ScanOverlays());
  }
  std::vector<Overlay> UsersOf(const fs::path& path, const std::vector<Overlay>& overlays) const {
    std::vector<Overlay> users;
    auto target = path.lexically_normal();
    auto stable = StableOf(path);
    for (const auto& o : overlays)
      if (o.backing == target || (!stable.empty() && o.backing == stable)) users.push_back(o);
    return users;
  }

  Sidecar SidecarOf(const Overlay& o) const {
    if (o.ref) return Load(*o.ref);
    if (o.trash_id.empty()) return {};  // a stable name only: no sidecar of its own
    auto entry = ReadJsonFile(TrashDir() / o.trash_id / "entry.json");
    return FromJson(entry.value("sidecar", json::object()));
  }

  void Rebase(const fs::path& overlay, const fs::path& new_backing,
              const std::string& backing_format) const {
    // -u rewrites the header only: the backing file's content is the same bytes.
    Qemu({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", backing_format, "-b",
          new_backing.string(), overlay.string()});
  }

  // Writes an independent raw copy of the first `size` bytes of `src` into `dest`.
  void Materialize(const fs::path& src, const std::string& src_format, uint64_t size,
                   const fs::path& dest, int dest_fd, bool reflink,
                   const ProgressFn& progress) const {
    if (src_format == "qcow2") {
      Qemu({"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", src.string(), dest.string()});
      if (::ftruncate(dest_fd, static_cast<off_t>(size)) != 0)
        FailErrno("cannot truncate", dest, errno);
      if (progress) progress(size, size);
      return;
    }
    Fd in = OpenOrFail(src, O_RDONLY);
    if (reflink) {
      if (::ioctl(dest_fd, FICLONE, in.get()) != 0)
        FailErrno("reflink (FICLONE) from " + src.string() + " failed for", dest, errno);
      if (::ftruncate(dest_fd, static_cast<off_t>(size)) != 0)
        FailErrno("cannot truncate", dest, errno);
      if (progress) progress(size, size);
      return;
    }
    if (::ftruncate(dest_fd, static_cast<off_t>(size)) != 0)
      FailErrno("cannot truncate", dest, errno);
    // Copy only the data extents: holes stay holes.
    uint64_t off = 0;
    uint64_t done = 0;
    std::string buf;
    while (off < size) {
      off_t data = ::lseek(in.get(), static_cast<off_t>(off), SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;  // only a hole remains
        FailErrno("SEEK_DATA failed on", src, errno);
      }
      off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
      if (hole < 0) FailErrno("SEEK_HOLE failed on", src, errno);
      uint64_t start = static_cast<uint64_t>(data);
      uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
      while (start < end) {
        loff_t in_off = static_cast<loff_t>(start);
        loff_t out_off = static_cast<loff_t>(start);
        size_t len = static_cast<size_t>(std::min<uint64_t>(end - start, 64 << 20));
        ssize_t n = ::copy_file_range(in.get(), &in_off, dest_fd, &out_off, len, 0);
        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
          // Older kernels or odd filesystems: plain reads and writes.
          buf.resize(std::min<size_t>(len, 1 << 20));
          ssize_t r = ::pread(in.get(), buf.data(), std::min(len, buf.size()), in_off);
          if (r <= 0) FailErrno("read failed on", src, r < 0 ? errno : EIO);
          PwriteAll(dest_fd, buf.data(), static_cast<size_t>(r), start, dest);
          n = r;
        } else if (n < 0) {
          FailErrno("copy_file_range from " + src.string() + " failed for", dest, errno);
        } else if (n == 0) {
          break;
        }
        start += static_cast<uint64_t>(n);
        done += static_cast<uint64_t>(n);
        if (progress) progress(done, size);
      }
      off = std::max<uint64_t>(static_cast<uint64_t>(hole), start);
    }
    if (progress) progress(size, size);
  }

  // Makes `dest` as an independent raw copy of `src` (its first `size` bytes).
  void CopyTo(const ImageRef& src, uint64_t size, const ImageRef& dest,
              const ProgressFn& progress) {
    Sidecar src_sidecar = Load(src);
    std::string format = Format(src, src_sidecar);
    RequireFree(dest);
    EnsurePool(dest.pool);
    auto [tmp, fd] = MakeTemp(PoolDir(dest.pool), dest.name);
    try {
      Materialize(PathOf(src), format, size, tmp, fd.get(), mode == CloneMode::kReflink,
                  progress);
      ApplyOwnership(fd.get(), tmp);
      FsyncFd(fd.get(), tmp);
      RequireFree(dest);  // again: the copy took time
      Publish(tmp, dest, Sidecar{});
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
  }
};

// ---------------------------------------------------------------------------------

namespace {

class LocalWriter final : public ImageWriter {
 public:
  LocalWriter(LocalBackend::Impl& impl, ImageRef ref, uint64_t size)
      : impl_(impl), ref_(std::move(ref)), size_(size) {
    impl_.EnsurePool(ref_.pool);
    auto [tmp, fd] = MakeTemp(impl_.PoolDir(ref_.pool), ref_.name);
    tmp_ = tmp;
    fd_ = std::move(fd);
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) {
      int e = errno;
      ::unlink(tmp_.c_str());
      FailErrno("cannot size", tmp_, e);
    }
    buffer_.reserve(kWriteBuffer);
    start_ = std::chrono::steady_clock::now();
  }

  ~LocalWriter() override {
    if (!finished_) {
      ::unlink(tmp_.c_str());  // before the lock goes: see MakeTemp
      fd_.Reset();
    }
  }

  void Append(std::span<const std::byte> data) override {
    if (finished_) Fail(Errc::kInternal, "image " + RefName(ref_) + ": Append after Finish");
    if (appended_ + data.size() > size_)
      Fail(Errc::kInvalidArgument, "image " + RefName(ref_) + ": data exceeds its size of " +
                                       std::to_string(size_) + " bytes");
    const char* p = reinterpret_cast<const char*>(data.data());
    size_t left = data.size();
    while (left > 0) {
      size_t n = std::min(left, kWriteBuffer - buffer_.size());
      buffer_.append(p, n);
      p += n;
      left -= n;
      appended_ += n;
      if (buffer_.size() == kWriteBuffer) Flush();
    }
  }

  void AppendZeros(uint64_t n) override {
    if (finished_) Fail(Errc::kInternal, "image " + RefName(ref_) + ": Append after Finish");
    if (appended_ + n > size_)
      Fail(Errc::kInvalidArgument, "image " + RefName(ref_) + ": data exceeds its size of " +
                                       std::to_string(size_) + " bytes");
    // The buffer may hold data: zeros fill it up to its end.
    if (!buffer_.empty()) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, kWriteBuffer - buffer_.size()));
      buffer_.append(k, '\0');
      appended_ += k;
      n -= k;
      if (buffer_.size() == kWriteBuffer) Flush();
      if (n == 0) return;
    }
    // Whole buffers of zeros: the file was sized up front, they stay a hole.
    const uint64_t skip = n - n % kWriteBuffer;
    flushed_ += skip;
    appended_ += skip;
    n -= skip;
    buffer_.append(static_cast<size_t>(n), '\0');
    appended_ += n;
  }

  ImportStats Finish() override {
    if (finished_) Fail(Errc::kInternal, "image " + RefName(ref_) + ": Finish called twice");
    Flush();
    impl_.ApplyOwnership(fd_.get(), tmp_);
    FsyncFd(fd_.get(), tmp_);
    // fd_ (and its lock) stays open until the temporary name is gone: see MakeTemp.
    // Checked again: the name may have been taken while the data streamed in, and the
    // sidecar below must not overwrite that image's.
    impl_.RequireFree(ref_);
    finished_ = true;  // Publish removes the temporary name itself, also on failure
    impl_.Publish(tmp_, ref_, Sidecar{});
    fd_.Reset();
    stats_.bytes_in = appended_;
    stats_.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - start_);
    return stats_;
  }

 private:
  // Writes the buffer (which starts at a multiple of kWriteBuffer), skipping all-zero
  // 4 KiB blocks so they stay holes.
  void Flush() {
    size_t pos = 0;
    while (pos < buffer_.size()) {
      size_t block = std::min<size_t>(kBlock, buffer_.size() - pos);
      if (IsZero(pos, block)) {
        pos += block;
        continue;
      }
      size_t run_end = pos + block;
      while (run_end < buffer_.size()) {
        size_t next = std::min<size_t>(kBlock, buffer_.size() - run_end);
        if (IsZero(run_end, next)) break;
        run_end += next;
      }
      PwriteAll(fd_.get(), buffer_.data() + pos, run_end - pos, flushed_ + pos, tmp_);
      stats_.bytes_written += run_end - pos;
      pos = run_end;
    }
    flushed_ += buffer_.size();
    buffer_.clear();
  }

  bool IsZero(size_t pos, size_t n) const {
    const char* p = buffer_.data() + pos;
    // The first byte is zero and every byte equals the next: memcmp runs at memory speed.
    return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
  }

  LocalBackend::Impl& impl_;
  ImageRef ref_;
  uint64_t size_;
  fs::path tmp_;
  Fd fd_;
  std::string buffer_;
  uint64_t appended_ = 0;
  uint64_t flushed_ = 0;
  bool finished_ = false;
  ImportStats stats_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

// ---------------------------------------------------------------------------------

bool LocalBackend::ReflinkWorks(const fs::path& dir) {
  try {
    auto [a, fa] = MakeTemp(dir, "reflink-probe-a");
    auto [b, fb] = MakeTemp(dir, "reflink-probe-b");
    std::string block(kBlock, 'x');
    bool ok = ::pwrite(fa.get(), block.data(), block.size(), 0) ==
                  static_cast<ssize_t>(block.size()) &&
              ::ioctl(fb.get(), FICLONE, fa.get()) == 0;
    ::unlink(a.c_str());
    ::unlink(b.c_str());
    return ok;
  } catch (const Error&) {
    return false;
  }
}

LocalBackend::LocalBackend(const LocalBackendOptions& options,
                           std::shared_ptr<spdlog::logger> logger)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.options = options;
  m.log = logger ? std::move(logger) : std::make_shared<spdlog::logger>("cachemgr.local");
  if (options.root.empty()) Fail(Errc::kConfig, "backend.local.root: must not be empty");
  std::error_code ec;
  // Before anything is created: the root must be the cache's own folder.
  ClaimLocalRoot(fs::absolute(options.root));
  m.root = fs::weakly_canonical(fs::absolute(options.root));
  for (const char* sub : {"_base", "volumes", ".trash", ".backing", ".locks", ".tmp"}) {
    fs::create_directories(m.root / sub, ec);
    if (ec)
      Fail(Errc::kConfig, "backend.local.root: cannot create " + (m.root / sub).string() + ": " +
                              ec.message());
  }
  fs::create_directories(m.root / "_base" / ".meta", ec);
  fs::create_directories(m.root / "volumes" / ".meta", ec);
  if (options.mode > 07777)
    Fail(Errc::kConfig, "backend.local.mode: not a permission mode: " + std::to_string(options.mode));
  if (!options.owner.empty()) {
    struct passwd* pw = ::getpwnam(options.owner.c_str());
    if (!pw) Fail(Errc::kConfig, "backend.local.owner: unknown user '" + options.owner + "'");
    m.uid = pw->pw_uid;
  }
  if (!options.group.empty()) {
    struct group* gr = ::getgrnam(options.group.c_str());
    if (!gr) Fail(Errc::kConfig, "backend.local.group: unknown group '" + options.group + "'");
    m.gid = gr->gr_gid;
  }
  switch (options.clone_mode) {
    case CloneMode::kAuto:
      m.mode = ReflinkWorks(m.root / ".tmp") ? CloneMode::kReflink : CloneMode::kQcow2;
      break;
    case CloneMode::kReflink:
      if (!ReflinkWorks(m.root / ".tmp"))
        Fail(Errc::kConfig, "backend.local.clone_mode: reflink is not supported on " +
                                m.root.string() + " (use qcow2, copy or auto)");
      m.mode = CloneMode::kReflink;
      break;
    default:
      m.mode = options.clone_mode;
  }
  static const char* kModeNames[] = {"auto", "qcow2", "reflink", "copy"};
  m.log->info("local backend ready root={} clone_mode={}", m.root.string(),
              kModeNames[static_cast<int>(m.mode)]);
}

LocalBackend::~LocalBackend() = default;

CloneMode LocalBackend::clone_mode() const { return impl_->mode; }
fs::path LocalBackend::PathOf(const ImageRef& ref) const { return impl_->PathOf(ref); }
std::string LocalBackend::FormatOf(const ImageRef& ref) {
  impl_->Require(ref);
  return impl_->Format(ref, impl_->Load(ref));
}

std::string LocalBackend::kind() const { return "local"; }
std::string LocalBackend::location() const { return impl_->root.string(); }
std::string LocalBackend::entry_pool() const { return "_base"; }
std::string LocalBackend::volume_pool() const { return "volumes"; }
std::string LocalBackend::cluster_id() const { return ""; }

bool LocalBackend::Exists(const ImageRef& ref) {
  Impl::Check(ref);
  return impl_->ExistsChecked(ref);
}

ImageInfo LocalBackend::Stat(const ImageRef& ref) {
  impl_->Require(ref);
  Sidecar s = impl_->Load(ref);
  ImageInfo info;
  info.ref = ref;
  info.size = impl_->VirtualSize(ref, impl_->Format(ref, s));
  info.parent = Parent(ref);
  return info;
}

std::vector<std::string> LocalBackend::List(const std::string& pool) {
  ValidateName("pool", pool);
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(impl_->PoolDir(pool), ec)) {
    auto name = e.path().filename().string();
    if (name.empty() || name[0] == '.' || !e.is_regular_file()) continue;
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t LocalBackend::AllocatedBytes(const ImageRef& ref) {
  impl_->Require(ref);
  struct stat st {};
  auto path = PathOf(ref);
  if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

std::unique_ptr<ImageWriter> LocalBackend::Create(const ImageRef& ref, uint64_t size) {
  impl_->RequireFree(ref);
  return std::make_unique<LocalWriter>(*impl_, ref, size);
}

bool LocalBackend::Adopt(const fs::path& raw_file, const ImageRef& ref) {
  impl_->RequireFree(ref);
  if (!IsRegularFile(raw_file))
    Fail(Errc::kNotFound, "adopt " + raw_file.string() + ": not a regular file");
  impl_->EnsurePool(ref.pool);
  auto dest = PathOf(ref);
  const auto sidecar = impl_->SaveNew(ref, Sidecar{});
  if (::link(raw_file.c_str(), dest.c_str()) != 0) {
    int e = errno;
    impl_->DropNewSidecar(ref, sidecar.ino);
    if (e == EEXIST) Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
    // Another filesystem, a hard-link protection (fs.protected_hardlinks) or a link count
    // limit: the caller copies instead.
    if (e == EXDEV || e == EPERM || e == EMLINK || e == EACCES) {
      impl_->log->info("adopt falls back to a copy image={} file={} cause={}", RefName(ref),
                       raw_file.string(), Errno(e));
      return false;
    }
    FailErrno("cannot link " + raw_file.string() + " as", dest, e);
  }
  // The owner and mode apply to the shared inode: the hypervisor user must read it.
  Fd fd = OpenOrFail(dest, O_RDONLY);
  impl_->ApplyOwnership(fd.get(), dest);
  FsyncDir(dest.parent_path());
  impl_->log->info("adopted image={} file={} bytes_copied=0", RefName(ref), raw_file.string());
  return true;
}

bool LocalBackend::AdoptShared(const fs::path& file, const ImageRef& ref) {
  impl_->RequireFree(ref);
  // /proc/self/fd/N reaches the caller's open file itself, whatever its name is now.
  Fd src = OpenOrFail(file, O_RDONLY);
  struct stat st {};
  if (::fstat(src.get(), &st) != 0) FailErrno("cannot stat", file, errno);
  if (!S_ISREG(st.st_mode)) Fail(Errc::kRefused, "adopt " + file.string() + ": not a regular file");
  impl_->EnsurePool(ref.pool);
  auto dest = PathOf(ref);

  // A reflink: an inode of our own sharing extents copy-on-write; owner and mode apply
  // to it alone.
  {
    auto [tmp, fd] = MakeTemp(impl_->PoolDir(ref.pool), ref.name);
    if (::ioctl(fd.get(), FICLONE, src.get()) == 0) {
      try {
        impl_->ApplyOwnership(fd.get(), tmp);
        FsyncFd(fd.get(), tmp);
        // Publish writes the sidecar, never over another image's, and drops the temporary.
        impl_->Publish(tmp, ref, Sidecar{});
      } catch (...) {
        ::unlink(tmp.c_str());
        throw;
      }
      impl_->log->info("adopted image={} file={} how=reflink bytes_copied=0", RefName(ref),
                       file.string());
      return true;
    }
    ::unlink(tmp.c_str());
  }
  if (!impl_->options.hardlink_prefill) return false;
  // A hard link shares the inode: chown or chmod of the base would change the source.
  const bool owner_differs = (impl_->uid && *impl_->uid != st.st_uid) ||
                             (impl_->gid && *impl_->gid != st.st_gid) ||
                             (st.st_mode & 07777) != (impl_->options.mode & 07777);
  if (owner_differs) {
    impl_->log->info(
        "adopt copies: the configured owner/group/mode would change the shared file image={} "
        "file={}",
        RefName(ref), file.string());
    return false;
  }
  std::lock_guard lock(impl_->mu);
  // Never over the sidecar of an image that is there (see SaveNew).
  const auto new_sidecar = impl_->SaveNew(ref, Sidecar{});
  if (::linkat(AT_FDCWD, file.c_str(), AT_FDCWD, dest.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    int e = errno;
    impl_->DropNewSidecar(ref, new_sidecar.ino);
    if (e == EEXIST) Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
    if (e == EXDEV || e == EPERM || e == EMLINK || e == EACCES || e == ENOENT) {
      impl_->log->info("adopt falls back to a copy image={} file={} cause={}", RefName(ref),
                       file.string(), Errno(e));
      return false;
    }
    FailErrno("cannot link " + file.string() + " as", dest, e);
  }
  struct stat linked {};
  if (::stat(dest.c_str(), &linked) != 0 || linked.st_ino != st.st_ino) {
    ::unlink(dest.c_str());
    impl_->DropSidecar(ref);
    Fail(Errc::kCorrupt, "adopt " + file.string() + ": the linked file is not the one opened");
  }
  Sidecar s;
  // The bytes as adopted, so a later link-count change can be told from a rewrite.
  const auto [sha, hashed_as] = Impl::HashShared(dest);
  if (sha.empty() || hashed_as != Impl::SharedIdentity(linked)) {
    ::unlink(dest.c_str());
    impl_->DropSidecar(ref);
    Fail(Errc::kCorrupt, "adopt " + file.string() + ": the file changed while it was linked");
  }
  s.shared_sha256 = sha;
  s.shared_inode = Impl::SettledIdentity(linked);
  impl_->Save(ref, s);
  FsyncDir(dest.parent_path());
  impl_->log->info("adopted image={} file={} how=hardlink identity={} bytes_copied=0", RefName(ref),
                   file.string(), s.shared_inode);
  return true;
}

void LocalBackend::RequireIntact(const ImageRef& ref) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  impl_->CheckShared(ref, s);
}

std::unique_ptr<ImageReader> LocalBackend::Open(const ImageRef& ref,
                                                const std::optional<std::string>& snap) {
  impl_->Require(ref);
  Sidecar s = impl_->Load(ref);
  {
    std::lock_guard lock(impl_->mu);
    impl_->CheckShared(ref, s);
  }
  std::string format = impl_->Format(ref, s);
  uint64_t size = impl_->VirtualSize(ref, format);
  if (snap) {
    ValidateName("snapshot", *snap);
    auto* rec = s.Find(*snap);
    if (!rec) Fail(Errc::kNotFound, "snapshot " + RefName(ref) + "@" + *snap + ": not found");
    size = std::min(size, rec->size);
  }
  auto path = PathOf(ref);
  if (format == "raw") return std::make_unique<LocalReader>(OpenOrFail(path, O_RDONLY), size, path);
  // A qcow2 overlay is read through a raw view of it; the view is unlinked at once and
  // lives as long as the reader holds it open.
  auto [tmp, fd] = MakeTemp(impl_->root / ".tmp", "view");
  try {
    impl_->Qemu({"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", path.string(),
                 tmp.string()});
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  Fd view = OpenOrFail(tmp, O_RDONLY);
  ::unlink(tmp.c_str());
  return std::make_unique<LocalReader>(std::move(view), size, path);
}

void LocalBackend::Resize(const ImageRef& ref, uint64_t size) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  std::string format = impl_->Format(ref, impl_->Load(ref));
  uint64_t current = impl_->VirtualSize(ref, format);
  if (size < current)
    Fail(Errc::kInvalidArgument, "image " + RefName(ref) + ": cannot shrink from " +
                                     std::to_string(current) + " to " + std::to_string(size) +
                                     " bytes");
  if (size == current) return;
  auto path = PathOf(ref);
  if (format == "qcow2") {
    impl_->Qemu({"qemu-img", "resize", "-q", "-f", "qcow2", path.string(), std::to_string(size)});
    return;
  }
  Fd fd = OpenOrFail(path, O_WRONLY);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) FailErrno("cannot grow", path, errno);
  FsyncFd(fd.get(), path);
}

void LocalBackend::Rename(const ImageRef& from, const std::string& to_name) {
  impl_->Require(from);
  ImageRef to{from.pool, to_name};
  // Processes (hosts sharing the root) renaming onto one name take turns: SaveNew takes a
  // sidecar without an image for a crash's leftover, which it is not while another
  // rename is between its sidecar and its link. The lock's file goes with the rename.
  char key[32];
  std::snprintf(key, sizeof key, "rename-%016zx", std::hash<std::string>{}(to.pool + "/" + to_name));
  auto name_lock = AcquireLock(key, std::chrono::seconds(30));
  struct DiscardOnExit {
    Lock* lock;
    ~DiscardOnExit() {
      try {
        lock->Discard();
      } catch (...) {
      }
    }
  } discard{name_lock.get()};
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  impl_->RequireFree(to);
  Sidecar s = impl_->Load(from);
  impl_->CheckShared(from, s);
  std::string format = impl_->Format(from, s);
  auto from_path = PathOf(from);
  auto to_path = PathOf(to);
  // Sidecar first: the image never appears at its new name without it, and never over
  // the sidecar of an image that took the name meanwhile (link(2) does not replace).
  const auto sidecar = impl_->SaveNew(to, s);
  if (::link(from_path.c_str(), to_path.c_str()) != 0) {
    int e = errno;
    impl_->DropNewSidecar(to, sidecar.ino);
    if (e == EEXIST) Fail(Errc::kAlreadyExists, "image " + RefName(to) + ": already exists");
    FailErrno("cannot link " + from_path.string() + " as", to_path, e);
  }
  // Overlays name their backing file by path: point them at the new name before the old
  // one goes, and carry their recorded parent along.
  const auto from_normal = from_path.lexically_normal();
  for (const auto& o : impl_->UsersOf(from_path)) {
    // Ours name the stable link, which does not move; only others' need the new name.
    if (o.backing == from_normal) impl_->Rebase(o.path, to_path, format);
    if (o.ref) {
      Sidecar cs = impl_->Load(*o.ref);
      if (cs.parent && cs.parent->image == from) {
        cs.parent->image = to;
        impl_->Save(*o.ref, cs);
      }
    }
  }
  ::unlink(from_path.c_str());
  impl_->DropSidecar(from);
  impl_->Relinked(to, s);
  FsyncDir(from_path.parent_path());
}

std::string LocalBackend::Identity(const ImageRef& ref) {
  impl_->Require(ref);
  return Impl::IdentityOf(PathOf(ref));
}

RemoveOutcome LocalBackend::Remove(const ImageRef& ref) {
  Impl::Check(ref);
  if (!impl_->ExistsChecked(ref)) {
    // A sidecar without its image is what a kill between Publish's two links leaves (the
    // sidecar goes first). The caller owns the name: the leftover goes with the remove.
    std::lock_guard lock(impl_->mu);
    if (!impl_->ExistsChecked(ref)) impl_->DropSidecar(ref);
  }
  impl_->Require(ref);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  auto path = PathOf(ref);
  auto overlays = impl_->ScanOverlays();
  auto users = impl_->UsersOf(path, overlays);
  if (users.empty()) {
    auto stable = impl_->StableOf(path);
    if (::unlink(path.c_str()) != 0) FailErrno("cannot remove", path, errno);
    impl_->DropSidecar(ref);
    FsyncDir(path.parent_path());
    // The overlays seen above, less the file just removed: what still names a backing.
    std::erase_if(overlays, [&](const Overlay& o) { return o.path == path; });
    impl_->DropStableIfUnused(stable, overlays);
    impl_->log->info("removed image={}", RefName(ref));
    return RemoveOutcome::kRemoved;
  }
  // Still a backing file: park it in the trash under a fresh id, so the name is free for
  // a new entry. Our overlays name its stable link and are not touched; overlays made by
  // other tools against the name are repointed (header only) at the trash. The file is
  // linked into the trash before they move and unlinked after, so every overlay's
  // backing file exists at every step.
  Sidecar s = impl_->Load(ref);
  std::string format = impl_->Format(ref, s);
  // A move that a kill cut short left this very file (same inode) in a trash folder of
  // the same name already: that folder is finished, not a second one made.
  std::string id = impl_->TrashedCopyOf(path, ref.name);
  const bool resumed = !id.empty();
  if (!resumed) id = ref.name.substr(0, 100) + "." + RandomHex(12);
  auto dir = impl_->TrashDir() / id;
  auto trashed = dir / "image";
  if (!resumed) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      Fail(Errc::kBackend, "cannot create trash folder " + dir.string() + ": " + ec.message());
  }
  // Locked while incomplete: a pass removes an unlocked folder that holds no image.
  Fd folder_lock = OpenOrFail(dir, O_RDONLY | O_DIRECTORY);
  ::flock(folder_lock.get(), LOCK_EX);
  if (!resumed && ::link(path.c_str(), trashed.c_str()) != 0)
    FailErrno("cannot link " + path.string() + " into the trash as", trashed, errno);
  json entry{{"original", {{"pool", ref.pool}, {"name", ref.name}}},
             {"format", format},
             {"sidecar", ToJson(s)},
             {"trashed_at", std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()}};
  WriteDurable(dir / "entry.json", entry.dump(2));
  FsyncDir(impl_->TrashDir());
  const auto normal = path.lexically_normal();
  for (const auto& o : users)
    if (o.backing == normal) impl_->Rebase(o.path, trashed, format);
  if (::unlink(path.c_str()) != 0) FailErrno("cannot remove", path, errno);
  impl_->DropSidecar(ref);
  FsyncDir(path.parent_path());
  impl_->log->info("trashed image={} trash_id={} overlays={}", RefName(ref), id, users.size());
  return RemoveOutcome::kTrashed;
}

// --- snapshots

void LocalBackend::CreateSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  ValidateName("snapshot", snap.snap);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  if (s.Find(snap.snap))
    Fail(Errc::kAlreadyExists,
         "snapshot " + RefName(snap.image) + "@" + snap.snap + ": already exists");
  s.snapshots.push_back(
      {snap.snap, false, impl_->VirtualSize(snap.image, impl_->Format(snap.image, s))});
  impl_->Save(snap.image, s);
}

namespace {
SnapRecord& FindSnap(Sidecar& s, const SnapRef& snap) {
  ValidateName("snapshot", snap.snap);
  auto* rec = s.Find(snap.snap);
  if (!rec)
    Fail(Errc::kNotFound, "snapshot " + RefName(snap.image) + "@" + snap.snap + ": not found");
  return *rec;
}
}  // namespace

void LocalBackend::ProtectSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  FindSnap(s, snap).is_protected = true;
  impl_->Save(snap.image, s);
}

void LocalBackend::UnprotectSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  auto& rec = FindSnap(s, snap);
  auto children = Children(snap);
  if (!children.empty())
    Fail(Errc::kBusy, "snapshot " + RefName(snap.image) + "@" + snap.snap + ": " +
                          std::to_string(children.size()) + " clone(s) still use it");
  rec.is_protected = false;
  impl_->Save(snap.image, s);
}

void LocalBackend::RemoveSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  if (FindSnap(s, snap).is_protected)
    Fail(Errc::kBusy, "snapshot " + RefName(snap.image) + "@" + snap.snap + ": is protected");
  std::erase_if(s.snapshots, [&](const SnapRecord& r) { return r.name == snap.snap; });
  impl_->Save(snap.image, s);
}

std::vector<SnapInfo> LocalBackend::ListSnapshots(const ImageRef& ref) {
  impl_->Require(ref);
  std::vector<SnapInfo> out;
  for (const auto& r : impl_->Load(ref).snapshots) out.push_back({r.name, r.is_protected});
  return out;
}

// --- clones and copies

void LocalBackend::Clone(const SnapRef& parent, const ImageRef& child) {
  impl_->Require(parent.image);
  std::shared_lock as_clone(impl_->users_mu);
  uint64_t size = 0;
  std::string parent_format;
  fs::path backing;
  {
    std::lock_guard lock(impl_->mu);
    Sidecar ps = impl_->Load(parent.image);
    impl_->CheckShared(parent.image, ps);
    const auto& rec = FindSnap(ps, parent);
    if (!rec.is_protected)
      Fail(Errc::kInvalidArgument,
           "snapshot " + RefName(parent.image) + "@" + parent.snap + ": not protected");
    impl_->RequireFree(child);
    size = rec.size;
    parent_format = impl_->Format(parent.image, ps);
    if (impl_->mode == CloneMode::kQcow2) {
      backing = impl_->EnsureStable(PathOf(parent.image));
      impl_->Relinked(parent.image, ps);
    }
  }
  if (impl_->mode != CloneMode::kQcow2) {
    impl_->CopyTo(parent.image, size, child, {});
    return;
  }
  impl_->EnsurePool(child.pool);
  auto [tmp, fd] = MakeTemp(impl_->PoolDir(child.pool), child.name);
  try {
    impl_->Qemu({"qemu-img", "create", "-q", "-f", "qcow2", "-F", parent_format, "-b",
                 backing.string(), tmp.string(), std::to_string(size)});
    Fd written = OpenOrFail(tmp, O_RDWR);
    impl_->ApplyOwnership(written.get(), tmp);
    FsyncFd(written.get(), tmp);
    Sidecar cs;
    cs.format = "qcow2";
    cs.parent = parent;
    impl_->Publish(tmp, child, cs);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

void LocalBackend::Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) {
  impl_->Require(source.image);
  Sidecar s = impl_->Load(source.image);
  {
    std::lock_guard lock(impl_->mu);
    impl_->CheckShared(source.image, s);
  }
  uint64_t size = FindSnap(s, source).size;
  impl_->CopyTo(source.image, size, dest, progress);
}

void LocalBackend::Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) {
  impl_->Require(source);
  Sidecar s = impl_->Load(source);
  {
    std::lock_guard lock(impl_->mu);
    impl_->CheckShared(source, s);
  }
  uint64_t size = impl_->VirtualSize(source, impl_->Format(source, s));
  impl_->CopyTo(source, size, dest, progress);
}

void LocalBackend::Flatten(const ImageRef& ref, const ProgressFn& progress) {
  impl_->Require(ref);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  auto path = PathOf(ref);
  auto header = ReadQcow2Header(path);
  if (impl_->Format(ref, s) != "qcow2" || !header.backing) {
    if (s.parent) {
      s.parent.reset();
      impl_->Save(ref, s);
    }
    return;
  }
  // The output stays qcow2 (without a backing file), so overlays of this image keep a
  // valid backing format while the file is swapped underneath them.
  auto [tmp, fd] = MakeTemp(path.parent_path(), ref.name);
  try {
    impl_->Qemu({"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", path.string(),
                 tmp.string()});
    Fd written = OpenOrFail(tmp, O_RDWR);
    impl_->ApplyOwnership(written.get(), tmp);
    FsyncFd(written.get(), tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) FailErrno("cannot rename onto", path, errno);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  FsyncDir(path.parent_path());
  s.parent.reset();
  impl_->Save(ref, s);
  if (progress) progress(header.size, header.size);
  impl_->log->info("flattened image={}", RefName(ref));
}

std::optional<SnapRef> LocalBackend::Parent(const ImageRef& ref) {
  impl_->Require(ref);
  Sidecar s = impl_->Load(ref);
  if (impl_->Format(ref, s) != "qcow2" || !ReadQcow2Header(PathOf(ref)).backing) return std::nullopt;
  return s.parent;
}

uint32_t LocalBackend::Depth(const ImageRef& ref) {
  impl_->Require(ref);
  Sidecar s = impl_->Load(ref);
  if (impl_->Format(ref, s) != "qcow2") return 0;
  auto out = impl_->Qemu({"qemu-img", "info", "-U", "--output=json", "--backing-chain", "-f",
                          "qcow2", PathOf(ref).string()});
  try {
    auto chain = json::parse(out);
    if (chain.is_array() && !chain.empty()) return static_cast<uint32_t>(chain.size() - 1);
    return 0;
  } catch (const json::exception& e) {
    Fail(Errc::kBackend, "qemu-img info on " + PathOf(ref).string() + ": unreadable output: " +
                             e.what());
  }
}

std::vector<ImageRef> LocalBackend::Children(const SnapRef& snap) {
  impl_->Require(snap.image);
  ValidateName("snapshot", snap.snap);
  std::vector<ImageRef> out;
  for (const auto& o : impl_->UsersOf(PathOf(snap.image))) {
    if (!o.ref && o.trash_id.empty()) continue;  // an old inode under a stable name
    Sidecar cs = impl_->SidecarOf(o);
    if (!cs.parent || *cs.parent != snap) continue;
    if (o.ref) {
      out.push_back(*o.ref);
    } else {
      auto entry = ReadJsonFile(impl_->TrashDir() / o.trash_id / "entry.json");
      out.push_back({entry["original"].value("pool", ""), entry["original"].value("name", "")});
    }
  }
  return out;
}

// --- metadata

std::map<std::string, std::string> LocalBackend::GetMetadata(const ImageRef& ref) {
  impl_->Require(ref);
  return impl_->Load(ref).metadata;
}

void LocalBackend::SetMetadata(const ImageRef& ref, const std::string& key,
                               const std::string& value) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  s.metadata[key] = value;
  impl_->Save(ref, s);
}

void LocalBackend::RemoveMetadata(const ImageRef& ref, const std::string& key) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  if (s.metadata.erase(key) > 0) impl_->Save(ref, s);
}

// --- trash

std::vector<TrashEntry> LocalBackend::ListTrash() {
  std::vector<TrashEntry> out;
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(impl_->TrashDir(), ec)) {
    auto file = dir.path() / "entry.json";
    if (!fs::exists(file)) continue;  // a crash between link and entry: PurgeTrash ignores it
    try {
      auto entry = ReadJsonFile(file);
      TrashEntry t;
      t.id = dir.path().filename().string();
      t.original = {entry["original"].value("pool", ""), entry["original"].value("name", "")};
      t.has_children = !impl_->UsersOf(dir.path() / "image").empty();
      t.identity = Impl::IdentityOf(dir.path() / "image");  // the same inode as before
      out.push_back(std::move(t));
    } catch (const Error& e) {
      impl_->log->warn("unreadable trash entry dir={} cause={}", dir.path().string(), e.what());
    }
  }
  return out;
}

bool LocalBackend::PurgeTrash(const TrashEntry& entry) {
  ValidateName("trash id", entry.id);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  auto dir = impl_->TrashDir() / entry.id;
  if (!fs::exists(dir)) Fail(Errc::kNotFound, "trash entry " + entry.id + ": not found");
  // Old files that only held the chain together go first: they may be the last users.
  impl_->SweepStable();
  auto overlays = impl_->ScanOverlays();
  if (!impl_->UsersOf(dir / "image", overlays).empty()) return false;
  auto stable = impl_->StableOf(dir / "image");
  // The image goes first, under the folder's lock: a purge killed midway leaves a folder
  // without an image, which the next pass removes (SweepTemporaries).
  Fd folder_lock = OpenOrFail(dir, O_RDONLY | O_DIRECTORY);
  ::flock(folder_lock.get(), LOCK_EX);
  ::unlink((dir / "image").c_str());
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) Fail(Errc::kBackend, "cannot remove trash entry " + dir.string() + ": " + ec.message());
  FsyncDir(impl_->TrashDir());
  std::erase_if(overlays, [&](const Overlay& o) { return o.trash_id == entry.id; });
  impl_->DropStableIfUnused(stable, overlays);
  impl_->log->info("purged trash_id={} image={}", entry.id, RefName(entry.original));
  return true;
}

// --- locks

std::unique_ptr<Lock> LocalBackend::AcquireLock(const std::string& key,
                                                std::chrono::milliseconds timeout) {
  ValidateName("lock", key);
  auto path = impl_->root / ".locks" / (key + ".lock");
  Fd fd = OpenOrFail(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0644);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      // A holder may have discarded (unlinked) the file this one locked: lock the new one.
      struct stat held {};
      struct stat now {};
      if (::fstat(fd.get(), &held) == 0 && ::stat(path.c_str(), &now) == 0 &&
          held.st_ino == now.st_ino && held.st_dev == now.st_dev)
        return std::make_unique<LocalLock>(std::move(fd), path);
      fd = OpenOrFail(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0644);
      continue;
    }
    if (errno != EWOULDBLOCK && errno != EINTR) FailErrno("cannot lock", path, errno);
    if (std::chrono::steady_clock::now() >= deadline)
      Fail(Errc::kBusy, "lock " + key + ": held by another process (waited " +
                            std::to_string(timeout.count()) + " ms)");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::optional<fs::path> LocalBackend::SharedLockDir() const { return impl_->root / ".locks"; }

std::vector<std::string> LocalBackend::ListLocks() {
  std::vector<std::string> keys;
  std::error_code ec;
  for (const auto& file : fs::directory_iterator(impl_->root / ".locks", ec)) {
    const std::string name = file.path().filename().string();
    if (name.size() > 5 && name.ends_with(".lock")) keys.push_back(name.substr(0, name.size() - 5));
  }
  return keys;
}

std::unique_ptr<Backend> MakeLocalBackend(const LocalBackendOptions& options,
                                          std::shared_ptr<spdlog::logger> logger) {
  return std::make_unique<LocalBackend>(options, std::move(logger));
}

}  // namespace cachemgr::storage
