// storage/local/local_locks.cpp: AcquireLock's flock files under `.locks/`, which
// exclude across every host that shares the root.
#include <sys/file.h>
#include <cerrno>
#include <unistd.h>

#include <chrono>

#include "storage/local/local_impl.h"
#include "util/flock.h"

namespace cachemgr::storage {

namespace {

class LocalLock final : public Lock {
 public:
  LocalLock(UniqueFd fd, fs::path path) : fd_(std::move(fd)), path_(std::move(path)) {}
  ~LocalLock() override {
    if (fd_.get() >= 0) ::flock(fd_.get(), LOCK_UN);
  }
  // Unlinked while held; AcquireLock re-checks after locking that it locked the file at
  // the path, so a waiter on the old file takes a new one. Only a lock file as LockFile
  // makes it goes (util/flock.h): anything else at the name is not the cache's.
  bool Discard() override { return util::DiscardLockFile(fd_.get(), path_); }

 private:
  UniqueFd fd_;
  fs::path path_;
};

}  // namespace

std::unique_ptr<Lock> LocalBackend::AcquireLock(const std::string& key,
                                                std::chrono::milliseconds timeout) {
  ValidateName("lock", key);
  auto path = impl_->root / ".locks" / (key + ".lock");
  util::LockFileRequest request;
  request.path = path;
  request.timeout = timeout;
  request.max_pause = std::chrono::milliseconds(10);
  auto locked = util::LockFile(request);
  if (!locked.failure) return std::make_unique<LocalLock>(std::move(locked.fd), path);
  switch (locked.failure->kind) {
    // kIo: the lock file itself (a folder, a FIFO or a link at its name, its mode), which
    // a pass names and passes over; a missing root is the backend's (kNotFound).
    case util::LockFileFailure::Kind::kOpen:
      if (locked.failure->error == ENOENT) FailErrno("cannot open", path, locked.failure->error);
      Fail(Errc::kIo, "lock file " + path.string() + ": cannot open: " +
                          Errno(locked.failure->error) +
                          " (not a lock file the cache makes: move it out of the lock folder)");
    case util::LockFileFailure::Kind::kLock:
      Fail(Errc::kIo, "lock file " + path.string() + ": cannot lock: " +
                          Errno(locked.failure->error));
    case util::LockFileFailure::Kind::kTimeout:
      break;
  }
  Fail(Errc::kBusy, "lock " + key + ": held by another process (waited " +
                        std::to_string(timeout.count()) + " ms)");
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

}  // namespace cachemgr::storage
