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
// entry are each read and removed on their own (the entry first), each only while it
// binds that id (rbd_headers.h), so a kill between the two leaves what the next pass
// still finds and removes. Never by librbd's remove of the name, which would look the
// name up in the directory and remove an entry of someone else's, or the listing of a
// format-1 image of the name.
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

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
  // The two bindings of a name, each read on its own: a kill between their removals (or a
  // rename or create killed between their makes) leaves one without the other.
  const std::string object_id = BoundId(io, ref.name);
  std::string directory_id;
  const int r = ReadDirectoryId(io, ref.name, &directory_id);
  if (r < 0 && r != -ENOENT) Check(r, "read the directory entry of", where);
  // Only the caller's image (any, at a staging name), and only once it is gone.
  std::vector<std::string> ids;
  for (const std::string& id : {object_id, directory_id}) {
    if (id.empty() || (!identity.empty() && id != identity)) continue;
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  bool removed = false;
  for (const std::string& id : ids) {
    uint64_t size = 0;
    time_t mtime = 0;
    const int header = rados_stat(io, ("rbd_header." + id).c_str(), &size, &mtime);
    if (header != -ENOENT) continue;  // the image is there (or unknown): not dangling
    // The directory entry first: the id object is what the next look at the name starts
    // from. Each only while it still binds that id: a name rebound meanwhile, another's
    // entry or a format-1 image of the name are left as they are.
    if (id == directory_id) {
      const int d = RemoveDirectoryEntry(io, ref.name, id);
      if (d < 0 && d != -ENOENT && d != -ESTALE) Check(d, "remove the directory entry of", where);
      removed = removed || d == 0;
    }
    if (id == object_id) {
      const int o = RemoveIdObjectIf(io, ref.name, id);
      if (o < 0 && o != -ENOENT && o != -ESTALE) Check(o, "remove the id object of", where);
      removed = removed || o == 0;
    }
    if (removed) {
      log_->info("removed a name left bound to a removed image image={} id={}", where, id);
    }
  }
  return removed;
}

}  // namespace cachemgr::storage::rbd
