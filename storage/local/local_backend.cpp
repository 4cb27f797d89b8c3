// storage/local/local_backend.cpp: see local_backend.h for the layout and semantics.
// This file: construction, names and formats, publishing a finished file, and the verbs
// that read or rename a whole image. The other verbs live in the files named after their
// job (local_io, local_adopt, local_copy, local_snapshots, local_sidecar, local_trash,
// local_locks, local_temporaries, local_tables); local_impl.h holds what they share.
#include "storage/local/local_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <system_error>
#include <thread>
#include <vector>

#include "storage/factory.h"
#include "storage/local/local_impl.h"
#include "storage/local/local_qcow2_header.h"
#include "storage/local/local_root.h"

namespace cachemgr::storage {

void LocalBackend::Impl::Check(const ImageRef& ref) {
  ValidateName("pool", ref.pool);
  ValidateName("image", ref.name);
}

void LocalBackend::Impl::EnsurePool(const std::string& pool) const {
  EnsureOwnFolder(PoolDir(pool));
  EnsureOwnFolder(PoolDir(pool) / ".meta");
}

void LocalBackend::Impl::Require(const ImageRef& ref) const {
  Check(ref);
  if (!ExistsChecked(ref))
    Fail(Errc::kNotFound, "image " + RefName(ref) + ": not found under " + root.string());
}

void LocalBackend::Impl::RequireFree(const ImageRef& ref) const {
  Check(ref);
  // Anything at the name takes it, a link (dangling or looping) included: lstat, which
  // follows nothing.
  struct stat st {};
  const auto path = PathOf(ref);
  if (::lstat(path.c_str(), &st) == 0)
    Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
  if (errno != ENOENT) FailErrno("cannot look at", path, errno);
}

// Identity of the file at `path`: its inode number and birth time. An inode number is
// reused once its file is gone; with the birth time it names one file on the root.
std::string LocalBackend::Impl::IdentityOf(const fs::path& path) {
  struct statx stx {};
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME, &stx) != 0)
    FailErrno("cannot stat", path, errno);
  return IdentityFrom(stx);
}

std::string LocalBackend::Impl::IdentityOfFd(int fd, const fs::path& path) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &stx) != 0)
    FailErrno("cannot stat", path, errno);
  return IdentityFrom(stx);
}

std::string LocalBackend::Impl::IdentityFrom(const struct statx& stx) {
  std::string id = "ino-" + std::to_string(stx.stx_ino);
  if (stx.stx_mask & STATX_BTIME) {
    id += "-" + std::to_string(stx.stx_btime.tv_sec) + "." + std::to_string(stx.stx_btime.tv_nsec);
  }
  return id;
}

// The sidecar says what format a file is: a raw guest disk may begin with qcow2's magic,
// and reading it as qcow2 would follow a backing file the guest chose. A sidecar that
// says qcow2 over a file without the magic is trusted to be raw.
std::string LocalBackend::Impl::Format(const ImageRef& ref, const Sidecar& s) const {
  if (s.format == "qcow2" && ReadQcow2Header(PathOf(ref)).is_qcow2) return "qcow2";
  return "raw";
}

uint64_t LocalBackend::Impl::VirtualSize(const ImageRef& ref, const std::string& format) const {
  auto path = PathOf(ref);
  if (format == "qcow2") return ReadQcow2Header(path).size;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

void LocalBackend::Impl::ApplyOwnership(int fd, const fs::path& path) const {
  if (uid || gid) {
    if (::fchown(fd, uid ? *uid : static_cast<uid_t>(-1), gid ? *gid : static_cast<gid_t>(-1)) != 0)
      FailErrno("cannot chown", path, errno);
  }
  if (::fchmod(fd, static_cast<mode_t>(options.mode & 07777)) != 0)
    FailErrno("cannot chmod", path, errno);
}

namespace {

// Links the file open as `fd` (made as `tmp`) at `dest`, never replacing: the file this
// writer holds, whatever its temporary name holds by now (through /proc/self/fd; without
// /proc, by the name once it is seen to hold that file). 0, or -1 with errno set.
int LinkOpenFile(int fd, const fs::path& tmp, const fs::path& dest) {
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, dest.c_str(), AT_SYMLINK_FOLLOW) == 0) return 0;
  if (errno != ENOENT) return -1;
  struct stat by_fd {};
  struct stat by_name {};
  if (::fstat(fd, &by_fd) != 0 || ::lstat(tmp.c_str(), &by_name) != 0 ||
      by_fd.st_dev != by_name.st_dev || by_fd.st_ino != by_name.st_ino) {
    errno = ESTALE;  // the temporary's name no longer holds this writer's file
    return -1;
  }
  return ::link(tmp.c_str(), dest.c_str());
}

}  // namespace

