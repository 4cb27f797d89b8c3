// util/flock.cpp: see flock.h.
#include "util/flock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <thread>

namespace cachemgr::util {

namespace {

UniqueFd OpenLockFile(const std::filesystem::path& path) {
  return UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
}

// Whether the file open at `fd` is the one at `path` now.
bool StillAtPath(int fd, const std::filesystem::path& path) {
  struct stat held {};
  struct stat now {};
  return ::fstat(fd, &held) == 0 && ::stat(path.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
         held.st_dev == now.st_dev;
}

}  // namespace

bool DiscardLockFile(int fd, const std::filesystem::path& path) {
  struct stat held {};
  struct stat now {};
  if (::fstat(fd, &held) != 0 || ::lstat(path.c_str(), &now) != 0) return false;
  const bool blank = S_ISREG(held.st_mode) && held.st_size == 0 && held.st_nlink == 1;
  if (!blank || held.st_ino != now.st_ino || held.st_dev != now.st_dev) return false;
  return ::unlink(path.c_str()) == 0;
}

LockFileResult LockFile(const LockFileRequest& request) {
  LockFileResult result;
  UniqueFd fd = OpenLockFile(request.path);
  if (!fd) {
    result.failure = LockFileFailure{LockFileFailure::Kind::kOpen, errno};
    return result;
  }
  const int op = (request.mode == FlockMode::kShared ? LOCK_SH : LOCK_EX) | LOCK_NB;
  const auto deadline = std::chrono::steady_clock::now() + request.timeout;
  auto pause = std::min(std::chrono::milliseconds(2), request.max_pause);
  for (;;) {
    if (::flock(fd.get(), op) == 0) {
      if (StillAtPath(fd.get(), request.path)) {
        result.fd = std::move(fd);
        return result;
      }
      fd = OpenLockFile(request.path);
      if (!fd) {
        result.failure = LockFileFailure{LockFileFailure::Kind::kOpen, errno};
        return result;
      }
      continue;
    }
    const int err = errno;
    if (err != EWOULDBLOCK && err != EINTR) {
      result.failure = LockFileFailure{LockFileFailure::Kind::kLock, err};
      return result;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      result.failure = LockFileFailure{LockFileFailure::Kind::kTimeout, 0};
      return result;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, request.max_pause);
  }
}

}  // namespace cachemgr::util
