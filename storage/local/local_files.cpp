// storage/local/local_files.cpp: see local_files.h.
#include "storage/local/local_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <cstring>

namespace cachemgr::storage {

namespace fs = std::filesystem;

[[noreturn]] void Fail(Errc code, const std::string& message) { throw Error(code, message); }

std::string Errno(int e) { return std::strerror(e); }

[[noreturn]] void FailErrno(const std::string& what, const fs::path& path, int e) {
  Fail(e == ENOENT ? Errc::kNotFound : Errc::kBackend,
       what + " " + path.string() + ": " + Errno(e));
}

std::string RefName(const ImageRef& ref) { return ref.pool + "/" + ref.name; }

UniqueFd OpenOrFail(const fs::path& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) FailErrno("cannot open", path, errno);
  return UniqueFd(fd);
}

void FsyncFd(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) FailErrno("fsync failed on", path, errno);
}

void FsyncDir(const fs::path& dir) {
  UniqueFd fd = OpenOrFail(dir, O_RDONLY | O_DIRECTORY);
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

namespace {

// Locks the new temporary `fd` named `path`; false when a sweep removed the name between
// its creation and the lock (it saw the file unlocked): the caller makes it again.
bool LockTemp(const UniqueFd& fd, const std::string& path) {
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) FailErrno("cannot lock", path, errno);
  }
  return NameHolds(path, fd.get());
}

}  // namespace

int OpenRegularToLock(int dir_fd, const char* name) {
  struct stat by_name {};
  if (::fstatat(dir_fd, name, &by_name, AT_SYMLINK_NOFOLLOW) != 0) return -1;
  if (!S_ISREG(by_name.st_mode)) {
    errno = EINVAL;
    return -1;
  }
  constexpr int kFlags = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  int fd = ::openat(dir_fd, name, O_RDWR | kFlags);
  if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS))
    fd = ::openat(dir_fd, name, O_RDONLY | kFlags);
  if (fd < 0) return -1;
  struct stat by_fd {};
  if (::fstat(fd, &by_fd) != 0 || by_fd.st_dev != by_name.st_dev ||
      by_fd.st_ino != by_name.st_ino) {
    ::close(fd);
    errno = ESTALE;
    return -1;
  }
  return fd;
}

std::pair<fs::path, UniqueFd> MakeTemp(const fs::path& dir, const std::string& stem) {
  for (;;) {
    std::string tmpl = (dir / (".tmp-" + stem + "-XXXXXX")).string();
    int raw = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (raw < 0) FailErrno("cannot create a temporary file in", dir, errno);
    UniqueFd fd(raw);
    if (LockTemp(fd, tmpl)) return {fs::path(tmpl), std::move(fd)};
  }
}

std::pair<fs::path, UniqueFd> MakeTempNamed(const fs::path& dir, const std::string& stem,
                                            const std::string& tag) {
  const fs::path path = dir / (".tmp-" + stem + "-" + tag);
  for (;;) {
    int raw = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (raw < 0 && errno == EEXIST) {
      // Not the image's name: something (no writer of this stem) holds the temporary's.
      Fail(Errc::kBackend, "cannot create the temporary " + path.string() +
                               ": something is already there, which this call did not make "
                               "(a pass removes it if it is a dead writer's temporary)");
    }
    if (raw < 0) FailErrno("cannot create a temporary file in", dir, errno);
    UniqueFd fd(raw);
    if (LockTemp(fd, path.string())) return {path, std::move(fd)};
  }
}

bool IsRegularFile(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void EnsureOwnFolder(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);  // an existing symlink to a folder is no error here
  RequireOwnFolder(dir);
}

void RequireOwnFolder(const fs::path& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) FailErrno("cannot stat the cache's folder", dir, errno);
  if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode)) {
    Fail(Errc::kBackend,
         dir.string() + " is " + (S_ISLNK(st.st_mode) ? "a symlink" : "not a folder") +
             ", where the cache keeps a folder of its own: the cache follows no link out of "
             "backend.local.root. Replace it with a real folder (moving back into it what "
             "the cache made, if the link led to that)");
  }
}

bool NameHolds(const fs::path& path, int fd) {
  struct stat by_fd {};
  struct stat by_name {};
  return ::fstat(fd, &by_fd) == 0 && ::lstat(path.c_str(), &by_name) == 0 &&
         by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino;
}

void UnlinkIfHolds(const fs::path& path, int fd) {
  if (NameHolds(path, fd)) ::unlink(path.c_str());
}

void WriteDurable(const fs::path& path, const std::string& content) {
  auto [tmp, fd] = MakeTemp(path.parent_path(), path.filename().string());
  try {
    PwriteAll(fd.get(), content.data(), content.size(), 0, tmp);
    FsyncFd(fd.get(), tmp);
    // Renamed while still locked: a sweep never takes a temporary that is about to land.
    if (::rename(tmp.c_str(), path.c_str()) != 0) FailErrno("cannot rename into", path, errno);
  } catch (...) {
    UnlinkIfHolds(tmp, fd.get());
    throw;
  }
  FsyncDir(path.parent_path());
}

std::string SettledFolderStamp(const fs::path& dir) {
  struct statx stx {};
  if (::statx(AT_FDCWD, dir.c_str(), AT_SYMLINK_NOFOLLOW,
              STATX_TYPE | STATX_INO | STATX_MTIME | STATX_CTIME, &stx) != 0 ||
      !S_ISDIR(stx.stx_mode)) {
    return "";
  }
  constexpr int64_t kSettledSeconds = 2;
  const int64_t settled = static_cast<int64_t>(::time(nullptr)) - kSettledSeconds;
  if (stx.stx_mtime.tv_sec >= settled || stx.stx_ctime.tv_sec >= settled) return "";
  std::string stamp;
  for (const uint64_t n : {uint64_t{stx.stx_dev_major}, uint64_t{stx.stx_dev_minor},
                           uint64_t{stx.stx_ino}, static_cast<uint64_t>(stx.stx_mtime.tv_sec),
                           uint64_t{stx.stx_mtime.tv_nsec},
                           static_cast<uint64_t>(stx.stx_ctime.tv_sec),
                           uint64_t{stx.stx_ctime.tv_nsec}}) {
    stamp += std::to_string(n);
    stamp += ':';
  }
  return stamp;
}

int ForEachName(int dir_fd, const std::function<void(const char*, unsigned char)>& fn) {
  const int dup_fd = ::dup(dir_fd);
  if (dup_fd < 0) return errno;
  DIR* d = ::fdopendir(dup_fd);
  if (!d) {
    const int err = errno;
    ::close(dup_fd);
    return err;
  }
  ::rewinddir(d);  // the duplicate shares the offset a previous listing left at the end
  errno = 0;
  while (const struct dirent* e = ::readdir(d)) {
    const char* n = e->d_name;
    if (n[0] != '.' || (n[1] != '\0' && (n[1] != '.' || n[2] != '\0'))) fn(n, e->d_type);
    errno = 0;
  }
  const int err = errno;  // 0 at readdir's end; else an error part of the way
  ::closedir(d);
  return err;
}

}  // namespace cachemgr::storage
