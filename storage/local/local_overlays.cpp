// storage/local/local_overlays.cpp: finding the overlays that use a file as their
// backing file, the way Nova's image cache manager does: by reading every qcow2 header
// under the root.
#include <spdlog/spdlog.h>

#include "storage/local/local_impl.h"
#include "storage/local/local_qcow2_header.h"

namespace cachemgr::storage {

using nlohmann::json;

// Every qcow2 file under the root with a backing file: the pools and the trash. Nova's
// image cache manager decides what a base is used by the same way.
std::vector<Overlay> LocalBackend::Impl::ScanOverlays() const {
  std::vector<Overlay> out;
  std::error_code ec;
  for (const auto& pool : fs::directory_iterator(root, ec)) {
    auto pool_name = pool.path().filename().string();
    if (!pool.is_directory() || pool_name.empty() || pool_name[0] == '.') continue;
    std::error_code ec2;
    for (const auto& file : fs::directory_iterator(pool.path(), ec2)) {
      auto name = file.path().filename().string();
      if (name.empty() || name[0] == '.' || !file.is_regular_file()) continue;
      auto h = ReadQcow2Header(file.path());
      if (h.is_qcow2 && h.backing)
        out.push_back({file.path(), *h.backing, ImageRef{pool_name, name}, {}});
    }
  }
  for (const auto& dir : fs::directory_iterator(TrashDir(), ec)) {
    auto image = dir.path() / "image";
    auto h = ReadQcow2Header(image);
    if (h.is_qcow2 && h.backing)
      out.push_back({image, *h.backing, std::nullopt, dir.path().filename().string()});
  }
  // A stable name whose image was flattened in place (a new inode under the old name)
  // keeps the old overlay for its own users: it is a user of its parent too.
  for (const auto& file : fs::directory_iterator(BackingDir(), ec)) {
    auto h = ReadQcow2Header(file.path());
    if (h.is_qcow2 && h.backing) out.push_back({file.path(), *h.backing, std::nullopt, {}});
  }
  return out;
}

// Overlays whose backing file is the file at `path`, by its own name or its stable one.
std::vector<Overlay> LocalBackend::Impl::UsersOf(const fs::path& path) const {
  return UsersOf(path, ScanOverlays());
}

std::vector<Overlay> LocalBackend::Impl::UsersOf(const fs::path& path,
                                                 const std::vector<Overlay>& overlays) const {
  std::vector<Overlay> users;
  auto target = path.lexically_normal();
  auto stable = StableOf(path);
  for (const auto& o : overlays)
    if (o.backing == target || (!stable.empty() && o.backing == stable)) users.push_back(o);
  return users;
}

Sidecar LocalBackend::Impl::SidecarOf(const Overlay& o) const {
  if (o.ref) return Load(*o.ref);
  if (o.trash_id.empty()) return {};  // a stable name only: no sidecar of its own
  auto entry = ReadJsonFile(TrashDir() / o.trash_id / "entry.json");
  return FromJson(entry.value("sidecar", json::object()));
}

void LocalBackend::Impl::Rebase(const fs::path& overlay, const fs::path& new_backing,
                                const std::string& backing_format) const {
  // -u rewrites the header only: the backing file's content is the same bytes.
  Qemu({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", backing_format, "-b", new_backing.string(),
        overlay.string()});
}

}  // namespace cachemgr::storage
