// storage/local/local_impl.h: the local backend's private state and the helpers its
// files share. Each group of helpers is defined in the file named above it; their
// comments are there.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cachemgr/error.h"
#include "cachemgr/options.h"
#include "storage/backend.h"
#include "storage/local/local_backend.h"
#include "storage/local/local_files.h"
#include "storage/local/local_sidecar.h"
#include "util/process.h"

namespace spdlog {
class logger;
}

namespace cachemgr::storage {

namespace fs = std::filesystem;

// The file system block: the unit of the zero checks that leave holes, and of the
// probe writes that test reflink support.
constexpr uint64_t kBlock = 4096;

// A qcow2 file under the root with a backing file (see LocalBackend::Impl::ScanOverlays).
struct Overlay {
  fs::path path;
  fs::path backing;             // as its header names it (absolute, or relative to `path`)
  std::optional<ImageRef> ref;  // set for images in a pool
  std::string trash_id;         // set for images in the trash
  // The path the backing name reaches now as qemu opens it (a relative name from the
  // overlay's folder, `..` and every symlink resolved by the kernel), by the scan that
  // found the overlay; empty if it reaches nothing. Who uses a file is decided on this
  // alone (UsersOf). Another hard link of the same file is another path: removing one
  // breaks nothing that reaches the other.
  fs::path backing_real;
  // A backing name qemu opens from its own working directory (a relative "file:" or
  // "json:" name): that relative name, lexically normal; it reaches every file whose path
  // ends with it (UsersOf), as no one knows that directory.
  fs::path backing_suffix;
  // A file or folder under the root the scan could not read (permissions, I/O, too deep):
  // it may name any file, so it counts as a user of every one (UsersOf), and no file is
  // unlinked or moved while it is there (Remove fails, naming it; PurgeTrash waits).
  bool unknown = false;
  std::string why;  // of an unknown one
};

// The path `name` reaches, `..` and every symlink resolved as the kernel opens it; empty
// when it reaches nothing (local_overlays.cpp).
fs::path RealPath(const fs::path& name);
// Whether the overlay's backing name reaches the file at the absolute `path`, and the
// suffix a name qemu opens from its working directory reaches (local_overlays.cpp).
bool Reaches(const Overlay& o, const fs::path& path);
fs::path CwdSuffix(const fs::path& relative);

// A trash folder's name as MoveToTrash makes it: an image's name (at most 100 characters
// of it), a dot, 12 hex digits. Other folders in the trash are not the cache's.
bool IsTrashId(const std::string& id);
// The image a trash record (entry.json) names, if it reads as one MoveToTrash writes.
std::optional<ImageRef> TrashOriginal(const nlohmann::json& entry);

struct LocalBackend::Impl {
  LocalBackendOptions options;
  std::shared_ptr<spdlog::logger> log;
  fs::path root;
  CloneMode mode = CloneMode::kQcow2;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::recursive_mutex mu;  // sidecar read-modify-write
  // Clones hold it shared, so clones of one parent run side by side (their qemu-img run
  // is most of their time); what would pull a parent from under a clone in progress
  // (unprotect, remove, rename, flatten, purge) holds it exclusive. Taken before `mu`.
  std::shared_mutex users_mu;

  util::RunOptions run_options() const {
    util::RunOptions o;
    o.timeout = std::chrono::seconds(3600);
    return o;
  }
  std::string Qemu(const std::vector<std::string>& argv) const {
    return util::RunChecked(argv, run_options(), static_cast<int>(Errc::kBackend));
  }

  // The tag of the temporary a CloneInPlace writes: `.tmp-<staging>-placed`.
  static constexpr const char* kPlacedTag = "placed";

  fs::path PoolDir(const std::string& pool) const { return root / pool; }
  fs::path PathOf(const ImageRef& ref) const { return root / ref.pool / ref.name; }
  fs::path SidecarPath(const ImageRef& ref) const {
    return root / ref.pool / ".meta" / (ref.name + ".json");
  }
  fs::path TrashDir() const { return root / ".trash"; }
  fs::path BackingDir() const { return root / ".backing"; }

  // local_backend.cpp: names, formats, ownership, publishing.
  static void Check(const ImageRef& ref);
  void EnsurePool(const std::string& pool) const;
  bool ExistsChecked(const ImageRef& ref) const { return IsRegularFile(PathOf(ref)); }
  void Require(const ImageRef& ref) const;
  void RequireFree(const ImageRef& ref) const;
  static std::string IdentityOf(const fs::path& file);
  static std::string IdentityOfFd(int fd, const fs::path& file);  // `file`: for messages
  static std::string IdentityFrom(const struct statx& stx);
  std::string Format(const ImageRef& ref, const Sidecar& s) const;
  uint64_t VirtualSize(const ImageRef& ref, const std::string& format) const;
  void ApplyOwnership(int fd, const fs::path& file) const;
  void Publish(const fs::path& tmp, int fd, const ImageRef& ref, const Sidecar& s,
               const std::function<void()>& before_link = nullptr) const;

