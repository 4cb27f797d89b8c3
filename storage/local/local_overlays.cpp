// storage/local/local_overlays.cpp: finding the overlays that use a file as their
// backing file, the way Nova's image cache manager does: by reading every qcow2 header
// under the root.
#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
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
// granularity without its stat showing it: its header is read on every scan.
constexpr time_t kSettledSeconds = 2;
// A file whose stat is unchanged (device, inode, size, mtime, ctime) keeps the header it
// had; every file is stat'ed on every scan, since `qemu-img create` over an existing name
// rewrites it in place (same inode) and only its times tell. A header that was not qcow2
// is read again after kRecheckSeconds whatever its stat says.
constexpr int64_t kRecheckSeconds = 60;
// Folders below a pool's folder the scan walks into (a loop through bind mounts ends).
constexpr int kMaxTreeDepth = 16;

int64_t SteadySeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// Not cached: a name may reach another file at every scan.
fs::path RealPath(const fs::path& name) {
  char buf[PATH_MAX];
  if (name.empty() || ::realpath(name.c_str(), buf) == nullptr) return {};
  return fs::path(buf);
}

// The backing file the file `name` in `dir` names when it is a qcow2 overlay. Call with
// headers_mu held.
std::optional<LocalBackend::Impl::BackingNames> LocalBackend::Impl::BackingOf(
    DirSeen* seen, int dir_fd, const fs::path& dir, std::string_view name, Scan mode) const {
  const int64_t now = SteadySeconds();
  auto it = seen->find(name);
  const std::string name_z(name);
  struct stat st {};
  if (::fstatat(dir_fd, name_z.c_str(), &st, 0) != 0) {
    // Gone, or a link that reaches nothing; anything else (a folder it may not search)
    // leaves it unknown.
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return std::nullopt;
    return BackingNames{{}, {}, false, true, std::strerror(errno)};
  }
  if (!S_ISREG(st.st_mode)) return std::nullopt;
  if (mode == Scan::kRemembered && it != seen->end() && it->second.dev == st.st_dev &&
      it->second.ino == st.st_ino && it->second.size == st.st_size &&
      SameTime(it->second.mtime, st.st_mtim) && SameTime(it->second.ctime, st.st_ctim) &&
      (it->second.qcow2 || now - it->second.read_at < kRecheckSeconds)) {
    it->second.scan = scans;
    if (!it->second.backing) return std::nullopt;
    return BackingNames{*it->second.backing, it->second.backing_as_opened, it->second.from_cwd, false, {}};
  }
  const auto h = ReadQcow2Header(dir / name_z);
  if (h.unreadable) {
    if (it != seen->end()) seen->erase(it);
    return BackingNames{{}, {}, false, true, std::strerror(h.read_errno)};
  }
  std::optional<BackingNames> backing;
  if (h.is_qcow2 && h.backing)
    backing = BackingNames{*h.backing, *h.backing_as_opened, h.backing_from_cwd, false, {}};
  const time_t settled = ::time(nullptr) - kSettledSeconds;
  if (st.st_mtim.tv_sec < settled && st.st_ctim.tv_sec < settled) {
    (*seen)[name_z] = {st.st_ino,
                       st.st_dev,
                       st.st_size,
                       st.st_mtim,
                       st.st_ctim,
                       h.is_qcow2,
                       h.is_qcow2 ? h.backing : std::nullopt,
                       h.backing_as_opened.value_or(fs::path{}),
                       now,
                       scans,
                       h.backing_from_cwd};
  } else if (it != seen->end()) {
    seen->erase(it);
  }
  return backing;
}

