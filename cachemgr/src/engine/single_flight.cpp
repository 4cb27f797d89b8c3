#include "engine/single_flight.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "cachemgr/error.h"

namespace cachemgr::engine {

std::unique_ptr<FileLock> FileLock::Acquire(const std::filesystem::path& path,
                                            std::chrono::milliseconds timeout,
                                            const std::string& what, Mode mode) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  auto open_file = [&] {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      throw Error(Errc::kIo, "lock file " + path.string() + ": " + std::strerror(errno));
    }
    return fd;
  };
  int fd = open_file();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    const int op = mode == Mode::kShared ? LOCK_SH : LOCK_EX;
    if (::flock(fd, op | LOCK_NB) == 0) {
      // The lock file of an image no longer cached is removed by its holder (Discard):
      // a lock taken on a file that is no longer at `path` excludes nobody. Open the new
      // one and lock again.
      struct stat held {};
      struct stat now {};
      if (::fstat(fd, &held) == 0 && ::stat(path.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
          held.st_dev == now.st_dev) {
        return std::unique_ptr<FileLock>(new FileLock(fd, path));
      }
      ::close(fd);
      fd = open_file();
      continue;
    }
    int err = errno;
    if (err != EWOULDBLOCK && err != EINTR) {
      ::close(fd);
      throw Error(Errc::kIo, "lock file " + path.string() + ": " + std::strerror(err));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::close(fd);
      throw Error(Errc::kBusy, what + ": held by another process (" + path.string() + ")");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

FileLock::~FileLock() { ::close(fd_); }

void FileLock::Discard() {
  // Unlinked while held: a waiter that opened this file gets it after the close below,
  // sees it is no longer at the path and takes a new one.
  ::unlink(path_.c_str());
}

}  // namespace cachemgr::engine
