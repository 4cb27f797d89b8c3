// storage/rbd/rbd_ctx_lock.h: the process's image-context lock (why: below).
//
// librbd 16 is not safe against threads of one process making and dropping image
// contexts at the same moment: its open and close state machines, run on librados' io
// threads, were seen to lock a mutex of an image context already freed (std::system_error
// "Invalid argument" or "Owner died" thrown on an io thread, which ends the process) and
// to crash copying the configuration (md_config_t) of a new image context. Every call of
// this library that opens or closes an image, or makes or drops one (create, move to
// trash, a rename through librbd, rbd_remove and rbd_trash_remove: each opens an image
// context inside), holds this lock exclusively. Those are a few round trips each. The
// calls that move data on an image already open (reads, writes, copy, flatten, and the
// shrink that empties an image before its removal, rbd_remove.cpp) are not serialized: a
// removal of a large image under the lock would make every other call of the process
// wait out the op timeout and fail. (Unserialized removals were tried, and ended the
// process.)
//
// rbd_clone3 holds it shared: clones run beside each other (each opens and closes the
// parent and the child inside), never beside any other holder. Clones alone side by side
// are what the librbd floor of bench/ does, 8 and 32 threads on one connection, without
// this lock and without a failure; serialized, they capped a burst of hits at one clone
// at a time. An exclusive taker waiting stops new shared ones, so a stream of clones
// does not hold off an open for ever. (std::shared_timed_mutex is no such lock: libstdc++
// builds it on a pthread rwlock, which prefers readers, so clones could starve an open.)
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>

namespace cachemgr::storage::rbd {

// A readers-writer lock with timed takes and writer preference.
class ImageCtxLock {
 public:
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;  // none: no bound

  bool Lock(Deadline deadline) {
    std::unique_lock l(mu_);
    ++writers_waiting_;
    const bool had = Wait(l, deadline, [&] { return !writer_ && readers_ == 0; });
    --writers_waiting_;
    if (had) {
      writer_ = true;
    } else {
      cv_.notify_all();  // shared takers held off by this waiter go on
    }
    return had;
  }
  void Unlock() {
    {
      std::lock_guard l(mu_);
      writer_ = false;
    }
    cv_.notify_all();
  }
  bool LockShared(Deadline deadline) {
    std::unique_lock l(mu_);
    if (!Wait(l, deadline, [&] { return !writer_ && writers_waiting_ == 0; })) return false;
    ++readers_;
    return true;
  }
  void UnlockShared() {
    bool last = false;
    {
      std::lock_guard l(mu_);
      last = --readers_ == 0;
    }
    if (last) cv_.notify_all();
  }

 private:
  template <class Pred>
  bool Wait(std::unique_lock<std::mutex>& l, Deadline deadline, Pred pred) {
    if (!deadline) {
      cv_.wait(l, pred);
      return true;
    }
    return cv_.wait_until(l, *deadline, pred);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int readers_ = 0;
  int writers_waiting_ = 0;
  bool writer_ = false;
};

inline ImageCtxLock& ImageCtxMutex() {
  static ImageCtxLock lock;
  return lock;
}
// How long a call waits for that lock: the longest op timeout of the backends of this
// process (RbdBackend sets it; 0, no op timeout, waits without bound). Against a dead
// OSD the holder may itself wait out an op timeout; without this bound every thread
// behind it would wait out one more, one after another.
inline std::atomic<int64_t>& ImageCtxLockWaitS() {
  static std::atomic<int64_t> seconds{-1};  // -1: not set yet, waits without bound
  return seconds;
}
inline void SetImageCtxLockWait(uint32_t op_timeout_s) {
  const int64_t want = op_timeout_s == 0 ? INT64_MAX : op_timeout_s;
  auto& cur = ImageCtxLockWaitS();
  int64_t seen = cur.load();
  while (seen < want && !cur.compare_exchange_weak(seen, want)) {
  }
}
inline ImageCtxLock::Deadline ImageCtxLockDeadline() {
  const int64_t wait = ImageCtxLockWaitS().load();
  if (wait < 0 || wait == INT64_MAX) return std::nullopt;
  return std::chrono::steady_clock::now() + std::chrono::seconds(wait);
}

// Runs fn (which returns a librbd result) holding the lock, shared or exclusively;
// -ETIMEDOUT (a kTimeout error at the caller's Check) when it is not had within the wait.
template <typename Fn>
int HoldingImageCtxLock(bool shared, Fn&& fn) {
  auto& lock = ImageCtxMutex();
  const auto deadline = ImageCtxLockDeadline();
  if (!(shared ? lock.LockShared(deadline) : lock.Lock(deadline))) return -ETIMEDOUT;
  struct Release {
    ImageCtxLock& l;
    bool shared;
    ~Release() { shared ? l.UnlockShared() : l.Unlock(); }
  } release{lock, shared};
  return fn();
}

// Every open, close or make of an image context but a clone.
template <typename Fn>
int WithImageCtxLock(Fn&& fn) {
  return HoldingImageCtxLock(false, std::forward<Fn>(fn));
}

// rbd_clone3 only (see the top of this file).
template <typename Fn>
int WithImageCtxLockShared(Fn&& fn) {
  return HoldingImageCtxLock(true, std::forward<Fn>(fn));
}

}  // namespace cachemgr::storage::rbd
