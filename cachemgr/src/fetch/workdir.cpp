#include "fetch/workdir.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>

#include "cachemgr/error.h"

namespace cachemgr::fetch {
namespace {

namespace fs = std::filesystem;

bool LooksLikeWorkDir(const std::string& name) {
  const std::string prefix = kWorkDirPrefix;
  return name.size() == prefix.size() + 6 && name.starts_with(prefix);
}

// The directory's descriptor when it is ours to judge: a real directory owned by us.
int OpenOwnDir(int parent_fd, const std::string& name) {
  struct stat st {};
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) return -1;
  int fd = ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat again {};
  if (::fstat(fd, &again) != 0 || again.st_ino != st.st_ino || again.st_uid != ::geteuid()) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The lock of a dead fill, taken (the caller closes it); -1 when a fill still runs, or
// when the lock file is missing and the directory is younger than a minute. -2 when the
// lock file is missing and the directory is old: dead as well.
int TakeDeadLock(int dir_fd) {
  int lock = ::openat(dir_fd, kLockName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (lock < 0) {
    struct stat st {};
    if (errno == ENOENT && ::fstat(dir_fd, &st) == 0 && ::time(nullptr) - st.st_mtime > 60) {
      return -2;
    }
    return -1;
  }
  struct stat st {};
  if (::fstat(lock, &st) != 0 || !S_ISREG(st.st_mode) || ::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock);
    return -1;
  }
  return lock;
}

// Removes what is in `dir_fd` (files, symlinks themselves, and directories below), never
// following a symlink.
void RemoveContents(int dir_fd) {
  int dup = ::dup(dir_fd);
  if (dup < 0) return;
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    return;
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : names) {
    if (::unlinkat(dir_fd, n.c_str(), 0) == 0) continue;
    if (errno != EISDIR && errno != EPERM) continue;
    int sub = ::openat(dir_fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) continue;
    RemoveContents(sub);
    ::close(sub);
    ::unlinkat(dir_fd, n.c_str(), AT_REMOVEDIR);
  }
}

template <typename Fn>
void ForEachDead(const fs::path& parent, Fn&& fn) {
  int parent_fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent_fd < 0) return;  // no conversion dir yet: nothing left behind
  std::vector<std::string> names;
  if (int dup = ::dup(parent_fd); dup >= 0) {
    if (DIR* d = ::fdopendir(dup)) {
      while (struct dirent* e = ::readdir(d)) {
        if (LooksLikeWorkDir(e->d_name)) names.push_back(e->d_name);
      }
      ::closedir(d);
    } else {
      ::close(dup);
    }
  }
  for (const auto& name : names) {
    int dir_fd = OpenOwnDir(parent_fd, name);
    if (dir_fd < 0) continue;
    int lock = TakeDeadLock(dir_fd);
    if (lock != -1) fn(parent_fd, name, dir_fd);
    if (lock >= 0) ::close(lock);
    ::close(dir_fd);
  }
  ::close(parent_fd);
}

}  // namespace

WorkDir::WorkDir(const fs::path& parent, const std::string& image_id, spdlog::logger* log)
    : log_(log) {
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) {
    throw Error(Errc::kIo, "image " + image_id + ": cannot create conversion dir " +
                               parent.string() + " (conversion.dir): " + ec.message());
  }
  std::string tmpl = (parent / (std::string(kWorkDirPrefix) + "XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw Error(Errc::kIo, "image " + image_id + ": cannot make a working directory in " +
                               parent.string() + " (conversion.dir): " + std::strerror(errno));
  }
  path_ = tmpl;
  dir_fd_ = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir_fd_ >= 0) {
    lock_fd_ =
        ::openat(dir_fd_, kLockName, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  }
  if (dir_fd_ < 0 || lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX) != 0) {
    const int e = errno;
    Cleanup();
    throw Error(Errc::kIo, "image " + image_id + ": cannot lock working directory " +
                               path_.string() + ": " + std::strerror(e));
  }
}

WorkDir::~WorkDir() { Cleanup(); }

void WorkDir::Cleanup() noexcept {
  if (dir_fd_ >= 0) {
    RemoveContents(dir_fd_);
    ::close(dir_fd_);
    dir_fd_ = -1;
  }
  if (!path_.empty() && ::rmdir(path_.c_str()) != 0 && errno != ENOENT && log_) {
    log_->warn("cannot remove working directory dir={} error=\"{}\"", path_.string(),
               std::strerror(errno));
  }
  path_.clear();
  // The lock goes last: until the directory is gone, no sweep may take it for dead.
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
}

std::vector<fs::path> ListDeadWorkDirs(const fs::path& parent) {
  std::vector<fs::path> out;
  ForEachDead(parent, [&](int, const std::string& name, int) { out.push_back(parent / name); });
  return out;
}

std::vector<fs::path> SweepWorkDirs(const fs::path& parent, bool dry_run,
                                    const std::shared_ptr<spdlog::logger>& logger) {
  std::vector<fs::path> out;
  ForEachDead(parent, [&](int parent_fd, const std::string& name, int dir_fd) {
    const fs::path p = parent / name;
    if (!dry_run) {
      RemoveContents(dir_fd);
      if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0) {
        if (logger) {
          logger->warn("cannot remove dead fill's working directory dir={} error=\"{}\"",
                       p.string(), std::strerror(errno));
        }
        return;
      }
      if (logger) logger->info("removed dead fill's working directory dir={}", p.string());
    }
    out.push_back(p);
  });
  return out;
}

}  // namespace cachemgr::fetch
