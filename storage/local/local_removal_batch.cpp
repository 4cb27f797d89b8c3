// storage/local/local_removal_batch.cpp: several removals decided on one look at the
// overlays (Backend::BeginRemovals). Deciding whether an image still has users reads
// every qcow2 header under the root; an eviction pass that removed its victims one look
// each read the whole root once per victim (seconds each at 100,000 entries).
#include <algorithm>

#include "storage/local/local_impl.h"

namespace cachemgr::storage {

namespace {

using SteadyClock = std::chrono::steady_clock;

// Images a batch holds: their locks are held while it lasts (a few seconds at most), and a
// hit on one of them waits for it.
constexpr size_t kRemovalBatchLimit = 32;

class LocalRemovalBatch final : public Backend::RemovalBatch {
 public:
  LocalRemovalBatch(const LocalBackend::Impl* impl, uint64_t id) : impl_(impl), id_(id) {}
  ~LocalRemovalBatch() override {
    std::lock_guard lock(impl_->held_mu);
    impl_->held.erase(id_);
  }
  LocalRemovalBatch(const LocalRemovalBatch&) = delete;
  LocalRemovalBatch& operator=(const LocalRemovalBatch&) = delete;

 private:
  const LocalBackend::Impl* impl_;
  uint64_t id_;
};

}  // namespace

size_t LocalBackend::RemovalBatchLimit() const { return kRemovalBatchLimit; }

std::unique_ptr<Backend::RemovalBatch> LocalBackend::BeginRemovals(
    const std::vector<ImageRef>& images) {
  Impl::HeldLook look;
  for (const auto& ref : images) {
    Impl::Check(ref);
    look.paths.push_back(PathOf(ref).native());
  }
  std::sort(look.paths.begin(), look.paths.end());
  std::lock_guard lock(impl_->held_mu);
  const uint64_t id = ++impl_->held_next;
  impl_->held.emplace(id, std::move(look));
  return std::make_unique<LocalRemovalBatch>(impl_.get(), id);
}

std::vector<Overlay> LocalBackend::Impl::OverlaysFor(const fs::path& path, Scan mode,
                                                     bool* from_batch) const {
  if (from_batch) *from_batch = false;
  std::optional<uint64_t> batch;
  {
    std::lock_guard lock(held_mu);
    for (const auto& [id, look] : held) {
      if (!std::binary_search(look.paths.begin(), look.paths.end(), path.native())) continue;
      batch = id;
      // As old as it took to make, counted from its end: a file the scan read first was
      // then already that old, as it is for a removal that scans for itself.
      if (look.overlays && SteadyClock::now() - look.taken < look.took) {
        if (from_batch) *from_batch = true;
        return *look.overlays;
      }
      break;
    }
  }
  if (!batch) return ScanOverlays(mode);
  // The batch's images are locked by its caller: a look taken now sees every clone of them
  // the cache made. It is as fresh as a scan of the caller's own.
  const auto start = SteadyClock::now();
  auto overlays = ScanOverlays(Scan::kFresh);
  const auto end = SteadyClock::now();
  std::lock_guard lock(held_mu);
  if (auto it = held.find(*batch); it != held.end()) {
    it->second.overlays = overlays;
    it->second.taken = end;
    it->second.took = end - start;
  }
  if (from_batch) *from_batch = true;
  return overlays;
}

void LocalBackend::Impl::ForgetInLooks(const std::optional<fs::path>& removed) const {
  std::lock_guard lock(held_mu);
  for (auto& [id, look] : held) {
    if (!look.overlays) continue;
    if (!removed) {
      look.overlays.reset();
      continue;
    }
    std::erase_if(*look.overlays, [&](const Overlay& o) { return o.path == *removed; });
  }
}

void LocalBackend::Impl::MovedInLooks(const fs::path& from, const std::string& trash_id) const {
  std::lock_guard lock(held_mu);
  for (auto& [id, look] : held) {
    if (!look.overlays) continue;
    for (auto& o : *look.overlays) {
      if (o.path != from) continue;
      o.path = TrashDir() / trash_id / "image";
      o.ref.reset();
      o.trash_id = trash_id;
    }
  }
}

}  // namespace cachemgr::storage
