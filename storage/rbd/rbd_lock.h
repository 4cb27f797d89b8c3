// storage/rbd/rbd_lock.h: the RADOS lock behind RbdBackend::AcquireLock (rbd_lock.cpp).
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "storage/backend.h"
#include "storage/rbd/rbd_backend.h"

namespace spdlog {
class logger;
}

namespace cachemgr::storage::rbd {

// A RADOS exclusive lock on one object. The lock has a lease (so a crashed holder's lock
// expires) that a background thread renews until the destructor unlocks.
class RbdLock final : public Lock {
 public:
  static constexpr std::chrono::seconds kLease{30};
  static constexpr std::chrono::seconds kUnlockWait{5};

  RbdLock(std::shared_ptr<PoolCtx> pool, std::string oid, std::string cookie,
          std::shared_ptr<spdlog::logger> logger);
  ~RbdLock() override;
  // The object is removed instead of unlocked when the lock is released.
  bool Discard() override {
    discard_ = true;
    return true;
  }

 private:
  // Shared with the renewer thread, which may outlive the lock: a renewal stuck on a dead
  // OSD is not waited for beyond kUnlockWait (the lease ends the lock anyway).
  struct Renewal {
    std::shared_ptr<PoolCtx> pool;
    std::string oid;
    std::string cookie;
    std::shared_ptr<spdlog::logger> log;
    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;
    bool done = false;
  };
  // The renewer thread's body: never throws (an escaping exception would end the host
  // process); RenewUntilStopped does the work.
  static void RenewLoop(const std::shared_ptr<Renewal>& state) noexcept;
  static void RenewUntilStopped(Renewal& state);
  // The destructor's work: stops the renewer, then unlocks (or removes) the object.
  void Release();

  std::shared_ptr<PoolCtx> pool_;
  std::string oid_;
  std::string cookie_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Renewal> renewal_;
  std::thread renewer_;
  bool discard_ = false;
};

inline constexpr const char* kLockName = "cachemgr";
// Lock objects are "cachemgr.lock.<key>" in a RADOS namespace of their own.
inline constexpr const char* kLockPrefix = "cachemgr.lock.";
inline constexpr const char* kLockNamespace = "cachemgr-locks";

}  // namespace cachemgr::storage::rbd
