// storage/rbd/rbd_handles.h: move-only owners of librados/librbd C handles.
//
// Declare them cluster -> ioctx -> image (-> completion) so they close in reverse: an
// image must be closed before its ioctx is destroyed, and every ioctx before the
// cluster is shut down. Destructors never throw; close errors are ignored because the
// handle is gone either way.
#pragma once

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <utility>

namespace cachemgr::storage::rbd {

template <typename T, typename Close>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T h) : h_(h) {}
  ~Handle() { reset(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }

  T get() const { return h_; }
  // For the C API's out-parameters: the handle must be empty.
  T* out() { return &h_; }
  explicit operator bool() const { return h_ != nullptr; }
  // Gives up ownership (for a close whose result the caller checks).
  T release() { return std::exchange(h_, nullptr); }
  void reset() {
    if (h_ != nullptr) Close{}(std::exchange(h_, nullptr));
  }

 private:
  T h_ = nullptr;
};

struct ClusterClose {
  void operator()(rados_t h) const { rados_shutdown(h); }
};
struct IoCtxClose {
  void operator()(rados_ioctx_t h) const { rados_ioctx_destroy(h); }
};
// librbd 16 is not safe against threads of one process making and dropping image
// contexts at the same moment: its open and close state machines, run on librados' io
// threads, were seen to lock a mutex of an image context already freed (std::system_error
// "Invalid argument" or "Owner died" thrown on an io thread, which ends the process) and
// to crash copying the configuration (md_config_t) of a new image context. Every call of
// this library that opens or closes an image, or makes or drops one (create, clone, move
// to trash, a rename through librbd, rbd_remove and rbd_trash_remove: each opens an image
// context inside), runs under this one lock. Those are a few round trips each. The calls
// that move data on an image already open (reads, writes, copy, flatten, and the shrink
// that empties an image before its removal, rbd_remove.cpp) are not serialized: a removal
// of a large image under the lock would make every other call of the process wait out
// the op timeout and fail. (Unserialized removals were tried, and ended the process.)
inline std::timed_mutex& ImageCtxMutex() {
  static std::timed_mutex mu;
  return mu;
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
// Takes the lock within the wait; false when the wait ran out.
inline bool TakeImageCtxLock(std::unique_lock<std::timed_mutex>& lock) {
  const int64_t wait = ImageCtxLockWaitS().load();
  if (wait < 0 || wait == INT64_MAX) {
    lock.lock();
    return true;
  }
  return lock.try_lock_for(std::chrono::seconds(wait));
}

// Runs fn (which returns a librbd result) under the lock; -ETIMEDOUT (a kTimeout error
// at the caller's Check) when the lock is not had within the wait.
template <typename Fn>
int WithImageCtxLock(Fn&& fn) {
  std::unique_lock lock(ImageCtxMutex(), std::defer_lock);
  if (!TakeImageCtxLock(lock)) return -ETIMEDOUT;
  return fn();
}

// Closes an image whatever happens: under the lock when it is had within the wait, past
// that without it (the cluster is not answering; the race above needs it to answer).
inline int CloseImage(rbd_image_t h) {
  std::unique_lock lock(ImageCtxMutex(), std::defer_lock);
  (void)TakeImageCtxLock(lock);
  return rbd_close(h);
}

struct ImageClose {
  void operator()(rbd_image_t h) const { (void)CloseImage(h); }
};
struct CompletionClose {
  void operator()(rbd_completion_t h) const { rbd_aio_release(h); }
};
struct ImageOptionsClose {
  void operator()(rbd_image_options_t h) const { rbd_image_options_destroy(h); }
};

using ClusterHandle = Handle<rados_t, ClusterClose>;
using IoCtxHandle = Handle<rados_ioctx_t, IoCtxClose>;
using ImageHandle = Handle<rbd_image_t, ImageClose>;
using CompletionHandle = Handle<rbd_completion_t, CompletionClose>;
using ImageOptionsHandle = Handle<rbd_image_options_t, ImageOptionsClose>;

}  // namespace cachemgr::storage::rbd
