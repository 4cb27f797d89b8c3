#include "engine/single_flight.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cachemgr/error.h"
#include "util/flock.h"

namespace cachemgr::engine {

std::unique_ptr<FileLock> FileLock::Acquire(const std::filesystem::path& path,
                                            std::chrono::milliseconds timeout,
                                            const std::string& what, Mode mode) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  util::LockFileRequest request;
  request.path = path;
  request.mode = mode == Mode::kShared ? util::FlockMode::kShared : util::FlockMode::kExclusive;
  request.timeout = timeout;
  auto locked = util::LockFile(request);
  if (locked.failure) {
    if (locked.failure->kind == util::LockFileFailure::Kind::kTimeout) {
      throw Error(Errc::kBusy, what + ": held by another process (" + path.string() + ")");
    }
    throw Error(Errc::kIo,
                "lock file " + path.string() + ": " + std::strerror(locked.failure->error));
  }
  return std::unique_ptr<FileLock>(new FileLock(locked.fd.release(), path));
}

FileLock::~FileLock() { ::close(fd_); }

bool FileLock::Discard() {
  // Unlinked while held: a waiter that opened this file gets it after the close below,
  // sees it is no longer at the path and takes a new one. Only a lock file as LockFile
  // makes it goes (util/flock.h).
  return util::DiscardLockFile(fd_, path_);
}

}  // namespace cachemgr::engine
