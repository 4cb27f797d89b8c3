#include "fetch/workdir.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <ctime>
#include <optional>
#include <random>
#include <thread>

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

// The names a fill makes in its directory (fetch.cpp), besides the lock: the only
// names a sweep unlinks.
constexpr const char* kFillFiles[] = {"image.download", "image.raw"};

// True when the lock file open at `lock` carries the mark WorkDir writes at creation.
bool HasMark(int lock) {
  const std::string mark = kLockMark;
  std::string got(mark.size(), '\0');
  return ::pread(lock, got.data(), got.size(), 0) == static_cast<ssize_t>(got.size()) &&
         got == mark;
}

// The names in a directory but "." and "..".
std::vector<std::string> DirNames(int dir_fd) {
  std::vector<std::string> names;
  if (int dup = ::dup(dir_fd); dup >= 0) {
    if (DIR* d = ::fdopendir(dup)) {
      while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      ::closedir(d);
    } else {
      ::close(dup);
    }
  }
  return names;
}

// What WorkDir's constructor leaves when killed before its mark is written: the
// directory mkdtemp made (mode 0700), empty, or holding only an empty lock file. It holds
// no byte of anyone's, so taking it for a dead fill's harms nothing.
bool HalfMade(int dir_fd, bool lock_present) {
  struct stat st {};
  if (::fstat(dir_fd, &st) != 0 || (st.st_mode & 07777) != 0700) return false;
  const auto names = DirNames(dir_fd);
  if (!lock_present) return names.empty();
  return names.size() == 1 && names[0] == kLockName;
}

// kEmpty: dead and empty with no lock file, so removed by rmdir alone (a constructor
// that makes its lock meanwhile keeps the directory: rmdir refuses a non-empty one).
enum class Judged { kLive, kDead, kEmpty, kForeign };

// Judges a directory that looks like a working dir. Ours only when it holds the lock
// file (a regular file) with the cache's mark; dead when no fill holds that lock. The
// lock, when dead, is left open in `*lock` (the caller closes it).
Judged Judge(int dir_fd, int* lock, std::string* why) {
  // A fill (or its constructor) holds its directory's flock; released when it dies.
  // Held here until the caller closes dir_fd, so no constructor starts meanwhile.
  *lock = -1;
  if (::flock(dir_fd, LOCK_EX | LOCK_NB) != 0) return Judged::kLive;
  *lock = ::openat(dir_fd, kLockName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (*lock < 0) {
    const int e = errno;
    if (e == ENOENT && HalfMade(dir_fd, false)) return Judged::kEmpty;
    *why = e == ENOENT ? "no fill lock in it: not made by the cache"
                       : std::string("its fill lock cannot be opened: ") + std::strerror(e);
    return Judged::kForeign;
  }
  struct stat st {};
  if (::fstat(*lock, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
    ::close(*lock);
    *lock = -1;
    *why = "its fill lock is not a regular file of this user: not made by the cache";
    return Judged::kForeign;
  }
  if (::flock(*lock, LOCK_EX | LOCK_NB) != 0) {
    ::close(*lock);
    *lock = -1;
    return Judged::kLive;  // a fill still runs (or is writing its mark)
  }
  if (!HasMark(*lock)) {
    if (st.st_size == 0 && HalfMade(dir_fd, true)) return Judged::kDead;
    ::close(*lock);
    *lock = -1;
    *why = "its fill lock lacks the cache's mark: not made by the cache";
    return Judged::kForeign;
  }
  return Judged::kDead;
}

// Unlinks the names a fill makes (never a directory, never recursing); then, when only
// the lock is left, the lock and the directory. "" when the directory went, else why not.
std::string RemoveFill(int parent_fd, const std::string& name, int dir_fd) {
  for (const char* f : kFillFiles) {
    struct stat st {};
    if (::fstatat(dir_fd, f, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
      ::unlinkat(dir_fd, f, 0);
    }
  }
  std::vector<std::string> rest;
  for (auto& n : DirNames(dir_fd)) {
    if (n != kLockName) rest.push_back(std::move(n));
  }
  if (!rest.empty()) {
    std::string names;
    for (const auto& n : rest) names += (names.empty() ? "" : ", ") + n;
    return "holds names a fill does not make (" + names + "): left alone";
  }
  ::unlinkat(dir_fd, kLockName, 0);
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0) {
    return std::string("cannot remove it: ") + std::strerror(errno);
  }
  return "";
}

// Removes the names in `dir_fd` that are not directories (a fill makes no directory),
// never following a symlink.
void RemoveContents(int dir_fd) {
  for (const auto& n : DirNames(dir_fd)) ::unlinkat(dir_fd, n.c_str(), 0);
}

// Calls fn(parent_fd, name, dir_fd, judged, why) for each directory in `parent` that
// looks like a working dir and is not a live fill's. One that is not a real directory
// of this user is skipped (a symlink, another user's).
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
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    int dir_fd = OpenOwnDir(parent_fd, name);
    if (dir_fd < 0) continue;
    int lock = -1;
    std::string why;
    const Judged j = Judge(dir_fd, &lock, &why);
    if (j != Judged::kLive) fn(parent_fd, name, dir_fd, j, why);
    if (lock >= 0) ::close(lock);
    ::close(dir_fd);
  }
  ::close(parent_fd);
}

