// storage/local/local_temporaries.cpp: finding and removing the `.tmp-*` files that
// writers which died left under the root.
//
// Every temporary is made by MakeTemp (local_files.cpp), which holds an flock on it
// until its name is gone. So a `.tmp-*` file whose flock can be taken has no writer: the
// sweep takes the lock, checks that the name still holds the inode it locked, and
// unlinks it while holding the lock. A writer that loses the race between mkostemp and
// its own flock sees its name gone and makes another.
//
// The same lock rule finds two more kinds of leftover: a sidecar whose image never
// appeared or is already gone (SaveNew keeps the sidecar locked until its image is
// linked), and a trash folder that holds no image (a move or purge killed midway; Remove
// and PurgeTrash hold the folder's lock while it is incomplete). Only the names the
// backend makes are touched: `.tmp-<stem>-XXXXXX`, `<pool>/.meta/<name>.json` that reads
// as a sidecar, and a trash folder's `entry.json`. RemoveDanglingName looks at one such
// name: the temporary a CloneInPlace under a staging name left.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <iterator>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "storage/local/local_backend.h"
#include "storage/local/local_impl.h"
#include "util/unique_fd.h"

namespace cachemgr::storage {
namespace {

constexpr std::string_view kTempPrefix = ".tmp-";

// Whether `name` is one MakeTemp makes: ".tmp-<stem>-" and mkostemp's six characters.
bool IsTempName(const std::string& name) {
  if (name.compare(0, kTempPrefix.size(), kTempPrefix) != 0) return false;
  const auto dash = name.rfind('-');
  if (dash == std::string::npos || dash < kTempPrefix.size() || name.size() - dash - 1 != 6)
    return false;
  for (size_t i = dash + 1; i < name.size(); ++i) {
    const char c = name[i];
    if (!std::isalnum(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Names in `dir` (opened without following a symlink at its last component). With
// `folders_only`, only those that may be folders by the entry's type (unknown types
// included; OpenDirAt tells): a pool folder holds thousands of images, none a folder.
// `listed`: set to false when the folder could not be read (no names then).
std::vector<std::string> Names(int dir_fd, bool folders_only = false, bool* listed = nullptr) {
  std::vector<std::string> names;
  const int err = ForEachName(dir_fd, [&](const char* name, unsigned char type) {
    if (folders_only && type != DT_DIR && type != DT_UNKNOWN) return;
    names.emplace_back(name);
  });
  if (listed) *listed = err == 0;
  return names;
}

// Opens `name` in `parent` as a directory, never through a symlink; -1 if it is not one.
int OpenDirAt(int parent, const std::string& name) {
  return ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

// Looks at one `.tmp-*` name in `dir_fd`: a regular file whose lock is free is a leftover.
void SweepOne(int dir_fd, const std::string& dir_path, const std::string& name, bool dry_run,
              std::vector<Leftover>* out) {
  // Regular files only (symlinks, FIFOs, folders are not ours to touch), the one at the
  // name when opened.
  const util::UniqueFd file{OpenRegularToLock(dir_fd, name.c_str())};
  struct stat by_fd {};
  if (file.get() < 0 || ::fstat(file.get(), &by_fd) != 0) return;
  if (::flock(file.get(), LOCK_EX | LOCK_NB) != 0) return;  // a live writer holds it
  // The name may have been replaced between the stat and the lock.
  struct stat again {};
  if (::fstatat(dir_fd, name.c_str(), &again, AT_SYMLINK_NOFOLLOW) != 0 ||
      again.st_dev != by_fd.st_dev || again.st_ino != by_fd.st_ino) {
    return;
  }
  Leftover l;
  l.path = dir_path + "/" + name;
  l.bytes = static_cast<uint64_t>(by_fd.st_blocks) * 512;
  if (!dry_run) l.removed = ::unlinkat(dir_fd, name.c_str(), 0) == 0;
  out->push_back(std::move(l));
}

// Sweeps the `.tmp-*` files of `dir_fd`; returns the names it listed. `clean`: set to
// whether it met no `.tmp-*` name at all (a live writer's included).
std::vector<std::string> SweepDir(int dir_fd, const std::string& dir_path, bool dry_run,
                                  std::vector<Leftover>* out, bool* clean = nullptr) {
  bool listed = false;
  auto names = Names(dir_fd, false, &listed);
  if (clean) *clean = listed;  // a folder not read is not found clean
  for (const auto& name : names) {
    if (IsTempName(name)) {
      if (clean) *clean = false;
      SweepOne(dir_fd, dir_path, name, dry_run, out);
    }
  }
  return names;
}

}  // namespace

namespace {

bool Absent(int dir_fd, const std::string& name) {
  struct stat st {};
  return ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
}

// `<pool>/.meta/<name>.json` whose image `<pool>/<name>` is absent and whose lock is free.
// `listed`: the pool's names, listed before the sidecars; an image among them was there
// then and its sidecar is no leftover (this pass's; the next pass looks again), so only
// the others cost a stat (a pool of 100,000 entries was 100,000 stats a pass).
// One listing of `.meta` serves both: its `.tmp-*` files are swept as any folder's.
// Returns whether it met nothing to look at: no `.tmp-*` name, and a listed image for
// every sidecar.
bool SweepSidecars(int pool_fd, const std::string& pool_path,
                   const std::unordered_set<std::string_view>& listed, bool dry_run,
                   std::vector<Leftover>* out) {
  const util::UniqueFd meta{OpenDirAt(pool_fd, ".meta")};
  if (meta.get() < 0) return false;
  const std::string meta_path = pool_path + "/.meta";
  bool clean = false;
  const auto files = Names(meta.get(), false, &clean);
  for (const auto& file : files) {
    if (IsTempName(file)) {
      clean = false;
      SweepOne(meta.get(), meta_path, file, dry_run, out);
      continue;
    }
    if (file.size() <= 5 || file.compare(file.size() - 5, 5, ".json") != 0) continue;
    if (listed.count(std::string_view(file).substr(0, file.size() - 5))) continue;
    clean = false;
    const std::string image = file.substr(0, file.size() - 5);
    if (!Absent(pool_fd, image)) continue;
    const util::UniqueFd fd{OpenRegularToLock(meta.get(), file.c_str())};
    struct stat st {};
    if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 1 << 20)
      continue;
    // Only what reads as a sidecar of ours, whole: its schema and its fields.
    std::string text(static_cast<size_t>(st.st_size), '\0');
    if (::pread(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
        !IsSidecarText(text)) {
      continue;
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // its image is on its way
    struct stat again {};
    if (!Absent(pool_fd, image) ||
        ::fstatat(meta.get(), file.c_str(), &again, AT_SYMLINK_NOFOLLOW) != 0 ||
        again.st_ino != st.st_ino) {
      continue;
    }
    Leftover l;
    l.path = pool_path + "/.meta/" + file;
    l.bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    if (!dry_run) l.removed = ::unlinkat(meta.get(), file.c_str(), 0) == 0;
    out->push_back(std::move(l));
  }
  return clean;
}

// `.trash/<id>/` with no `image` and nothing but `entry.json`, whose lock is free; <id> as
// MoveToTrash names it (the image's name, a dot, 12 hex digits): other folders are not
// the cache's.
void SweepTrash(int trash_fd, const std::string& trash_path, bool dry_run,
                std::vector<Leftover>* out) {
  for (const auto& id : Names(trash_fd)) {
    if (!IsTrashId(id)) continue;
    const util::UniqueFd dir{OpenDirAt(trash_fd, id)};
    if (dir.get() < 0) continue;
    auto names = Names(dir.get());
    bool only_entry = true;
    for (const auto& n : names) only_entry = only_entry && n == "entry.json";
    if (!only_entry) continue;  // an image (in use or not), or files not ours
    if (::flock(dir.get(), LOCK_EX | LOCK_NB) != 0) continue;  // being made or purged
    names = Names(dir.get());
    only_entry = true;
    for (const auto& n : names) only_entry = only_entry && n == "entry.json";
    if (!only_entry) continue;
    if (!names.empty()) {  // a trash record of ours, or the folder is not the cache's
      try {
        if (!TrashOriginal(ReadJsonFile(trash_path + "/" + id + "/entry.json"))) continue;
      } catch (const Error&) {
        continue;
      }
    }
    Leftover l;
    l.path = trash_path + "/" + id;
    if (!dry_run) {
      if (!names.empty()) ::unlinkat(dir.get(), "entry.json", 0);
      l.removed = ::unlinkat(trash_fd, id.c_str(), AT_REMOVEDIR) == 0;
    }
    out->push_back(std::move(l));
  }
}

}  // namespace

std::vector<Leftover> LocalBackend::SweepTemporaries(bool dry_run, SweepLooks* looks) {
  // The folders found clean before (`looks`, by "<folder>" or "<pool>/.meta"), and those
  // found or kept clean now. A stamp is taken before its folder is listed, so a name
  // made while it is listed moves the stamp the next sweep compares.
  SweepLooks before;
  if (looks) before.swap(*looks);
  auto unchanged = [&](const std::string& key, const std::string& stamp) {
    auto it = before.find(key);
    return !stamp.empty() && it != before.end() && it->second == stamp;
  };
  auto clean = [&](const std::string& key, const std::string& stamp) {
    if (looks && !stamp.empty()) (*looks)[key] = stamp;
  };
  std::vector<Leftover> found;
  const std::string root = location();
  const util::UniqueFd root_fd{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (root_fd.get() < 0) return found;
  // The backend's own folders (the two pools, .tmp, .trash, .state) and theirs (a pool's
  // .meta, a trashed image's folder, a table): the only places MakeTemp is ever asked to
  // write. A folder anyone else made under the root is not looked into.
  const std::string pools[] = {entry_pool(), volume_pool()};
  for (const auto& name : Names(root_fd.get())) {
    const bool pool = name == pools[0] || name == pools[1];
    if (!pool && name != ".tmp" && name != ".trash" && name != ".state") continue;
    const std::string dir_path = root + "/" + name;
    if (pool) {
      // The pool's temporaries, and its sidecars whose image is gone: a sidecar is left
      // alone when its image is removed, which changes the pool folder's stamp.
      const std::string stamp = SettledFolderStamp(dir_path);
      const std::string meta_stamp = SettledFolderStamp(dir_path + "/.meta");
      const std::string both = stamp.empty() || meta_stamp.empty() ? "" : stamp + "/" + meta_stamp;
      const std::string meta_key = name + "/.meta";
      if (unchanged(name, stamp) && unchanged(meta_key, both)) {
        clean(name, stamp);
        clean(meta_key, both);
        continue;
      }
      const util::UniqueFd dir{OpenDirAt(root_fd.get(), name)};
      if (dir.get() < 0) continue;
      bool no_temps = false;
      const auto listed = SweepDir(dir.get(), dir_path, dry_run, &found, &no_temps);
      if (no_temps) clean(name, stamp);
      std::unordered_set<std::string_view> images;
      images.reserve(listed.size());
      for (const auto& image : listed) images.insert(image);
      if (SweepSidecars(dir.get(), dir_path, images, dry_run, &found)) clean(meta_key, both);
      // A pool's one folder of ours, `.meta`, was swept with its sidecars above: its
      // 100,000 images are not listed again to find it.
      continue;
    }
    const util::UniqueFd dir{OpenDirAt(root_fd.get(), name)};
    if (dir.get() < 0) continue;
    SweepDir(dir.get(), dir_path, dry_run, &found);
    if (name == ".trash") SweepTrash(dir.get(), dir_path, dry_run, &found);
    for (const auto& sub_name : Names(dir.get(), /*folders_only=*/true)) {
      if (name == ".trash" && !IsTrashId(sub_name)) continue;
      // A table's folder holds a file per key (100,000 last uses): passed over while clean.
      const std::string sub_path = dir_path + "/" + sub_name;
      const std::string key = name + "/" + sub_name;
      const std::string stamp = SettledFolderStamp(sub_path);
      if (unchanged(key, stamp)) {
        clean(key, stamp);
        continue;
      }
      const util::UniqueFd sub{OpenDirAt(dir.get(), sub_name)};
      if (sub.get() < 0) continue;
      bool no_temps = false;
      SweepDir(sub.get(), sub_path, dry_run, &found, &no_temps);
      if (no_temps) clean(key, stamp);
    }
  }
  impl_->SweepLoneStable(dry_run, &found);
  return found;
}

bool LocalBackend::RemoveDanglingName(const ImageRef& ref, const std::string& identity) {
  if (!identity.empty()) return false;
  Impl::Check(ref);
  const util::UniqueFd pool{
      ::open(impl_->PoolDir(ref.pool).c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (pool.get() < 0) return false;
  // Removed only when its maker is gone (its lock free), as any temporary.
  std::vector<Leftover> found;
  SweepOne(pool.get(), impl_->PoolDir(ref.pool).string(),
           ".tmp-" + ref.name + "-" + Impl::kPlacedTag, /*dry_run=*/false, &found);
  return !found.empty() && found.front().removed;
}

}  // namespace cachemgr::storage