void LocalBackend::Impl::ScanDir(const fs::path& dir, const std::optional<std::string>& pool,
                                 Scan mode, std::vector<Overlay>* out, Walk walk,
                                 int depth) const {
  // What cannot be read may hold a disk that names any file: counted as a user of all.
  auto unknown = [&](const fs::path& path, const std::string& why) {
    log->warn("a path under the root cannot be read: no file it may name is removed while "
              "it is there path={} cause=\"{}\"",
              path.string(), why);
    Overlay o;
    o.path = path;
    o.unknown = true;
    o.why = why;
    out->push_back(std::move(o));
  };
  const UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) {
    if (errno != ENOENT && errno != ENOTDIR && depth > 0) unknown(dir, std::strerror(errno));
    return;
  }
  const int dup_fd = ::dup(fd.get());
  DIR* d = dup_fd < 0 ? nullptr : ::fdopendir(dup_fd);
  if (!d) {
    if (dup_fd >= 0) ::close(dup_fd);
    if (depth > 0) unknown(dir, std::strerror(errno));
    return;
  }
  DirSeen& seen = headers[dir.native()];
  size_t listed = 0;
  std::vector<std::string> folders;  // kTree: walked after this folder's files
  const bool tree = walk == Walk::kTree;
  while (const struct dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    if (name.empty() || name == "." || name == "..") continue;
    const bool dotted = name[0] == '.';
    if (dotted && !tree) continue;
    auto type = e->d_type;
    if (type == DT_UNKNOWN && tree) {
      struct stat st {};
      const std::string name_z(name);
      if (::fstatat(fd.get(), name_z.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode)) type = DT_DIR;
      }
    }
    if (type == DT_DIR) {
      // A pool's `.meta` holds the cache's sidecars (a folder of its own, never a link).
      if (tree && !(pool && name == ".meta")) folders.emplace_back(name);
      continue;
    }
    // Others than files are never overlays; a symlink or an unknown type is stat'ed.
    if (type != DT_REG && type != DT_LNK && type != DT_UNKNOWN) continue;
    ++listed;
    if (auto backing = BackingOf(&seen, fd.get(), dir, name, mode)) {
      if (backing->unknown) {
        unknown(dir / name, "its header cannot be read: " + backing->why);
        continue;
      }
      // A pool's image is a file of a name the cache gives; a dot-named one is not.
      Overlay o;
      o.path = dir / name;
      o.backing = backing->normal;
      if (pool && !dotted) o.ref = ImageRef{*pool, std::string(name)};
      if (backing->from_cwd) {
        o.backing_suffix = CwdSuffix(backing->normal);
      } else {
        o.backing_real = RealPath(backing->as_opened);
      }
      out->push_back(std::move(o));
    }
  }
  ::closedir(d);
  if (depth >= kMaxTreeDepth && !folders.empty()) {
    for (const auto& f : folders) unknown(dir / f, "deeper than the scan walks");
    folders.clear();
  }
  for (const auto& f : folders) ScanDir(dir / f, std::nullopt, mode, out, walk, depth + 1);
  // Files gone since (removed entries) are forgotten once they add up.
  if (seen.size() > 2 * listed + 1024) {
    std::erase_if(seen, [&](const auto& kv) { return kv.second.scan != scans; });
  }
}

// Every qcow2 file under the root with a backing file: the pools' folders and every
// folder below them, and the trash. Nova's image cache manager decides what a base is
// used by the same way (it reads the instance folders' disks).
std::vector<Overlay> LocalBackend::Impl::ScanOverlays(Scan mode) const {
  std::vector<Overlay> out;
  std::lock_guard lock(headers_mu);
  ++scans;
  std::error_code ec;
  for (const auto& pool : fs::directory_iterator(root, ec)) {
    auto pool_name = pool.path().filename().string();
    // Not the throwing is_directory(): a link that loops is no pool, not a failure.
    std::error_code type_ec;
    if (pool_name.empty() || pool_name[0] == '.' || !pool.is_directory(type_ec)) continue;
    ScanDir(pool.path(), pool_name, mode, &out, Walk::kTree);
  }
  for (const auto& dir : fs::directory_iterator(TrashDir(), ec)) {
    std::vector<Overlay> found;
    ScanDir(dir.path(), std::nullopt, mode, &found);
    for (auto& o : found) {
      if (o.path.filename() != "image") continue;
      o.trash_id = dir.path().filename().string();
      out.push_back(std::move(o));
    }
  }
  // A stable name whose image was flattened in place (a new inode under the old name)
  // keeps the old overlay for its own users: it is a user of its parent too.
  ScanDir(BackingDir(), std::nullopt, mode, &out);
  // Folders gone since (purged trash entries) are forgotten once they add up.
  if (headers.size() > 1024) {
    std::erase_if(headers, [&](const auto& kv) {
      return std::none_of(kv.second.begin(), kv.second.end(),
                          [&](const auto& f) { return f.second.scan == scans; });
    });
  }
  return out;
}