// The fill's lock file, made in `dir_fd` already locked and carrying the mark: unnamed
// (O_TMPFILE), locked, written, then linked as kLockName. Where the filesystem has no
// O_TMPFILE (or /proc is not mounted), made in place and then locked and written, which
// a kill can leave empty (the sweep takes such a lock, alone in a 0700 directory, for a
// dead fill's). The descriptor, or -1 with errno set.
int MakeMarkedLock(int dir_fd) {
  const std::string mark = kLockMark;
  auto mark_it = [&](int fd) {
    return ::flock(fd, LOCK_EX) == 0 &&
           ::write(fd, mark.data(), mark.size()) == static_cast<ssize_t>(mark.size());
  };
  const int tmp = ::openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (tmp >= 0) {
    const std::string self = "/proc/self/fd/" + std::to_string(tmp);
    if (mark_it(tmp) &&
        ::linkat(AT_FDCWD, self.c_str(), dir_fd, kLockName, AT_SYMLINK_FOLLOW) == 0) {
      return tmp;
    }
    const int e = errno;
    ::close(tmp);
    struct stat st {};
    if (::fstat(dir_fd, &st) != 0 || st.st_nlink == 0 || e == EEXIST) {
      errno = e;
      return -1;  // swept meanwhile (or the name is taken): not a filesystem limit
    }
  }
  const int fd =
      ::openat(dir_fd, kLockName, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  if (!mark_it(fd)) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_nlink == 0) {  // swept before the lock was had
    ::close(fd);
    errno = ENOENT;
    return -1;
  }
  return fd;
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
  // The directory is locked (flock) right after mkdtemp, and its lock file appears in it
  // already marked and locked (made unnamed with O_TMPFILE, then linked), so the only
  // state a kill can leave unmarked is the empty directory, which a sweep removes with
  // rmdir alone. A sweep may take the directory in the instant between mkdtemp and its
  // flock, and remove it: then it is made again, after a short random wait.
  constexpr int kAttempts = 10;
  std::minstd_rand jitter(static_cast<unsigned>(::getpid()) ^
                          static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  for (int attempt = 1;; ++attempt) {
    std::string tmpl = (parent / (std::string(kWorkDirPrefix) + "XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw Error(Errc::kIo, "image " + image_id + ": cannot make a working directory in " +
                                 parent.string() + " (conversion.dir): " + std::strerror(errno));
    }
    path_ = tmpl;
    dir_fd_ = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    // The directory's own flock, held for the fill's life: a sweep never judges a
    // directory it cannot lock.
    if (dir_fd_ >= 0 && ::flock(dir_fd_, LOCK_EX) == 0) {
      lock_fd_ = MakeMarkedLock(dir_fd_);
      e = errno;
    } else if (dir_fd_ >= 0) {
      e = errno;
    }
    // Still linked: not swept meanwhile.
    struct stat dir_st {};
    const bool swept = dir_fd_ < 0 ? e == ENOENT
                                   : ::fstat(dir_fd_, &dir_st) != 0 || dir_st.st_nlink == 0;
    if (lock_fd_ >= 0 && !swept) return;
    Cleanup();
    if (swept && attempt < kAttempts) {
      std::this_thread::sleep_for(std::chrono::microseconds(jitter() % 5000));
      continue;
    }
    throw Error(Errc::kIo, "image " + image_id + ": cannot lock working directory " + tmpl +
                               ": " + (swept ? "removed while being made" : std::strerror(e)));
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
  ForEachDead(parent, [&](int, const std::string& name, int, Judged j, const std::string&) {
    if (j == Judged::kDead || j == Judged::kEmpty) out.push_back(parent / name);
  });
  return out;
}

std::vector<LeftAlone> ListForeignWorkDirs(const fs::path& parent) {
  std::vector<LeftAlone> out;
  ForEachDead(parent, [&](int, const std::string& name, int, Judged j, const std::string& why) {
    if (j == Judged::kForeign) out.push_back({parent / name, why});
  });
  return out;
}

std::vector<fs::path> SweepWorkDirs(const fs::path& parent, bool dry_run,
                                    const std::shared_ptr<spdlog::logger>& logger,
                                    std::vector<LeftAlone>* left_alone) {
  std::vector<fs::path> out;
  ForEachDead(
      parent, [&](int parent_fd, const std::string& name, int dir_fd, Judged j, std::string why) {
        const fs::path p = parent / name;
        if ((j == Judged::kDead || j == Judged::kEmpty) && dry_run) {
          out.push_back(p);
          return;
        }
        if (j == Judged::kEmpty) {
          if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) == 0) {
            if (logger) logger->info("removed an empty working directory dir={}", p.string());
            out.push_back(p);
            return;
          }
          const int e = errno;
          if (e == ENOTEMPTY || e == EEXIST) return;  // a fill is making it now
          why = std::string("cannot remove it: ") + std::strerror(e);
        }
        if (j == Judged::kDead) {
          why = RemoveFill(parent_fd, name, dir_fd);
          if (why.empty()) {
            if (logger) logger->info("removed dead fill's working directory dir={}", p.string());
            out.push_back(p);
            return;
          }
        }
        if (logger) {
          logger->warn("working directory left alone dir={} reason=\"{}\"", p.string(), why);
        }
        if (left_alone) left_alone->push_back({p, why});
      });
  return out;
}

}  // namespace cachemgr::fetch
