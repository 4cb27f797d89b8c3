#include "engine/single_flight.h"

#include <fcntl.h>
#include <sys/file.h>
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
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error(Errc::kIo, "lock file " + path.string() + ": " + std::strerror(errno));
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    const int op = mode == Mode::kShared ? LOCK_SH : LOCK_EX;
    if (::flock(fd, op | LOCK_NB) == 0) return std::unique_ptr<FileLock>(new FileLock(fd));
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

}  // namespace cachemgr::engine
