// storage/rbd/rbd_trash.cpp: the deferred deletes: entries moved to the RBD trash while
// clones still read them, listed and purged once the clones are gone.
#include <spdlog/spdlog.h>

#include <ctime>
#include <vector>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_buffers.h"
#include "storage/rbd/rbd_error.h"
#include "storage/rbd/rbd_remove.h"
#include "storage/rbd/rbd_snapshots.h"

namespace cachemgr::storage::rbd {

std::vector<TrashEntry> RbdBackend::ListTrash() {
  auto pool = Pool(options_.pool);
  std::vector<rbd_trash_image_info_t> infos(16);
  size_t n = 0;
  Check(CallWithBuffer(infos, n,
                       [&](rbd_trash_image_info_t* data, size_t* count) {
                         return rbd_trash_list(pool->io.get(), data, count);
                       }),
        "list trash of", location());
  std::vector<TrashEntry> out;
  for (size_t i = 0; i < n; ++i) {
    const auto& info = infos[i];
    if (info.source != RBD_TRASH_IMAGE_SOURCE_USER &&
        info.source != RBD_TRASH_IMAGE_SOURCE_USER_PARENT) {
      continue;  // mirroring/migration/in-progress removals are not ours to purge
    }
    TrashEntry e{info.id, ImageRef{options_.pool, info.name}, false, info.id};
    ImageHandle image;
    const int r = WithImageCtxLock(
        [&] { return rbd_open_by_id_read_only(pool->io.get(), info.id, image.out(), nullptr); });
    if (r == -ENOENT) continue;  // purged meanwhile
    Check(r, "open trashed", pool->Where(info.name) + " (id " + info.id + ")");
    e.has_children = AnySnapHasChildren(image.get(), pool->Where(info.name));
    out.push_back(std::move(e));
  }
  rbd_trash_list_cleanup(infos.data(), n);
  return out;
}

namespace {
// Whether the trashed image's deferment has ended (rbd_trash_remove without force refuses
// it before: EPERM); false when unknown.
bool TrashExpired(rados_ioctx_t io, const std::string& id) {
  rbd_trash_image_info_t info{};
  if (rbd_trash_get(io, id.c_str(), &info) < 0) return false;
  const bool expired = info.deferment_end_time <= std::time(nullptr);
  rbd_trash_get_cleanup(&info);
  return expired;
}
}  // namespace

bool RbdBackend::PurgeTrash(const TrashEntry& entry) {
  auto pool = Pool(entry.original.pool.empty() ? options_.pool : entry.original.pool);
  const std::string where = pool->Where(entry.original.name) + " (trash id " + entry.id + ")";
  {
    ImageHandle image;
    Check(WithImageCtxLock([&] {
            return rbd_open_by_id(pool->io.get(), entry.id.c_str(), image.out(), nullptr);
          }),
          "open trashed", where);
    if (AnySnapHasChildren(image.get(), where)) return false;
    RemoveAllSnapshots(image.get(), where);
    // Emptied only when the purge will not refuse it for its deferment (a grace period an
    // operator gave it, moving it to the trash again).
    if (TrashExpired(pool->io.get(), entry.id)) (void)TrimForRemoval(image.get());  // rbd_remove.cpp
  }
  Check(TrashRemoveUnderLock(pool->io.get(), entry.id), "purge from trash", where);
  log_->info("rbd trashed image purged image={}", where);
  return true;
}

}  // namespace cachemgr::storage::rbd
