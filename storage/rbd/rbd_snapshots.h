// storage/rbd/rbd_snapshots.h: what the RBD backend's files need to know of an open
// image's parent and its snapshots' clones (rbd_snapshots.cpp).
#pragma once

#include <optional>
#include <string>

#include "storage/rbd/rbd_handles.h"

namespace cachemgr::storage::rbd {

// The parent of an open image, with what is needed to follow the chain by id (the parent
// may be in the trash, where it has no name to open it by).
struct ParentSpec {
  std::string pool;
  std::string ns;
  std::string image_id;
  std::string image_name;
  std::string snap;
};

// The parent of an open image; nullopt when it has none.
std::optional<ParentSpec> GetParent(rbd_image_t image, const std::string& where);

// Whether any snapshot of the image (opened read-only) still has clones.
bool AnySnapHasChildren(rbd_image_t image, const std::string& where);

}  // namespace cachemgr::storage::rbd
