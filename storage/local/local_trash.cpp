// storage/local/local_trash.cpp: removing images, and the trash that keeps an image
// other overlays still read from until the last of them is gone.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "storage/local/local_impl.h"
#include "util/hex.h"

namespace cachemgr::storage {

using nlohmann::json;

namespace {

// Opens the trash folder `dir` and locks it (flock, as long as the result is open). A
// folder is locked while incomplete: a pass removes an unlocked folder that holds no
// image (SweepTemporaries).
UniqueFd LockTrashFolder(const fs::path& dir) {
  UniqueFd fd = OpenOrFail(dir, O_RDONLY | O_DIRECTORY);
  ::flock(fd.get(), LOCK_EX);
  return fd;
}

constexpr size_t kTrashHexDigits = 12;

}  // namespace

bool IsTrashId(const std::string& id) {
  const auto dot = id.rfind('.');
  if (dot == std::string::npos || dot == 0 || dot > 100) return false;
  const std::string hex = id.substr(dot + 1);
  if (hex.size() != kTrashHexDigits ||
      hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return false;
  }
  try {
    ValidateName("image", id.substr(0, dot));
  } catch (const Error&) {
    return false;
  }
  return true;
}

std::optional<ImageRef> TrashOriginal(const json& entry) {
  if (!entry.is_object()) return std::nullopt;
  auto it = entry.find("original");
  if (it == entry.end() || !it->is_object()) return std::nullopt;
  auto pool = it->find("pool");
  auto name = it->find("name");
  if (pool == it->end() || name == it->end() || !pool->is_string() || !name->is_string()) {
    return std::nullopt;
  }
  return ImageRef{pool->get<std::string>(), name->get<std::string>()};
}

// The id of a trash folder for `name` ("<name>.<hex>") whose image is the file at
// `path` (same device and inode): a move to the trash that a kill interrupted. "" if none.
std::string LocalBackend::Impl::TrashedCopyOf(const fs::path& path, const std::string& name) const {
  struct stat want {};
  if (::lstat(path.c_str(), &want) != 0) return "";
  const std::string prefix = name.substr(0, 100) + ".";
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(TrashDir(), ec)) {
    std::string id = dir.path().filename().string();
    if (id.compare(0, prefix.size(), prefix) != 0 || !IsTrashId(id)) continue;
    struct stat st {};
    if (::lstat((dir.path() / "image").c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (st.st_dev == want.st_dev && st.st_ino == want.st_ino) return id;
  }
  return "";
}

RemoveOutcome LocalBackend::Remove(const ImageRef& ref) {
  Impl::Check(ref);
  if (!impl_->ExistsChecked(ref)) {
    // A sidecar without its image is what a kill between Publish's two links leaves (the
    // sidecar goes first): it goes with the remove. Not one a writer still holds (its
    // image is on its way), nor a file at that name that is not the cache's.
    std::lock_guard lock(impl_->mu);
    impl_->DropLeftSidecar(ref);
  }
  impl_->Require(ref);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  const auto path = PathOf(ref);
  bool from_batch = false;
  auto overlays = impl_->OverlaysFor(path, Impl::Scan::kFresh, &from_batch);  // decides an unlink
  auto users = impl_->UsersOf(path, overlays);
  if (from_batch && std::any_of(users.begin(), users.end(), [&](const Overlay& o) {
        return !impl_->ReachesStable(o, path);
      })) {
    // A move to the trash rebases users that name the file by another name than its
    // stable link, by the paths they have now: decided on a look of its own. The cache's
    // own clones name the stable link, which does not move: nothing of theirs is rewritten.
    overlays = impl_->ScanOverlays(Impl::Scan::kFresh);
    users = impl_->UsersOf(path, overlays);
  }
  // What the scan could not read may name this file by any name: neither an unlink nor a
  // move (which takes the name away) is safe until it can be read or is gone.
  impl_->RefuseIfUnknownUsers(ref, users);
  // A move to the trash a kill cut short left this very file in a trash folder too: the
  // move is finished (its record is the trash's, which the caller's pass purges once
  // nothing reads it), never the name unlinked under a folder nobody would purge.
  if (users.empty() && impl_->TrashedCopyOf(path, ref.name).empty()) {
    impl_->RemoveUnused(ref, std::move(overlays));
    impl_->ForgetInLooks(path);
    return RemoveOutcome::kRemoved;
  }
  impl_->MovedInLooks(path, impl_->MoveToTrash(ref, users));
  return RemoveOutcome::kTrashed;
}

void LocalBackend::Impl::RefuseIfUnknownUsers(const ImageRef& ref,
                                              const std::vector<Overlay>& users) const {
  for (const auto& o : users) {
    if (o.unknown) {
      Fail(Errc::kBackend, "image " + RefName(ref) + ": cannot tell what reads it: " +
                               o.path.string() + " under the root cannot be read (" + o.why +
                               "); it stays until that path can be read or is removed");
    }
  }
}

// Removes an image no overlay uses; `overlays` is every overlay under the root.
void LocalBackend::Impl::RemoveUnused(const ImageRef& ref, std::vector<Overlay> overlays) {
  const auto path = PathOf(ref);
  auto stable = StableOf(path);
  const UniqueFd sidecar = HoldSidecar(ref);
  if (::unlink(path.c_str()) != 0) FailErrno("cannot remove", path, errno);
  DropHeldSidecar(ref, sidecar);
  FsyncDir(path.parent_path());
  // The overlays seen above, less the file just removed: what still names a backing.
  std::erase_if(overlays, [&](const Overlay& o) { return o.path == path; });
  DropStableIfUnused(stable, overlays);
  log->info("removed image={}", RefName(ref));
}

// Still a backing file: park it in the trash under a fresh id, so the name is free for
// a new entry. Our overlays name its stable link and are not touched; overlays made by
// other tools against the name are repointed (header only) at the trash. The file is
// linked into the trash before they move and unlinked after, so every overlay's
// backing file exists at every step.
std::string LocalBackend::Impl::MoveToTrash(const ImageRef& ref,
                                            const std::vector<Overlay>& users) {
  const auto path = PathOf(ref);
  const UniqueFd sidecar = HoldSidecar(ref);
  Sidecar s = Load(ref);
  std::string format = Format(ref, s);
  // A move that a kill cut short left this very file (same inode) in a trash folder of
  // the same name already: that folder is finished, not a second one made.
  std::string id = TrashedCopyOf(path, ref.name);
  const bool resumed = !id.empty();
  if (!resumed) id = ref.name.substr(0, 100) + "." + util::RandomHex(kTrashHexDigits);
  auto dir = TrashDir() / id;
  auto trashed = dir / "image";
  if (!resumed) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      Fail(Errc::kBackend, "cannot create trash folder " + dir.string() + ": " + ec.message());
  }
  const UniqueFd folder_lock = LockTrashFolder(dir);
  if (!resumed && ::link(path.c_str(), trashed.c_str()) != 0)
    FailErrno("cannot link " + path.string() + " into the trash as", trashed, errno);
  json entry{{"original", {{"pool", ref.pool}, {"name", ref.name}}},
             {"format", format},
             {"sidecar", ToJson(s)},
             {"trashed_at", std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()}};
  WriteDurable(dir / "entry.json", entry.dump(2));
  FsyncDir(TrashDir());
  // Users that name it by any other name than its stable link (the cache's own overlays
  // name that one, which stays) follow it into the trash: its own name goes below, and a
  // symlinked folder or a relative name reaches only what is at that name.
  for (const auto& o : users)
    if (!o.unknown && !ReachesStable(o, path)) Rebase(o.path, trashed, format);
  if (::unlink(path.c_str()) != 0) FailErrno("cannot remove", path, errno);
  DropHeldSidecar(ref, sidecar);
  FsyncDir(path.parent_path());
  log->info("trashed image={} trash_id={} overlays={}", RefName(ref), id, users.size());
  return id;
}

std::vector<TrashEntry> LocalBackend::ListTrash() {
  std::vector<TrashEntry> out;
  std::error_code ec;
  std::vector<fs::path> dirs;
  for (const auto& dir : fs::directory_iterator(impl_->TrashDir(), ec)) {
    // A crash between link and entry leaves no entry.json: PurgeTrash ignores the folder.
    // A folder not named as the cache names them is not the cache's.
    std::error_code entry_ec;  // a link that loops is no entry, not a failure
    if (IsTrashId(dir.path().filename().string()) &&
        fs::exists(dir.path() / "entry.json", entry_ec))
      dirs.push_back(dir.path());
  }
  // An empty trash needs no scan (every pass lists the trash; a scan stats every file
  // under the root). Otherwise one scan answers for every entry (a scan per entry made
  // the listing quadratic).
  if (dirs.empty()) return out;
  const auto overlays = impl_->ScanOverlays();
  for (const auto& dir : dirs) {
    try {
      const auto original = TrashOriginal(ReadJsonFile(dir / "entry.json"));
      if (!original) {
        impl_->log->warn("trash folder left alone: its entry.json is not a trash record of this "
                         "cache dir={}", dir.string());
        continue;
      }
      TrashEntry t;
      t.id = dir.filename().string();
      t.original = *original;
      t.has_children = !impl_->UsersOf(dir / "image", overlays).empty();
      t.identity = Impl::IdentityOf(dir / "image");  // the same inode as before
      out.push_back(std::move(t));
    } catch (const Error& e) {
      impl_->log->warn("unreadable trash entry dir={} cause={}", dir.string(), e.what());
    }
  }
  return out;
}

bool LocalBackend::PurgeTrash(const TrashEntry& entry) {
  ValidateName("trash id", entry.id);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  auto dir = impl_->TrashDir() / entry.id;
  std::error_code ec;
  if (!fs::exists(dir, ec)) Fail(Errc::kNotFound, "trash entry " + entry.id + ": not found");
  // Old files that only held the chain together go first: they may be the last users.
  impl_->SweepStable();
  auto overlays = impl_->ScanOverlays(Impl::Scan::kFresh);  // decides an unlink
  if (!impl_->UsersOf(dir / "image", overlays).empty()) return false;
  auto stable = impl_->StableOf(dir / "image");
  // The image goes first, under the folder's lock: a purge killed midway leaves a folder
  // without an image, which the next pass removes (SweepTemporaries).
  const UniqueFd folder_lock = LockTrashFolder(dir);
  ::unlink((dir / "image").c_str());
  // What the cache put there, by name: anything else someone left in the folder stays
  // (and the folder with it).
  if (::unlink((dir / "entry.json").c_str()) != 0 && errno != ENOENT)
    FailErrno("cannot remove trash record", dir / "entry.json", errno);
  if (::rmdir(dir.c_str()) != 0) {
    if (errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
      FailErrno("cannot remove trash folder", dir, errno);
    if (errno != ENOENT)
      impl_->log->warn("trash folder left in place: it holds files the cache did not put there "
                       "dir={}", dir.string());
  }
  FsyncDir(impl_->TrashDir());
  std::erase_if(overlays, [&](const Overlay& o) { return o.trash_id == entry.id; });
  impl_->DropStableIfUnused(stable, overlays);
  impl_->ForgetInLooks(dir / "image");
  impl_->log->info("purged trash_id={} image={}", entry.id, RefName(entry.original));
  return true;
}

}  // namespace cachemgr::storage
