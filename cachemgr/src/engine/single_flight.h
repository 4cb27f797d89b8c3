// engine/single_flight.h: one fill per image at a time.
//
// Three layers, because callers meet at three distances:
//   - threads of one process: SingleFlight, where waiters get the leader's result or
//     its error without touching any lock file;
//   - processes of one host: FileLock, a flock on <index dir>/locks/<key>.lock;
//   - hosts sharing an RBD pool: Backend::AcquireLock (a RADOS lock), taken by the
//     engine after the file lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace cachemgr::engine {

template <class T>
class SingleFlight {
 public:
  // Runs `fn` once for concurrent callers with the same key; the others wait and get
  // its result (or its exception). `*leader` says whether this caller ran `fn`.
  T Do(const std::string& key, const std::function<T()>& fn, bool* leader) {
    std::shared_ptr<Call> call;
    bool lead = false;
    {
      std::lock_guard lock(mu_);
      auto& slot = calls_[key];
      if (!slot) {
        slot = std::make_shared<Call>();
        lead = true;
      }
      call = slot;
    }
    if (leader) *leader = lead;
    if (lead) {
      try {
        T value = fn();
        Finish(key, call, std::move(value), nullptr);
      } catch (...) {
        Finish(key, call, std::nullopt, std::current_exception());
        throw;
      }
    }
    std::unique_lock lock(call->mu);
    call->cv.wait(lock, [&] { return call->done; });
    if (call->error) std::rethrow_exception(call->error);
    return *call->value;
  }

 private:
  struct Call {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::optional<T> value;
    std::exception_ptr error;
  };

  void Finish(const std::string& key, const std::shared_ptr<Call>& call, std::optional<T> value,
              std::exception_ptr error) {
    {
      std::lock_guard lock(mu_);
      calls_.erase(key);  // later callers start a new flight (the entry may be evicted)
    }
    std::lock_guard lock(call->mu);
    call->value = std::move(value);
    call->error = error;
    call->done = true;
    call->cv.notify_all();
  }

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Call>> calls_;
};

// An exclusive (or shared) flock on a file, released (and the fd closed) by the
// destructor. flock locks belong to the open file description and every Acquire opens
// the file anew, so two threads of one process exclude each other too, and a crashed
// holder releases it with its last fd.
class FileLock {
 public:
  enum class Mode { kExclusive, kShared };
  // Waits up to `timeout` (0: one try), then throws kBusy naming `what`. Shared holders
  // do not exclude each other, only an exclusive one.
  static std::unique_ptr<FileLock> Acquire(const std::filesystem::path& path,
                                           std::chrono::milliseconds timeout,
                                           const std::string& what,
                                           Mode mode = Mode::kExclusive);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  // Removes the lock file while it is held (for an image no longer cached, so lock
  // files do not pile up); the lock is still released by the destructor. Acquire checks
  // after locking that the file is still the one at the path, so this cannot let two
  // holders in. False when the file was left: not one a lock makes (util/flock.h).
  bool Discard();

 private:
  FileLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::filesystem::path path_;
};

// The file of an entry's use lock, apart from its fill lock (<key>.lock): hits hold it
// shared while they clone the entry and record the volume; eviction and stale
// replacement hold it exclusive, so they never remove an entry a clone is being made
// of. Separate because a fill holds the fill lock for minutes and hits must not wait.
inline std::filesystem::path UseLockPath(const std::filesystem::path& lock_dir,
                                         const std::string& key) {
  return lock_dir / (key + ".use.lock");
}

}  // namespace cachemgr::engine