  // local_copy.cpp: a qcow2 overlay written into `tmp` and published at `child`.
  void PublishOverlay(const SnapRef& parent, const fs::path& tmp, int fd, uint64_t size,
                      const fs::path& backing, const std::string& parent_format,
                      const ImageRef& child, const Backend::PublishFn& metadata);

  // local_sidecar.cpp: reading and writing sidecars.
  Sidecar Load(const ImageRef& ref) const;
  void Save(const ImageRef& ref, const Sidecar& s) const;
  void DropSidecar(const ImageRef& ref) const;
  // A remover's hold on the sidecar of the image it is about to unlink: opened and locked
  // (an invalid fd when there is none). Once the image is gone, DropHeldSidecar removes
  // that sidecar only: never one a writer of the freed name put there since (that writer
  // finds this one locked, or gone).
  UniqueFd HoldSidecar(const ImageRef& ref) const;
  void DropHeldSidecar(const ImageRef& ref, const UniqueFd& held) const;
  // SaveNew writes the sidecar of an image about to appear at `ref`, never over the
  // sidecar of an image that is there (kAlreadyExists then: a foreign image keeps its
  // metadata). A sidecar without an image whose lock is free (a crash between the two
  // links) is replaced; one whose lock is held is another writer's: kAlreadyExists.
  // Returns the sidecar's inode for DropNewSidecar. The sidecar stays locked (flock, held
  // by `held`) until the caller drops the returned value, after its image is linked: a
  // pass never takes a sidecar whose image is on its way for one a kill left alone
  // (SweepLoneSidecars).
  struct NewSidecar {
    ino_t ino = 0;
    UniqueFd held;
  };
  NewSidecar SaveNew(const ImageRef& ref, const Sidecar& s) const;
  // The sidecar at `ref`'s name, opened, and what it is: none; held by a writer (or
  // replaced meanwhile); beside its image; not the cache's; or a leftover, then locked
  // by `fd` until the caller drops it.
  struct LeftSidecar {
    enum Kind { kNone, kHeld, kImage, kForeign, kLeft } kind = kNone;
    UniqueFd fd;
  };
  LeftSidecar LockLeftSidecar(const ImageRef& ref) const;
  // Removes the sidecar at `ref`'s name when it is a leftover; true when it did.
  bool DropLeftSidecar(const ImageRef& ref) const;
  void DropNewSidecar(const ImageRef& ref, ino_t ino) const;

  // local_adopt.cpp: hard-linked (shared) bases.
  bool AdoptByReflink(int src_fd, const fs::path& file, const ImageRef& ref);
  bool AdoptByHardLink(const fs::path& file, const struct stat& st, const ImageRef& ref);
  void CheckShared(const ImageRef& ref, Sidecar& s);
  void Relinked(const ImageRef& ref, Sidecar& s);
  static std::string SharedIdentity(const struct stat& st);
  static std::pair<std::string, std::string> HashShared(const fs::path& file);
  static std::string SettledIdentity(const struct stat& st);

  // local_links.cpp: the stable backing names `.backing/<inode>`.
  fs::path StableOf(const fs::path& file) const;
  fs::path EnsureStable(const fs::path& file) const;
  bool DropStableIfUnused(const fs::path& stable, const std::vector<Overlay>& overlays) const;
  void SweepStable() const;
  // Stable names that no other name holds and no overlay names: what a kill between an
  // image's last unlink and its link's drop leaves. Every pass looks (SweepTemporaries):
  // a purge sweeps too, but an empty trash has nothing to purge.
  void SweepLoneStable(bool dry_run, std::vector<Leftover>* out);

