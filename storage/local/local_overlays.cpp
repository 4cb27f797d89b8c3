// storage/local/local_overlays.cpp: finding the overlays that use a file as their
// backing file, the way Nova's image cache manager does: by reading every qcow2 header
// under the root.
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <ctime>

#include "storage/local/local_impl.h"
#include "storage/local/local_qcow2_header.h"

namespace cachemgr::storage {

using nlohmann::json;

namespace {
bool SameTime(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}
// A file changed this recently may change again within the filesystem's timestamp
// granularity without its stat showing it: its header is read again on every scan.
constexpr time_t kSettledSeconds = 2;
}  // namespace

// The backing file a qcow2 file at `file` names; nullopt for anything else. Call with
// headers_mu held.
std::optional<fs::path> LocalBackend::Impl::BackingOf(const fs::path& file) const {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  auto [it, added] = headers.try_emplace(file.native());
  HeaderSeen& seen = it->second;
  if (!added && seen.dev == st.st_dev && seen.ino == st.st_ino && seen.size == st.st_size &&
      SameTime(seen.mtime, st.st_mtim) && SameTime(seen.ctime, st.st_ctim)) {
    seen.scan = scans;
    return seen.backing;
  }
  auto h = ReadQcow2Header(file);
  std::optional<fs::path> backing;
  if (h.is_qcow2 && h.backing) backing = *h.backing;
  const time_t settled = ::time(nullptr) - kSettledSeconds;
  if (st.st_mtim.tv_sec < settled && st.st_ctim.tv_sec < settled) {
    seen = {st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim, backing, scans};
  } else {
    headers.erase(it);
  }
  return backing;
}

// Every qcow2 file under the root with a backing file: the pools and the trash. Nova's
// image cache manager decides what a base is used by the same way.
std::vector<Overlay> LocalBackend::Impl::ScanOverlays() const {
  std::vector<Overlay> out;
  std::lock_guard lock(headers_mu);
  ++scans;
  std::error_code ec;
  for (const auto& pool : fs::directory_iterator(root, ec)) {
    auto pool_name = pool.path().filename().string();
    if (!pool.is_directory() || pool_name.empty() || pool_name[0] == '.') continue;
    std::error_code ec2;
    for (const auto& file : fs::directory_iterator(pool.path(), ec2)) {
      const auto& name = file.path().filename().native();
      if (name.empty() || name[0] == '.') continue;
      if (auto backing = BackingOf(file.path()))
        out.push_back({file.path(), *backing, ImageRef{pool_name, name}, {}});
    }
  }
  for (const auto& dir : fs::directory_iterator(TrashDir(), ec)) {
    auto image = dir.path() / "image";
    if (auto backing = BackingOf(image))
      out.push_back({image, *backing, std::nullopt, dir.path().filename().string()});
  }
  // A stable name whose image was flattened in place (a new inode under the old name)
  // keeps the old overlay for its own users: it is a user of its parent too.
  for (const auto& file : fs::directory_iterator(BackingDir(), ec)) {
    if (auto backing = BackingOf(file.path())) out.push_back({file.path(), *backing, std::nullopt, {}});
  }
  // What the last scans saw and this one did not (removed files) goes once it adds up.
  size_t seen_now = 0;
  for (const auto& [path, seen] : headers) seen_now += seen.scan == scans;
  if (headers.size() > 2 * seen_now + 1024) {
    std::erase_if(headers, [&](const auto& kv) { return kv.second.scan != scans; });
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