// Makes the file open as `fd` (made as `tmp`) visible as `ref` with sidecar `s`, without
// replacing anything (link(2) fails on an existing name, rename(2) would not), then drops
// the temporary name, also on failure. The sidecar goes first, so the image never appears
// without it. `before_link`, if set, runs once the sidecar is durable and before the image
// is linked (a clone waits there for its own file's fsync, which ran beside the
// sidecar's). The file linked is the one this writer wrote, never whatever its temporary
// name holds by then; a folder that cannot be made durable takes the name back.
void LocalBackend::Impl::Publish(const fs::path& tmp, int fd, const ImageRef& ref,
                                 const Sidecar& s, const std::function<void()>& before_link) const {
  NewSidecar sidecar;
  try {
    sidecar = SaveNew(ref, s);
  } catch (...) {
    UnlinkIfHolds(tmp, fd);
    throw;
  }
  if (before_link) {
    try {
      before_link();
    } catch (...) {
      UnlinkIfHolds(tmp, fd);
      DropNewSidecar(ref, sidecar.ino);
      throw;
    }
  }
  const auto final_path = PathOf(ref);
  if (LinkOpenFile(fd, tmp, final_path) != 0) {
    int e = errno;
    UnlinkIfHolds(tmp, fd);
    DropNewSidecar(ref, sidecar.ino);
    if (e == EEXIST) Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
    FailErrno("cannot link into place", final_path, e);
  }
  UnlinkIfHolds(tmp, fd);
  try {
    FsyncDir(final_path.parent_path());
  } catch (...) {
    // Not known to be durable: the name (this writer's file) and its sidecar go again, so
    // a failed call leaves nothing that no record names.
    UnlinkIfHolds(final_path, fd);
    DropNewSidecar(ref, sidecar.ino);
    throw;
  }
}

// ---------------------------------------------------------------------------------

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
  // The cache's own folders: real folders, never links (EnsureOwnFolder).
  for (const char* sub : {"_base", "_base/.meta", "volumes", "volumes/.meta", ".trash",
                          ".backing", ".locks", ".tmp", ".state"}) {
    EnsureOwnFolder(m.root / sub);
  }
  if (options.mode > 07777)
    Fail(Errc::kConfig,
         "backend.local.mode: not a permission mode: " + std::to_string(options.mode));
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

bool LocalBackend::NameTaken(const ImageRef& ref) {
  Impl::Check(ref);
  struct stat st {};
  const auto path = PathOf(ref);
  if (::lstat(path.c_str(), &st) == 0) return true;
  if (errno != ENOENT) FailErrno("cannot look at", path, errno);
  return false;
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
  // readdir, not a directory_iterator: a path object per name was a third of the gc's
  // listing at 100,000 entries. A regular file, or a link to one (stat follows it).
  const auto dir_path = impl_->PoolDir(pool);
  const UniqueFd dir(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return names;
  const int err = ForEachName(dir.get(), [&](const char* name, unsigned char type) {
    if (name[0] == '.') return;
    if (type != DT_REG) {
      if (type != DT_LNK && type != DT_UNKNOWN) return;
      struct stat st {};
      if (::fstatat(dir.get(), name, &st, 0) != 0 || !S_ISREG(st.st_mode)) return;
    }
    names.emplace_back(name);
  });
  // A listing cut short by an error is not the pool: the pass's steps would take the
  // rest for gone.
  if (err != 0) FailErrno("cannot list", dir_path, err);
  std::sort(names.begin(), names.end());
  return names;
}

// List and Identity in one pass over the folder: one statx per file, not a path walk
// and two stats (100,000 entries are listed on every eviction pass).
namespace {

// One statx per name, the names split among a few threads: at 100,000 entries the
// syscalls are most of a pass's compare (about 3 us each here), and they wait on
// nothing but a core. `errs[i]` is statx's errno for names[i], 0 when it answered.
void StatAll(int dir_fd, const std::vector<std::string>& names, std::vector<struct statx>* stats,
             std::vector<int>* errs) {
  stats->assign(names.size(), {});
  errs->assign(names.size(), 0);
  auto stat_range = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      if (::statx(dir_fd, names[i].c_str(), AT_SYMLINK_NOFOLLOW,
                  STATX_TYPE | STATX_INO | STATX_BTIME, &(*stats)[i]) != 0) {
        (*errs)[i] = errno;
      }
    }
  };
  constexpr size_t kPerThread = 8192;  // below this a thread costs more than it saves
  const size_t threads =
      std::min<size_t>({std::max(1U, std::thread::hardware_concurrency()), 4,
                        (names.size() + kPerThread - 1) / kPerThread});
  if (threads <= 1) {
    stat_range(0, names.size());
    return;
  }
  const size_t per = (names.size() + threads - 1) / threads;
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  try {
    for (size_t t = 1; t < threads; ++t) {
      pool.emplace_back(stat_range, std::min(names.size(), t * per),
                        std::min(names.size(), (t + 1) * per));
    }
  } catch (const std::system_error&) {  // no thread to be had: this one does the rest
    stat_range(std::min(names.size(), (pool.size() + 1) * per), names.size());
  }
  stat_range(0, std::min(names.size(), per));
  for (auto& t : pool) t.join();
}

}  // namespace