  // local_overlays.cpp (and local_removal_batch.cpp for the batches): who uses a file as its backing file. A scan stats every file and
  // reads a file's header only when it is new, its stat changed, or it changed too recently
  // for its times to tell (a non-qcow2 header is also read again after a minute). An
  // eviction pass scans three times per removed entry, and reading every header under a
  // root of 100,000 entries each time made it quadratic.
  struct HeaderSeen {
    ino_t ino = 0;
    dev_t dev = 0;
    off_t size = 0;
    struct timespec mtime {};
    struct timespec ctime {};
    bool qcow2 = false;
    std::optional<fs::path> backing;  // set when the file is a qcow2 overlay
    fs::path backing_as_opened;       // and the name qemu opens (Qcow2Header)
    int64_t read_at = 0;              // steady seconds of the last header read
    uint64_t scan = 0;                // the scan that last saw it
    bool from_cwd = false;            // Qcow2Header::backing_from_cwd
  };
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using DirSeen = std::unordered_map<std::string, HeaderSeen, NameHash, std::equal_to<>>;
  mutable std::mutex headers_mu;
  mutable std::unordered_map<std::string, DirSeen> headers;  // by directory path
  mutable uint64_t scans = 0;
  // Overlays among the regular files of `dir` (`pool` set for a pool's folder). kTree:
  // dot-named files too and every folder below (not through links), as disks other tools
  // make may sit anywhere under a pool's folder; a pool's own `.meta` holds sidecars only.
  enum class Walk { kFlat, kTree };
  // kRemembered answers from the headers read before where the stat is unchanged; a
  // decision that deletes or moves a file a user may name (Remove, PurgeTrash,
  // SweepStable, Rename) scans kFresh: every header read now. A stat can miss a change
  // (a write through a shared mapping to a dirty page, an NFS client's cached attributes),
  // so a remembered scan may only ever say "in use" too seldom where nothing is lost.
  enum class Scan { kRemembered, kFresh };
  void ScanDir(const fs::path& dir, const std::optional<std::string>& pool, Scan mode,
               std::vector<Overlay>* out, Walk walk = Walk::kFlat, int depth = 0) const;
  // The backing name of a qcow2 overlay: lexically normal, and as qemu opens it.
  struct BackingNames {
    fs::path normal;
    fs::path as_opened;
    bool from_cwd = false;  // Qcow2Header::backing_from_cwd
    bool unknown = false;   // the file could not be read
    std::string why;        // and why
  };
  std::optional<BackingNames> BackingOf(DirSeen* seen, int dir_fd, const fs::path& dir,
                                        std::string_view name, Scan mode) const;
  std::vector<Overlay> ScanOverlays(Scan mode = Scan::kRemembered) const;
  std::vector<Overlay> UsersOf(const fs::path& file, Scan mode = Scan::kRemembered) const;
  std::vector<Overlay> UsersOf(const fs::path& file, const std::vector<Overlay>& overlays) const;
  // Removal batches (Backend::BeginRemovals): each holds the paths of its images and one
  // fresh look at the overlays, taken on the first question about one of them after the
  // batch began (so after their locks were taken) and taken again once it is older, from
  // its end, than it took to make: a removal is never decided on a look more than twice as
  // old as the one a scan of its own would give.
  struct HeldLook {
    std::vector<std::string> paths;  // sorted
    std::optional<std::vector<Overlay>> overlays;
    std::chrono::steady_clock::time_point taken;
    std::chrono::steady_clock::duration took{};
  };
  mutable std::mutex held_mu;
  mutable std::map<uint64_t, HeldLook> held;  // by batch
  mutable uint64_t held_next = 0;
  // The overlays to decide on `path` with: its batch's look when a batch holds it
  // (`*from_batch` set), else a scan in `mode`.
  std::vector<Overlay> OverlaysFor(const fs::path& path, Scan mode, bool* from_batch = nullptr) const;
  // Fails (kBackend), naming the path, when `users` holds one the scan could not read:
  // nothing that takes `ref`'s name away is safe then (local_trash.cpp).
  void RefuseIfUnknownUsers(const ImageRef& ref, const std::vector<Overlay>& users) const;
  // After a file was removed: every batch's look forgets it as an overlay. nullopt, after
  // a move that renamed or rebased overlays: the looks are dropped (taken anew).
  void ForgetInLooks(const std::optional<fs::path>& removed) const;
  // After the image at `from` moved to the trash folder `trash_id`: an overlay it was is
  // one there still, using the same backing file.
  void MovedInLooks(const fs::path& from, const std::string& trash_id) const;
  bool ReachesStable(const Overlay& user, const fs::path& file) const;
  Sidecar SidecarOf(const Overlay& o) const;
  void Rebase(const fs::path& overlay, const fs::path& new_backing,
              const std::string& backing_format) const;

  // local_copy.cpp: independent copies (sparse, reflink or through qemu-img).
  void Materialize(const fs::path& src, const std::string& src_format, uint64_t size,
                   const fs::path& dest, int dest_fd, bool reflink,
                   const ProgressFn& progress) const;
  void CopyTo(const ImageRef& src, uint64_t size, const ImageRef& dest, const ProgressFn& progress);

  // local_trash.cpp: the two ways Remove takes an image away.
  std::string TrashedCopyOf(const fs::path& file, const std::string& name) const;
  void RemoveUnused(const ImageRef& ref, std::vector<Overlay> overlays);
  // Returns the trash folder's id.
  std::string MoveToTrash(const ImageRef& ref, const std::vector<Overlay>& users);
};

}  // namespace cachemgr::storage