std::vector<std::string> LocalBackend::UnreadableUsers() {
  std::vector<std::string> out;
  for (const auto& o : impl_->ScanOverlays())
    if (o.unknown) out.push_back(o.path.string() + " (" + o.why + ")");
  return out;
}

// Overlays whose backing file is the file at `path`, by its own name or its stable one.
std::vector<Overlay> LocalBackend::Impl::UsersOf(const fs::path& path, Scan mode) const {
  return UsersOf(path, ScanOverlays(mode));
}

// By the path each backing name reaches as qemu opens it, against the paths of the file
// and of its stable name: an overlay made by hand may reach the file by a relative name,
// `..`, or through a symlinked folder or a symlink, and a base removed under it breaks a
// disk all the same; a name that only looks like the file's (`link/../x` where `link`
// leads elsewhere) is not a user, and is never rebased onto it.
std::vector<Overlay> LocalBackend::Impl::UsersOf(const fs::path& path,
                                                 const std::vector<Overlay>& overlays) const {
  std::vector<Overlay> users;
  const auto real = RealPath(fs::absolute(path));
  const auto stable = StableOf(path);
  const auto real_stable = stable.empty() ? fs::path{} : RealPath(stable);
  if (real.empty()) return users;
  const auto lexical = fs::absolute(path).lexically_normal();
  for (const auto& o : overlays) {
    if (o.unknown || Reaches(o, real) || Reaches(o, lexical) ||
        (!real_stable.empty() && (Reaches(o, real_stable) || Reaches(o, stable)))) {
      users.push_back(o);
    }
  }
  return users;
}

// Whether the overlay's backing name reaches the file at the absolute `path`: by the path
// it reached when scanned, or, for a name qemu opens from its working directory, by the
// end of the path.
bool Reaches(const Overlay& o, const fs::path& path) {
  if (path.empty()) return false;
  if (!o.backing_real.empty() && !o.backing_real.is_relative() && o.backing_real == path)
    return true;
  if (o.backing_suffix.empty()) return false;
  auto p = path.end();
  auto s = o.backing_suffix.end();
  while (s != o.backing_suffix.begin()) {
    if (p == path.begin()) return false;
    --s;
    --p;
    if (*s != *p) return false;
  }
  return true;
}

// The part of a relative backing name qemu opens from its working directory that any
// file it reaches ends with: without leading `.` and `..` (which lead anywhere).
fs::path CwdSuffix(const fs::path& relative) {
  fs::path out;
  bool leading = true;
  for (const auto& part : relative.lexically_normal()) {
    if (leading && (part == ".." || part == "." || part.empty())) continue;
    leading = false;
    out /= part;
  }
  return out;
}

// A user reaches `path` through its stable name (which stays when the file moves) rather
// than through the path itself.
bool LocalBackend::Impl::ReachesStable(const Overlay& user, const fs::path& path) const {
  const auto stable = StableOf(path);
  return !stable.empty() && !user.backing_real.empty() && user.backing_real == RealPath(stable);
}

Sidecar LocalBackend::Impl::SidecarOf(const Overlay& o) const {
  if (o.ref) return Load(*o.ref);
  if (o.trash_id.empty()) return {};  // a stable name only: no sidecar of its own
  auto entry = ReadJsonFile(TrashDir() / o.trash_id / "entry.json");
  if (!entry.is_object() || !TrashOriginal(entry)) return {};  // not a record of ours
  return FromJson(entry.value("sidecar", json::object()));
}

void LocalBackend::Impl::Rebase(const fs::path& overlay, const fs::path& new_backing,
                                const std::string& backing_format) const {
  // -u rewrites the header only: the backing file's content is the same bytes.
  Qemu({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", backing_format, "-b", new_backing.string(),
        overlay.string()});
}

}  // namespace cachemgr::storage
