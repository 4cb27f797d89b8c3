// What a killed rbd_rename leaves at the new name, and its removal.
//
// A format-2 rename writes the new name's id object (rbd_id.<new>), rebinds the name in
// the pool's directory, then removes the old id object. Killed between those steps, and
// once the pass has removed the staging image, the new name can be left bound to an image
// that is gone: `rbd create` of that name then fails with "exists" and nothing opens it.
// Such a binding is removed only when it names the very image (by id) that the cache's
// own row recorded, and no image header with that id exists. The same is left at a
// staging name by a create or import killed between the directory entry and the header;
// a staging name is the dead row's alone (random, recorded before anything was made), so
// there any binding without a header goes (identity "").
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_error.h"
#include "storage/rbd/rbd_headers.h"
#include "storage/rbd/rbd_remove.h"

namespace cachemgr::storage::rbd {

namespace {
// The image id an id object holds, "" if none (or unreadable).
std::string BoundId(rados_ioctx_t io, const std::string& name) {
  std::string id;
  return ReadIdObject(io, name, &id) == 0 ? id : "";
}
}  // namespace

bool RbdBackend::RemoveDanglingName(const ImageRef& ref, const std::string& identity) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  const std::string where = pool->Where(ref.name);
  const std::string bound = BoundId(pool->io.get(), ref.name);
  if (!identity.empty() && bound != identity) return false;
  if (!bound.empty()) {
    uint64_t size = 0;
    time_t mtime = 0;
    const int header = rados_stat(pool->io.get(), ("rbd_header." + bound).c_str(), &size, &mtime);
    if (header != -ENOENT) return false;  // the image is there (or unknown): not dangling
  } else if (Exists(ref)) {
    return false;
  }
  // rbd_remove clears the id object and any directory entry of a name whose header is
  // gone; it reports ENOENT for the image it could not open.
  const int r = RemoveUnderLock(pool->io.get(), ref.name);
  if (r < 0 && r != -ENOENT) Check(r, "remove the dangling name", where);
  const bool gone = BoundId(pool->io.get(), ref.name).empty();
  const bool removed = r == 0 || (!bound.empty() && gone);
  if (removed) {
    log_->info("removed a name left bound to a removed image image={} id={}", where, bound);
  }
  return removed;
}

}  // namespace cachemgr::storage::rbd
