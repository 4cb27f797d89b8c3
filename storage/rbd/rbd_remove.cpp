// Removals with their image-context steps under the process's image-context lock and
// their data deletion outside it.
//
// rbd_remove opens an image context, deletes every data object, then closes it. Run
// unserialized, its open and close raced another thread's (or an abandoned import's
// cleanup's) and ended the process (rbd_ctx_lock.h); run under the lock whole, a removal
// of a large image made every other open of the process wait out the op timeout. So
// the data goes first, by shrinking the open image to nothing (the work rbd_remove would
// do, on an image context already open), and rbd_remove then runs under the lock with
// nothing left to delete.
#include "storage/rbd/rbd_remove.h"

#include <cerrno>
#include <cstdint>
#include <vector>

#include "storage/rbd/rbd_buffers.h"

namespace cachemgr::storage::rbd {

namespace {
// How many clients watch the image (this open included); -1 when unknown.
long WatcherCount(rbd_image_t image) {
  std::vector<rbd_image_watcher_t> watchers(4);
  size_t n = 0;
  const int r = CallWithBuffer(watchers, n, [&](rbd_image_watcher_t* data, size_t* count) {
    return rbd_watchers_list(image, data, count);
  });
  if (r != 0) return -1;
  rbd_watchers_list_cleanup(watchers.data(), n);
  return static_cast<long>(n);
}

// How many snapshots the image has; -1 when unknown.
long SnapshotCount(rbd_image_t image) {
  std::vector<rbd_snap_info_t> snaps(4);
  for (int i = 0; i < kMaxErangeRetries; ++i) {
    int max = static_cast<int>(snaps.size());
    const int n = rbd_snap_list(image, snaps.data(), &max);
    if (n >= 0) {
      rbd_snap_list_end(snaps.data());
      return n;
    }
    if (n != -ERANGE) return -1;
    snaps.resize(static_cast<size_t>(max) + 1);
  }
  return -1;
}
// Whether the image belongs to a group (rbd_remove refuses it: EMLINK); true when unknown.
bool InGroup(rbd_image_t image) {
  rbd_group_info_t group{};
  if (rbd_get_group(image, &group, sizeof group) < 0) return true;
  const bool in = group.pool >= 0;
  rbd_group_info_cleanup(&group, sizeof group);
  return in;
}

// Whether mirroring is on for the image, or in any state but off (rbd_remove refuses a
// non-primary one and disables it on a primary one first); true when unknown.
bool Mirrored(rbd_image_t image) {
  rbd_mirror_image_info_t info{};
  if (rbd_mirror_image_get_info(image, &info, sizeof info) < 0) return true;
  const bool on = info.state != RBD_MIRROR_IMAGE_DISABLED;
  rbd_mirror_image_get_info_cleanup(&info);
  return on;
}

int NoProgress(uint64_t /*offset*/, uint64_t /*total*/, void* /*arg*/) { return 0; }
}  // namespace

bool TrimForRemoval(rbd_image_t image) {
  // This open is the one watcher. Another (a VM, a client killed with it open whose
  // watch the OSD has not timed out) keeps the image whole: rbd_remove refuses it then.
  // Nor while anything else would make the removal refuse it afterwards: a snapshot (any
  // namespace: user, group, trash), a group, mirroring.
  if (WatcherCount(image) != 1 || SnapshotCount(image) != 0 || InGroup(image) ||
      Mirrored(image)) {
    return false;
  }
  // -EINVAL: the image has no exclusive-lock feature (nothing to take). A lock whose
  // owner no longer watches is broken, as rbd_remove breaks it.
  const int locked = rbd_lock_acquire(image, RBD_LOCK_MODE_EXCLUSIVE);
  if (locked < 0 && locked != -EINVAL) return false;
  // Whoever opened it meanwhile now waits for the lock; the image stays whole for them.
  if (WatcherCount(image) != 1) return false;
  // librbd calls the progress callback unconditionally: a null one would be called.
  return rbd_resize2(image, 0, true, NoProgress, nullptr) == 0;
}

int RemoveUnderLock(rados_ioctx_t io, const std::string& name) {
  return WithImageCtxLock([&] { return rbd_remove(io, name.c_str()); });
}

int TrashRemoveUnderLock(rados_ioctx_t io, const std::string& id) {
  return WithImageCtxLock([&] { return rbd_trash_remove(io, id.c_str(), false); });
}

}  // namespace cachemgr::storage::rbd
