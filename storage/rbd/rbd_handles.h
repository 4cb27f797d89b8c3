// storage/rbd/rbd_handles.h: move-only owners of librados/librbd C handles.
//
// Declare them cluster -> ioctx -> image (-> completion) so they close in reverse: an
// image must be closed before its ioctx is destroyed, and every ioctx before the
// cluster is shut down. Destructors never throw; close errors are ignored because the
// handle is gone either way.
#pragma once

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <utility>

#include "storage/rbd/rbd_ctx_lock.h"  // CloseImage takes it

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

// Closes an image whatever happens: under the lock when it is had within the wait, past
// that without it (the cluster is not answering; the race the lock guards against needs
// it to answer; rbd_ctx_lock.h).
inline int CloseImage(rbd_image_t h) {
  auto& lock = ImageCtxMutex();
  const bool held = lock.Lock(ImageCtxLockDeadline());
  const int r = rbd_close(h);
  if (held) lock.Unlock();
  return r;
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
