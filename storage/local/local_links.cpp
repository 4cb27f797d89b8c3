// storage/local/local_links.cpp: the stable backing names of overlays' parents.
//
// A qcow2 overlay names its backing file by path; ours name `.backing/<inode>`, a hard
// link of the parent made at the first clone, which never moves (see local_backend.h).
// The link goes when no overlay names it and no other name holds the inode.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "storage/local/local_impl.h"

namespace cachemgr::storage {

// The stable backing name of the file at `path` (`.backing/<inode>`); empty when the
// file cannot be stat'ed.
fs::path LocalBackend::Impl::StableOf(const fs::path& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return BackingDir() / std::to_string(st.st_ino);
}

// Makes (or finds) the stable backing name of `path` and returns it.
fs::path LocalBackend::Impl::EnsureStable(const fs::path& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
  auto stable = BackingDir() / std::to_string(st.st_ino);
  if (::link(path.c_str(), stable.c_str()) != 0) {
    int e = errno;
    struct stat have {};
    if (e != EEXIST) FailErrno("cannot link " + path.string() + " as", stable, e);
    // Made by an earlier clone. An inode number is not reused while this link holds it,
    // so the same number is the same file.
    if (::stat(stable.c_str(), &have) != 0 || have.st_ino != st.st_ino || have.st_dev != st.st_dev)
      Fail(Errc::kBackend,
           stable.string() + ": not a link of " + path.string() + " (move it away and retry)");
    return stable;
  }
  FsyncDir(BackingDir());
  return stable;
}

// Drops the stable name of a file whose last other name is going (or gone), when no
// overlay names it.
bool LocalBackend::Impl::DropStableIfUnused(const fs::path& stable,
                                            const std::vector<Overlay>& overlays) const {
  if (stable.empty()) return false;
  // Reached by its name or any other (a symlinked folder, `..`): kept.
  const auto real = RealPath(stable);
  for (const auto& o : overlays)
    if (o.unknown || o.backing == stable || Reaches(o, real) || Reaches(o, stable)) return false;
  struct stat st {};
  if (::lstat(stable.c_str(), &st) != 0 || st.st_nlink > 1) return false;
  if (::unlink(stable.c_str()) != 0) return false;
  log->debug("dropped backing link {}", stable.string());
  return true;
}

namespace {

// A name in `.backing` the cache made: the decimal inode number of the regular file it
// names (EnsureStable). Anything else there is not the cache's and is left alone.
bool IsStableName(const fs::path& path, const struct stat& st) {
  const std::string name = path.filename().string();
  return S_ISREG(st.st_mode) && !name.empty() && name.size() <= 20 &&
         name.find_first_not_of("0123456789") == std::string::npos &&
         name == std::to_string(st.st_ino);
}

}  // namespace

// Stable names with no other name and no overlay: the old file of an image flattened
// in place once its overlays are gone, or a link a crash left. Dropping one can free
// the one it was backed by, hence the loop.
void LocalBackend::Impl::SweepStable() const {
  std::error_code ec;
  bool dropped = true;
  while (dropped) {
    dropped = false;
    auto overlays = ScanOverlays(Scan::kFresh);  // decides an unlink
    for (const auto& e : fs::directory_iterator(BackingDir(), ec)) {
      struct stat st {};
      if (::lstat(e.path().c_str(), &st) != 0 || !IsStableName(e.path(), st)) continue;
      if (DropStableIfUnused(e.path(), overlays)) {
        dropped = true;
        std::erase_if(overlays, [&](const Overlay& o) { return o.path == e.path(); });
      }
    }
  }
  FsyncDir(BackingDir());
}

void LocalBackend::Impl::SweepLoneStable(bool dry_run, std::vector<Leftover>* out) {
  struct Lone {
    fs::path path;
    uint64_t bytes;
  };
  std::vector<Lone> lone;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(BackingDir(), ec)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || !IsStableName(e.path(), st) || st.st_nlink > 1)
      continue;
    lone.push_back({e.path(), static_cast<uint64_t>(st.st_blocks) * 512});
  }
  // The usual case: every stable name has its image's other name beside it, and the
  // pass reads no header.
  if (lone.empty()) return;
  std::unique_lock no_clones(users_mu);
  std::lock_guard lock(mu);
  if (dry_run) {
    const auto overlays = ScanOverlays();
    for (auto& l : lone) {
      const auto real = RealPath(l.path);
      const bool named = std::any_of(overlays.begin(), overlays.end(), [&](const Overlay& o) {
        return o.unknown || o.backing == l.path || Reaches(o, real) || Reaches(o, l.path);
      });
      if (!named) out->push_back({l.path.string(), l.bytes, false});
    }
    return;
  }
  SweepStable();
  for (auto& l : lone) {
    struct stat st {};
    if (::lstat(l.path.c_str(), &st) != 0 && errno == ENOENT)
      out->push_back({l.path.string(), l.bytes, true});
  }
}

}  // namespace cachemgr::storage
