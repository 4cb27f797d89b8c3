// storage/local/local_snapshots.cpp: snapshots (records in the sidecar, not copies) and
// the parent/child links between images.
#include <nlohmann/json.hpp>

#include "storage/local/local_impl.h"
#include "storage/local/local_qcow2_header.h"

namespace cachemgr::storage {

using nlohmann::json;

void LocalBackend::CreateSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  ValidateName("snapshot", snap.snap);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  if (s.Find(snap.snap))
    Fail(Errc::kAlreadyExists,
         "snapshot " + RefName(snap.image) + "@" + snap.snap + ": already exists");
  s.snapshots.push_back(
      {snap.snap, false, impl_->VirtualSize(snap.image, impl_->Format(snap.image, s))});
  impl_->Save(snap.image, s);
}

void LocalBackend::ProtectSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  FindSnap(s, snap).is_protected = true;
  impl_->Save(snap.image, s);
}

void LocalBackend::UnprotectSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  auto& rec = FindSnap(s, snap);
  // The first step of a removal: refused here, before anything changed, when the scan
  // cannot tell what reads the image (Remove would refuse it after this step).
  const auto path = PathOf(snap.image);
  impl_->RefuseIfUnknownUsers(
      snap.image, impl_->UsersOf(path, impl_->OverlaysFor(path, Impl::Scan::kRemembered)));
  auto children = Children(snap);
  if (!children.empty())
    Fail(Errc::kBusy, "snapshot " + RefName(snap.image) + "@" + snap.snap + ": " +
                          std::to_string(children.size()) + " clone(s) still use it");
  rec.is_protected = false;
  impl_->Save(snap.image, s);
}

void LocalBackend::RemoveSnapshot(const SnapRef& snap) {
  impl_->Require(snap.image);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(snap.image);
  if (FindSnap(s, snap).is_protected)
    Fail(Errc::kBusy, "snapshot " + RefName(snap.image) + "@" + snap.snap + ": is protected");
  std::erase_if(s.snapshots, [&](const SnapRecord& r) { return r.name == snap.snap; });
  impl_->Save(snap.image, s);
}

std::vector<SnapInfo> LocalBackend::ListSnapshots(const ImageRef& ref) {
  impl_->Require(ref);
  std::vector<SnapInfo> out;
  for (const auto& r : impl_->Load(ref).snapshots) out.push_back({r.name, r.is_protected});
  return out;
}

// --- parents and children

std::optional<SnapRef> LocalBackend::Parent(const ImageRef& ref) {
  impl_->Require(ref);
  Sidecar s = impl_->Load(ref);
  if (impl_->Format(ref, s) != "qcow2" || !ReadQcow2Header(PathOf(ref)).backing)
    return std::nullopt;
  return s.parent;
}

uint32_t LocalBackend::Depth(const ImageRef& ref) {
  impl_->Require(ref);
  Sidecar s = impl_->Load(ref);
  if (impl_->Format(ref, s) != "qcow2") return 0;
  auto out = impl_->Qemu({"qemu-img", "info", "-U", "--output=json", "--backing-chain", "-f",
                          "qcow2", PathOf(ref).string()});
  try {
    auto chain = json::parse(out);
    if (chain.is_array() && !chain.empty()) return static_cast<uint32_t>(chain.size() - 1);
    return 0;
  } catch (const json::exception& e) {
    Fail(Errc::kBackend,
         "qemu-img info on " + PathOf(ref).string() + ": unreadable output: " + e.what());
  }
}

std::vector<ImageRef> LocalBackend::Children(const SnapRef& snap) {
  impl_->Require(snap.image);
  ValidateName("snapshot", snap.snap);
  std::vector<ImageRef> out;
  const auto path = PathOf(snap.image);
  for (const auto& o : impl_->UsersOf(path, impl_->OverlaysFor(path, Impl::Scan::kRemembered))) {
    if (!o.ref && o.trash_id.empty()) continue;  // an old inode under a stable name
    Sidecar cs = impl_->SidecarOf(o);
    if (!cs.parent || *cs.parent != snap) continue;
    if (o.ref) {
      out.push_back(*o.ref);
    } else {
      const auto original =
          TrashOriginal(ReadJsonFile(impl_->TrashDir() / o.trash_id / "entry.json"));
      if (original) out.push_back(*original);  // (SidecarOf reads no other record)
    }
  }
  return out;
}

}  // namespace cachemgr::storage