std::map<std::string, std::string> LocalBackend::ListIdentities(const std::string& pool) {
  ValidateName("pool", pool);
  std::map<std::string, std::string> out;
  const auto dir_path = impl_->PoolDir(pool);
  const UniqueFd dir(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return out;
  std::vector<std::string> files;
  std::vector<std::string> other;  // symlinks and unknown types: stat follows them
  const int err = ForEachName(dir.get(), [&](const char* name, unsigned char type) {
    if (name[0] == '.') return;
    if (type == DT_REG) {
      files.emplace_back(name);
    } else if (type == DT_LNK || type == DT_UNKNOWN) {
      other.emplace_back(name);
    }
  });
  if (err != 0) FailErrno("cannot list", dir_path, err);  // cut short: not the pool (see List)
  // In name order, so the map is built at its end, with no search per name.
  std::sort(files.begin(), files.end());
  std::vector<struct statx> stats;
  std::vector<int> errs;
  StatAll(dir.get(), files, &stats, &errs);
  for (size_t i = 0; i < files.size(); ++i) {
    if (errs[i] == ENOENT) continue;  // removed meanwhile
    if (errs[i] != 0) FailErrno("cannot stat", dir_path / files[i], errs[i]);
    if (!S_ISREG(stats[i].stx_mode)) continue;
    out.emplace_hint(out.end(), std::move(files[i]), Impl::IdentityFrom(stats[i]));
  }
  // What List lists, under any name: a name the cache could not have made (not a valid
  // image name) is another's to keep, and must not fail the listing.
  for (const auto& name : other) {
    const auto path = dir_path / name;
    if (!IsRegularFile(path)) continue;
    try {
      out[name] = Impl::IdentityOf(path);
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;  // removed meanwhile
    }
  }
  return out;
}

uint64_t LocalBackend::AllocatedBytes(const ImageRef& ref) {
  impl_->Require(ref);
  struct stat st {};
  auto path = PathOf(ref);
  if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

void LocalBackend::Rename(const ImageRef& from, const std::string& to_name) {
  impl_->Require(from);
  ImageRef to{from.pool, to_name};
  // Processes (hosts sharing the root) renaming onto one name: the first one's sidecar,
  // locked until its link, turns the others away (SaveNew).
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
  // Every user must follow the move: the old name goes.
  for (const auto& o : impl_->UsersOf(from_path, Impl::Scan::kFresh)) {
    // Ours reach the stable link, which does not move; others (by the old name, a
    // symlinked folder, a relative name) need the new name.
    if (!o.unknown && !impl_->ReachesStable(o, from_path)) impl_->Rebase(o.path, to_path, format);
    if (o.ref) {
      Sidecar cs = impl_->Load(*o.ref);
      if (cs.parent && cs.parent->image == from) {
        cs.parent->image = to;
        impl_->Save(*o.ref, cs);
      }
    }
  }
  const UniqueFd from_sidecar = impl_->HoldSidecar(from);
  ::unlink(from_path.c_str());
  impl_->ForgetInLooks(std::nullopt);  // overlays rebased, a name moved
  impl_->DropHeldSidecar(from, from_sidecar);
  impl_->Relinked(to, s);
  FsyncDir(from_path.parent_path());
}

std::string LocalBackend::Identity(const ImageRef& ref) {
  impl_->Require(ref);
  return Impl::IdentityOf(PathOf(ref));
}

std::unique_ptr<Backend> MakeLocalBackend(const LocalBackendOptions& options,
                                          std::shared_ptr<spdlog::logger> logger) {
  return std::make_unique<LocalBackend>(options, std::move(logger));
}

}  // namespace cachemgr::storage
