// storage/rbd/rbd_remove.h: removals split so that the image-context lock (rbd_ctx_lock.h)
// covers only their image-context steps (rbd_remove.cpp).
#pragma once

#include <string>

#include "storage/rbd/rbd_handles.h"

namespace cachemgr::storage::rbd {

// Empties an image opened read-write, which the caller is about to remove: its data
// objects go here, outside the lock, so the removal under the lock is a few round trips.
// As rbd_remove does, it takes the exclusive lock first; it does nothing (false) while
// anything would make the removal refuse the image (another client watching it, a VM
// having it open; a snapshot; a group; mirroring), so the removal then refuses it with
// every byte intact. One window stays, as in rbd_remove itself: a client that opens the
// image during the shrink sees it shrink (and the removal then refuses it, empty).
bool TrimForRemoval(rbd_image_t image);

// rbd_remove under the lock. rbd_remove opens and closes an image context inside, which
// librbd 16 does not survive concurrently with another thread's open or close.
int RemoveUnderLock(rados_ioctx_t io, const std::string& name);

// rbd_trash_remove under the lock, for the same reason.
int TrashRemoveUnderLock(rados_ioctx_t io, const std::string& id);

}  // namespace cachemgr::storage::rbd
