// storage/rbd/rbd_clone.cpp: the RbdBackend's clones (see rbd_backend.h): a clone of a
// protected snapshot, and one that takes its name, mark and size in one call.
#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <map>
#include <string>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_error.h"
#include "storage/rbd/rbd_headers.h"

namespace cachemgr::storage::rbd {

using Clock = std::chrono::steady_clock;

void RbdBackend::Clone(const SnapRef& parent, const ImageRef& child) {
  auto parent_pool = Pool(parent.image.pool);
  auto child_pool = Pool(child.pool);
  ValidateName("image", parent.image.name);
  ValidateName("snapshot", parent.snap);
  ValidateName("image", child.name);
  auto opts = NewImageOptions();
  Check(rbd_image_options_set_uint64(opts.get(), RBD_IMAGE_OPTION_CLONE_FORMAT, 2), "set option",
        "clone_format");
  const auto start = Clock::now();
  // Shared: clones run side by side, never beside an open or a close (rbd_ctx_lock.h).
  Check(WithImageCtxLockShared([&] {
          return rbd_clone3(parent_pool->io.get(), parent.image.name.c_str(), parent.snap.c_str(),
                            child_pool->io.get(), child.name.c_str(), opts.get());
        }),
        "clone",
        parent_pool->Where(parent.image.name) + "@" + parent.snap + " to " +
            child_pool->Where(child.name));
  log_->debug("rbd clone parent={}@{} volume={} ms={}", parent_pool->Where(parent.image.name),
              parent.snap, child_pool->Where(child.name), MsSince(start));
}

bool RbdBackend::CloneInPlace(const SnapRef& parent, const ImageRef& staging,
                              const ImageRef& child, uint64_t size, const PublishFn& publish) {
  // image-meta lives in the image's header, which exists only with a name: the clone is
  // made under `staging`, given its metadata and size there, and renamed. The same steps
  // as Clone, SetMetadata, Resize and Rename, reading the staging image's id once (each of
  // those reads the name again).
  if (staging.pool != child.pool) {
    throw Error(Errc::kInvalidArgument, "clone in place: " + staging.pool + "/" + staging.name +
                                            " and " + child.pool + "/" + child.name +
                                            " are not in one pool");
  }
  auto pool = Pool(child.pool);
  ValidateName("image", staging.name);
  ValidateName("image", child.name);
  // A taken name is refused once the clone is made, and the clone undone: a format-1
  // header by the look beside the read of its id, an id object by the rename's exclusive
  // make, a directory entry by its rebind. (The engine does not ask before a cheap clone:
  // a look there would cost a round trip on every hit; Backend::CheapClone.)
  Clone(parent, staging);
  // Every later step acts on the image whose id is read here, whatever the staging name
  // holds by then: the mark goes to its header, the resize checks the id of the image it
  // opened, the rename is refused unless the name still binds that id, and the undo
  // removes only that image.
  std::string id;
  try {
    // A format-1 header at the volume's name is looked for beside the clone's id: the one
    // binding the rename's make and rebind cannot refuse (RenameImage).
    bool format1 = false;
    Check(ReadIdBesideFormat1(pool->io.get(), staging.name, child.name, &id, &format1),
          "read the id of", pool->Where(staging.name) + " (and what binds " + child.name + ")");
    if (format1) Check(-EEXIST, "rename", pool->Where(staging.name) + " to " + child.name);
    auto metadata = publish(id);
    if (size != 0) {
      // The resize opens the image: marked first, as SetMetadata would.
      for (const auto& [key, value] : metadata) {
        Check(WriteHeaderMetadata(pool->io.get(), id, key, value), "set metadata " + key + " on",
              pool->Where(staging.name));
      }
      metadata.clear();
      ResizeImageWithId(*pool, staging.name, id, size);
    }
    // Otherwise the mark is written beside the rename's first step, and the name taken
    // only once it is (rbd_headers.h).
    Check(RenameImage(pool->io.get(), staging.name, child.name, id, metadata,
                      /*format1_looked=*/size == 0),
          "rename", pool->Where(staging.name) + " to " + child.name);
  } catch (...) {
    // Undone here; what a failed removal leaves is under the caller's staging name.
    try {
      std::string now;
      if (!id.empty() && ReadIdObject(pool->io.get(), staging.name, &now) == 0 && now == id) {
        Remove(staging);
      } else if (!id.empty()) {
        log_->warn("clone in place not undone: {} no longer names it (id {})",
                   pool->Where(staging.name), id);
      } else {
        Remove(staging);  // its id never read: whatever the clone left at the name
      }
    } catch (const std::exception& e) {
      log_->warn("clone in place not undone image={} error={}", pool->Where(staging.name),
                 e.what());
    }
    throw;
  }
  return true;
}

}  // namespace cachemgr::storage::rbd
