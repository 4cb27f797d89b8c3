// storage/rbd/rbd_diff.cpp: what a clone holds itself, through the diff API.
#include <rbd/librbd.h>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {

uint64_t RbdBackend::OwnBytes(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  const auto where = pool->Where(ref.name);
  uint64_t size = 0;
  Check(rbd_get_size(image.get(), &size), "get size of", where);
  if (size == 0) return 0;  // librbd 16 asserts in a diff of an empty image
  uint64_t features = 0, flags = 0;
  Check(rbd_get_features(image.get(), &features), "get features of", where);
  Check(rbd_get_flags(image.get(), &flags), "get flags of", where);
  // With a valid fast-diff map the answer comes from the object map alone, in whole
  // objects (a write into a clone copies its whole object up anyway); without one,
  // whole-object mode would read every object's state, so the exact extents are asked.
  const bool fast = (features & RBD_FEATURE_FAST_DIFF) != 0 &&
                    (flags & RBD_FLAG_FAST_DIFF_INVALID) == 0;
  uint64_t own = 0;
  auto cb = [](uint64_t, size_t len, int exists, void* arg) -> int {
    if (exists) *static_cast<uint64_t*>(arg) += len;
    return 0;
  };
  // From the image's creation (no snapshot), without the parent: the clone's own extents.
  Check(rbd_diff_iterate2(image.get(), nullptr, 0, size, /*include_parent=*/0,
                          /*whole_object=*/fast ? 1 : 0, cb, &own),
        "diff", where);
  return own;
}

}  // namespace cachemgr::storage::rbd
