// storage/rbd/rbd_snapshots.cpp: snapshots (user and, for clone v2, trash namespace),
// the clones of a snapshot, and the parent chain of an image.
#include "storage/rbd/rbd_snapshots.h"

#include <cerrno>
#include <vector>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_buffers.h"
#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {

std::optional<ParentSpec> GetParent(rbd_image_t image, const std::string& where) {
  rbd_linked_image_spec_t img{};
  rbd_snap_spec_t snap{};
  const int r = rbd_get_parent(image, &img, &snap);
  if (r == -ENOENT) return std::nullopt;
  Check(r, "get parent of", where);
  ParentSpec p{img.pool_name, img.pool_namespace, img.image_id, img.image_name,
               snap.name != nullptr ? snap.name : ""};
  rbd_linked_image_spec_cleanup(&img);
  rbd_snap_spec_cleanup(&snap);
  return p;
}

namespace {

// Every snapshot of an open image, of every namespace (user and trash): a clone v2
// parent snapshot removed while it has children lives on in the trash namespace.
std::vector<rbd_snap_info_t> ListAllSnaps(rbd_image_t image, const std::string& where,
                                          std::vector<std::string>* names) {
  std::vector<rbd_snap_info_t> snaps(16);
  int max = 0;
  // One more than the count: the list ends with a marker entry.
  const int r = CallWithBuffer(
      snaps, max, [&](rbd_snap_info_t* data, int* n) { return rbd_snap_list(image, data, n); }, 1);
  Check(r, "list snapshots of", where);
  snaps.resize(static_cast<size_t>(r));
  names->clear();
  for (const auto& s : snaps) names->emplace_back(s.name);
  std::vector<rbd_snap_info_t> out = snaps;
  // rbd_snap_list_end frees the names; copy what is needed first.
  snaps.push_back(rbd_snap_info_t{});
  rbd_snap_list_end(snaps.data());
  for (size_t i = 0; i < out.size(); ++i) out[i].name = (*names)[i].c_str();
  return out;
}

std::vector<ImageRef> ListChildrenOfCurrentSnap(rbd_image_t image, const std::string& where) {
  std::vector<rbd_linked_image_spec_t> specs(8);
  size_t max = 0;
  Check(CallWithBuffer(specs, max,
                       [&](rbd_linked_image_spec_t* data, size_t* n) {
                         return rbd_list_children3(image, data, n);
                       }),
        "list children of", where);
  std::vector<ImageRef> out;
  for (size_t i = 0; i < max; ++i) {
    out.push_back(ImageRef{specs[i].pool_name, specs[i].image_name});
  }
  rbd_linked_image_spec_list_cleanup(specs.data(), max);
  return out;
}

}  // namespace

bool AnySnapHasChildren(rbd_image_t image, const std::string& where) {
  std::vector<std::string> names;
  const auto snaps = ListAllSnaps(image, where, &names);
  bool found = false;
  for (const auto& s : snaps) {
    Check(rbd_snap_set_by_id(image, s.id), "set snapshot of", where);
    if (!ListChildrenOfCurrentSnap(image, where).empty()) {
      found = true;
      break;
    }
  }
  (void)rbd_snap_set(image, nullptr);  // back to the head
  return found;
}

namespace {

// Throws kBusy when the named snapshot of an open image has clones.
void RefuseIfChildren(rbd_image_t image, const std::string& snap, const std::string& where) {
  Check(rbd_snap_set(image, snap.c_str()), "set snapshot", where);
  const auto children = ListChildrenOfCurrentSnap(image, where);
  (void)rbd_snap_set(image, nullptr);
  if (!children.empty()) {
    throw Error(Errc::kBusy, "rbd snapshot " + where + " has " + std::to_string(children.size()) +
                                 " clone(s), e.g. " + children.front().pool + "/" +
                                 children.front().name);
  }
}

}  // namespace

