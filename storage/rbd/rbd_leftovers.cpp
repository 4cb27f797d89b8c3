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
// there any binding without a header goes (identity ""). The id object and the directory
// entry are removed one at a time, each only while it binds that id (rbd_headers.h):
// never by librbd's remove of the name, which would look the name up in the directory and
// remove an entry of someone else's, or the listing of a format-1 image of the name.
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
  rados_ioctx_t io = pool->io.get();
  const std::string where = pool->Where(ref.name);
  // The id the binding names: the id object's, else (a create killed between the
  // directory entry and the id object, at a staging name) the directory's.
  std::string bound = BoundId(io, ref.name);
  const bool id_object = !bound.empty();
  if (!id_object && identity.empty()) {
    const int r = ReadDirectoryId(io, ref.name, &bound);
    if (r == -ENOENT) return false;
    Check(r, "read the directory entry of", where);
  }
  if (bound.empty() || (!identity.empty() && bound != identity)) return false;
  uint64_t size = 0;
  time_t mtime = 0;
  const int header = rados_stat(io, ("rbd_header." + bound).c_str(), &size, &mtime);
  if (header != -ENOENT) return false;  // the image is there (or unknown): not dangling
  // Each object only while it still binds that id: a name rebound meanwhile, a directory
  // entry of someone else's (an image whose id object is gone) or a format-1 image of the
  // name are left as they are.
  bool removed = false;
  if (id_object) {
    const int r = RemoveIdObjectIf(io, ref.name, bound);
    if (r < 0 && r != -ENOENT && r != -ESTALE) Check(r, "remove the id object of", where);
    removed = r == 0;
  }
  const int d = RemoveDirectoryEntry(io, ref.name, bound);
  if (d < 0 && d != -ENOENT && d != -ESTALE) Check(d, "remove the directory entry of", where);
  removed = removed || d == 0;
  if (removed) {
    log_->info("removed a name left bound to a removed image image={} id={}", where, bound);
  }
  return removed;
}

}  // namespace cachemgr::storage::rbd