void RbdBackend::RemoveAllSnapshots(rbd_image_t image, const std::string& where) {
  std::vector<std::string> names;
  for (const auto& s : ListAllSnaps(image, where, &names)) {
    rbd_snap_namespace_type_t type{};
    Check(rbd_snap_get_namespace_type(image, s.id, &type), "get snapshot namespace of", where);
    if (type != RBD_SNAP_NAMESPACE_TYPE_USER) continue;
    int is_protected = 0;
    Check(rbd_snap_is_protected(image, s.name, &is_protected), "check protection of",
          where + "@" + s.name);
    if (is_protected) {
      Check(rbd_snap_unprotect(image, s.name), "unprotect", where + "@" + s.name);
    }
    Check(rbd_snap_remove(image, s.name), "remove snapshot", where + "@" + s.name);
  }
}

void RbdBackend::CreateSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  Check(rbd_snap_create(image.get(), snap.snap.c_str()), "create snapshot",
        pool->Where(snap.image.name) + "@" + snap.snap);
}

void RbdBackend::ProtectSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  const std::string where = pool->Where(snap.image.name) + "@" + snap.snap;
  int is_protected = 0;
  Check(rbd_snap_is_protected(image.get(), snap.snap.c_str(), &is_protected), "check protection of",
        where);
  if (is_protected) return;  // protecting twice is not an error for the engine
  Check(rbd_snap_protect(image.get(), snap.snap.c_str()), "protect", where);
}

void RbdBackend::UnprotectSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  const std::string where = pool->Where(snap.image.name) + "@" + snap.snap;
  int is_protected = 0;
  Check(rbd_snap_is_protected(image.get(), snap.snap.c_str(), &is_protected), "check protection of",
        where);
  if (!is_protected) return;
  // librbd lets a snapshot with clone v2 children be unprotected (v2 counts children
  // itself); the engine relies on protection meaning "clones depend on this".
  RefuseIfChildren(image.get(), snap.snap, where);
  Check(rbd_snap_unprotect(image.get(), snap.snap.c_str()), "unprotect", where);
}

void RbdBackend::RemoveSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  const std::string where = pool->Where(snap.image.name) + "@" + snap.snap;
  // With clone v2 librbd would move a snapshot that has children to the snapshot trash;
  // refuse instead, so a snapshot never disappears from under its clones silently.
  RefuseIfChildren(image.get(), snap.snap, where);
  Check(rbd_snap_remove(image.get(), snap.snap.c_str()), "remove snapshot", where);
}

std::vector<SnapInfo> RbdBackend::ListSnapshots(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  const std::string where = pool->Where(ref.name);
  std::vector<std::string> names;
  std::vector<SnapInfo> out;
  for (const auto& s : ListAllSnaps(image.get(), where, &names)) {
    rbd_snap_namespace_type_t type{};
    Check(rbd_snap_get_namespace_type(image.get(), s.id, &type), "get snapshot namespace of",
          where);
    if (type != RBD_SNAP_NAMESPACE_TYPE_USER) continue;
    int is_protected = 0;
    Check(rbd_snap_is_protected(image.get(), s.name, &is_protected), "check protection of",
          where + "@" + s.name);
    out.push_back(SnapInfo{s.name, is_protected != 0});
  }
  return out;
}

std::optional<SnapRef> RbdBackend::Parent(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  auto p = GetParent(image.get(), pool->Where(ref.name));
  if (!p) return std::nullopt;
  return SnapRef{ImageRef{p->pool, p->image_name}, p->snap};
}

uint32_t RbdBackend::Depth(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  std::string where = pool->Where(ref.name);
  uint32_t depth = 0;
  // Follow the chain by image id: a parent may sit in the trash under its old name.
  while (auto p = GetParent(image.get(), where)) {
    if (++depth > 64) {
      throw Error(Errc::kCorrupt,
                  "rbd parent chain of " + pool->Where(ref.name) + " is longer than 64 (a loop?)");
    }
    auto parent_pool = PoolNs(p->pool, p->ns);
    where = parent_pool->Where(p->image_name);
    ImageHandle parent;
    Check(WithImageCtxLock([&] {
            return rbd_open_by_id_read_only(parent_pool->io.get(), p->image_id.c_str(),
                                            parent.out(), nullptr);
          }),
          "open parent", where);
    image = std::move(parent);
  }
  return depth;
}

std::vector<ImageRef> RbdBackend::Children(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, true, snap.snap.c_str());
  return ListChildrenOfCurrentSnap(image.get(), pool->Where(snap.image.name) + "@" + snap.snap);
}

}  // namespace cachemgr::storage::rbd
