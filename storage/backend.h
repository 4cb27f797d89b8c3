// storage/backend.h: the storage Env. Image-level verbs, nothing about images from a
// source or about caches: the engine decides names and meaning.
//
// An image is addressed by ImageRef{pool, name}. For RBD, `pool` is a Ceph pool (the
// configured namespace applies inside it); for the local backend, a folder under the
// root ("_base", "volumes"). Names are validated by every backend (ValidateName):
// [A-Za-z0-9._-], 1..200 chars, not starting with '.' or '-'.
//
// One contract test suite (tests/contract/) runs against every implementation and
// against the fault-injecting wrapper. All verbs throw cachemgr::Error.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace cachemgr::storage {

struct ImageRef {
  std::string pool;
  std::string name;
  bool operator==(const ImageRef&) const = default;
};

struct SnapRef {
  ImageRef image;
  std::string snap;
  bool operator==(const SnapRef&) const = default;
};

struct ImageInfo {
  ImageRef ref;
  uint64_t size = 0;                 // virtual size in bytes
  std::optional<SnapRef> parent;     // set for clones / overlays
};

struct SnapInfo {
  std::string name;
  bool is_protected = false;
};

struct TrashEntry {
  std::string id;         // backend's id of the trashed image
  ImageRef original;      // where it lived
  bool has_children = false;
  std::string identity;  // Identity() the image had before it was trashed
};

// Progress of a long verb: done and total in bytes (or objects); total 0 when unknown.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

struct ImportStats {
  uint64_t bytes_in = 0;        // bytes appended
  uint64_t bytes_written = 0;   // bytes actually written (all-zero runs are skipped)
  std::chrono::microseconds elapsed{};
};

// A new image being written front to back. The destructor removes the image unless
// Finish() returned: nothing half-written survives an exception or a crash's restart
// (the engine also names such images so gc can find them).
class ImageWriter {
 public:
  virtual ~ImageWriter() = default;
  // Appends bytes at the current end. May keep a bounded number of writes in flight;
  // the first failure is thrown from this call or from Finish().
  virtual void Append(std::span<const std::byte> data) = 0;
  // Appends `n` zero bytes. A new image reads zeros already, so a writer skips what it
  // can (whole objects or buffers) instead of looking at every byte; this default
  // appends them from a zero buffer.
  virtual void AppendZeros(uint64_t n);
  // Waits for every write, makes the data durable, and keeps the image.
  virtual ImportStats Finish() = 0;
};

// Reads an image (or one of its snapshots).
class ImageReader {
 public:
  virtual ~ImageReader() = default;
  virtual uint64_t size() const = 0;
  // Reads up to out.size() bytes at offset; returns the count (0 at the end).
  virtual size_t Read(uint64_t offset, std::span<std::byte> out) = 0;
};

// A held advisory lock; released by the destructor.
class Lock {
 public:
  virtual ~Lock() = default;
  // Removes the lock's object (RBD) or file (local) while it is held, for a key no
  // longer in use, so they do not pile up; the destructor still releases. Someone
  // waiting for the key gets a new lock object, never a lock shared with this one.
  // False when it stays: a local file at the lock's name that is not one a lock makes.
  virtual bool Discard() = 0;
};

enum class RemoveOutcome { kRemoved, kTrashed };

// A temporary that a writer which died (kill -9, a crash, power loss) left behind.
struct Leftover {
  std::string path;    // where it is (local: a `.tmp-*` file under the root)
  uint64_t bytes = 0;  // space it holds
  bool removed = false;
};

// Folders a sweep of temporaries found clean, by a name the backend chooses, each with
// the folder's stamp then (Backend::SweepTemporaries).
using SweepLooks = std::map<std::string, std::string>;

// Free space of where entries live (cache.min_free_percent / min_free_gb).
struct SpaceInfo {
  uint64_t total_bytes = 0;  // what the floor's percent is taken of
  uint64_t avail_bytes = 0;  // what may still be written
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string kind() const = 0;  // "local" | "rbd"
  // Identity of the storage for the index key: "pool[/namespace]" or the local root.
  virtual std::string location() const = 0;
  // The pool cache entries live in, and the pool volumes are made in.
  virtual std::string entry_pool() const = 0;
  virtual std::string volume_pool() const = 0;
  // RBD: the cluster fsid (for the direct-clone check); local: empty.
  virtual std::string cluster_id() const = 0;

  // --- images
  virtual bool Exists(const ImageRef& ref) = 0;
  // Whether anything holds the name, image or not: what Rename and CloneInPlace refuse
  // (RBD: any id object, a format-1 header, a directory entry). Exists(ref) by default.
  virtual bool NameTaken(const ImageRef& ref) { return Exists(ref); }
  // Whether Clone and CloneInPlace write no more than metadata (an RBD clone, a qcow2
  // overlay), so that one made only to find the name taken costs little; false where a
  // clone copies the image.
  virtual bool CheapClone() const { return true; }
  virtual ImageInfo Stat(const ImageRef& ref) = 0;              // kNotFound if absent
  virtual std::vector<std::string> List(const std::string& pool) = 0;
  // Every image of `pool` with its Identity(), in as few round trips as the backend can
  // (RBD: one listing); an image removed meanwhile is left out.
  virtual std::map<std::string, std::string> ListIdentities(const std::string& pool);
  virtual uint64_t AllocatedBytes(const ImageRef& ref) = 0;     // bytes really used
  // Creates `ref` of `size` bytes and returns a writer that fills it front to back.
  virtual std::unique_ptr<ImageWriter> Create(const ImageRef& ref, uint64_t size) = 0;
  // Makes `ref` from an existing raw file without copying bytes where the backend can
  // (a hard link on the same filesystem); returns false when it cannot, and then the
  // caller streams the file through Create(). The file must not change afterwards.
  virtual bool Adopt(const std::filesystem::path& raw_file, const ImageRef& ref) = 0;
  // Makes `ref` from a raw file that is not the cache's (an image store's file; `file` may
  // be /proc/self/fd/N of an open descriptor) so that nothing done to either side reaches
  // the other: a reflink where the backend can, a hard link only where the operator
  // allowed it (and then checked for changes on every use). Returns false when the
  // caller must copy. Never changes the file's owner or mode.
  virtual bool AdoptShared(const std::filesystem::path& /*file*/, const ImageRef& /*ref*/) {
    return false;
  }
  // kCorrupt naming `ref` when it is no longer what was made (a hard-linked base whose
  // shared file changed); otherwise nothing. Backends whose images nobody else can
  // write have nothing to check.
  virtual void RequireIntact(const ImageRef& /*ref*/) {}
  virtual std::unique_ptr<ImageReader> Open(const ImageRef& ref,
                                            const std::optional<std::string>& snap = {}) = 0;
  virtual void Resize(const ImageRef& ref, uint64_t size) = 0;  // grow only is enough
  // Renames within the pool without ever replacing: kAlreadyExists if `to_name` is
  // taken (by anything), and then neither image nor its metadata is touched.
  virtual void Rename(const ImageRef& from, const std::string& to_name) = 0;
  // The object's own identity, not its name: the same across Rename, different for a
  // copy (metadata and all) or for an image made again under the same name. RBD: the
  // image id; local: inode number and birth time. The engine records it when it makes an
  // object and acts on an object later only if it still matches. kNotFound if absent.
  virtual std::string Identity(const ImageRef& ref) = 0;
  // Whether `ref` is the object whose Identity is `identity` (false if absent): the answer
  // of Identity(ref) == identity, in fewer round trips where the backend can.
  virtual bool HasIdentity(const ImageRef& ref, const std::string& identity);
  // Cuts off the clients still watching `ref` whose process is gone (a writer killed with
  // the image open: the watch lingers until the OSD times it out, and Remove fails with
  // kBusy meanwhile). Only for an object no live owner may hold. Returns how many were
  // cut off; backends without watchers have nothing to do.
  virtual size_t EvictWatchers(const ImageRef& /*ref*/) { return 0; }
  // How many clients other than this process watch `ref` (have it open read-write: a VM's
  // disk); 0 for an absent image and on backends without watchers.
  virtual size_t OtherWatchers(const ImageRef& /*ref*/) { return 0; }
  // Removes what a Rename killed midway may leave at `ref` when no image opens there: a
  // name still bound to the object whose Identity is `identity` (an RBD id object or
  // directory entry naming an image that is gone), which would refuse the name for ever.
  // Touches nothing bound to another identity; an empty `identity` is for a name only the
  // caller ever used (a staging name): any binding without an image goes. Returns whether
  // something was removed.
  virtual bool RemoveDanglingName(const ImageRef& /*ref*/, const std::string& /*identity*/) {
    return false;
  }
  // Removes an image. One that still has clones is moved to the trash instead
  // (kTrashed): its clones keep reading, and PurgeTrash removes it once they are gone.
  virtual RemoveOutcome Remove(const ImageRef& ref) = 0;
  // Several removals in a row (an eviction pass's victims). The caller has taken the
  // locks of every image in `images` (its image lock and its exclusive use lock, so no
  // clone of them can be made through the cache) before the call, and holds them until
  // the returned object is gone. Meanwhile the backend may answer Children and Remove of
  // those images from one look at the store taken after the call, rather than one look
  // per call. nullptr: every call looks anew. RemovalBatchLimit: how many images a batch
  // should hold at most (1, the default: none; RBD asks the cluster per image anyway).
  virtual size_t RemovalBatchLimit() const { return 1; }
  class RemovalBatch {
   public:
    virtual ~RemovalBatch() = default;
  };
  virtual std::unique_ptr<RemovalBatch> BeginRemovals(const std::vector<ImageRef>& /*images*/) {
    return nullptr;
  }

  // --- snapshots
  virtual void CreateSnapshot(const SnapRef& snap) = 0;
  virtual void ProtectSnapshot(const SnapRef& snap) = 0;
  virtual void UnprotectSnapshot(const SnapRef& snap) = 0;
  virtual void RemoveSnapshot(const SnapRef& snap) = 0;
  virtual std::vector<SnapInfo> ListSnapshots(const ImageRef& ref) = 0;

  // --- clones and copies
  // A copy-on-write child of a protected snapshot (RBD clone v2; a qcow2 overlay or a
  // reflink locally). The parent may be in another pool of the same cluster.
  virtual void Clone(const SnapRef& parent, const ImageRef& child) = 0;
  // The metadata a clone made by CloneInPlace carries from the moment it has its name,
  // asked once the clone exists under no name yet, given its Identity. It may block (the
  // caller's own checks) and may throw anything: the clone is then undone.
  using PublishFn =
      std::function<std::map<std::string, std::string>(const std::string& identity)>;
  // A clone of `parent` that appears at `child` whole or not at all: `size` bytes (0: the
  // snapshot's own size; never less) and carrying the metadata `publish` returns, in one
  // call where Clone, SetMetadata, Resize and Rename take four, each finding the image
  // again. Nothing is at `child` before `publish` returns. kAlreadyExists, nothing
  // touched, when `child` is taken. On failure the clone is undone. A process killed
  // midway may leave it under `staging` (a name only the caller uses): Remove(staging)
  // then RemoveDanglingName(staging, "") clear it. Returns false, having done nothing,
  // where the backend cannot (the local backend's copy and reflink modes): the caller
  // clones under `staging` and then sets, resizes and renames.
  virtual bool CloneInPlace(const SnapRef& /*parent*/, const ImageRef& /*staging*/,
                            const ImageRef& /*child*/, uint64_t /*size*/,
                            const PublishFn& /*publish*/) {
    return false;
  }
  // A full, independent copy of an image or snapshot (sparse where possible).
  virtual void Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) = 0;
  virtual void Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) = 0;
  // Copies the parent's data into the image and detaches it from its parent.
  virtual void Flatten(const ImageRef& ref, const ProgressFn& progress) = 0;
  virtual std::optional<SnapRef> Parent(const ImageRef& ref) = 0;
  // Parent-chain length: 0 for an independent image.
  virtual uint32_t Depth(const ImageRef& ref) = 0;
  // Images cloned from a snapshot (including ones in the trash).
  virtual std::vector<ImageRef> Children(const SnapRef& snap) = 0;

  // --- what a clone holds itself (the pinned flatten's measure)
  // Bytes of data `ref` holds itself, not read from its parent: about 0 for a fresh clone,
  // about what was written into it since. RBD: the diff API without the parent (whole
  // objects from the object map when fast-diff is on); local: the blocks the image's file
  // allocates (the default: a qcow2 overlay file holds only its own clusters and their
  // tables, and an independent image owns every byte it allocates).
  virtual uint64_t OwnBytes(const ImageRef& ref) { return AllocatedBytes(ref); }
  // Whether Flatten changes the image where it is, so that a VM using it keeps running
  // and its identity stays (RBD: an online flatten). false where Flatten writes a new
  // object and swaps it in (local: a VM holding the old file would write on into it).
  virtual bool FlattensInPlace() const { return false; }

  // --- metadata stored on the image (RBD image-meta; a sidecar file locally)
  virtual std::map<std::string, std::string> GetMetadata(const ImageRef& ref) = 0;
  virtual void SetMetadata(const ImageRef& ref, const std::string& key,
                           const std::string& value) = 0;
  virtual void RemoveMetadata(const ImageRef& ref, const std::string& key) = 0;

  // --- deferred deletes
  virtual std::vector<TrashEntry> ListTrash() = 0;
  // Removes a trashed image if nothing uses it any more; returns whether it did.
  virtual bool PurgeTrash(const TrashEntry& entry) = 0;

  // --- coordination across hosts that share this storage
  // An exclusive advisory lock named `key` (RBD: a RADOS lock on a per-key object;
  // local: flock under the root). Waits up to `timeout`, then throws kBusy.
  virtual std::unique_ptr<Lock> AcquireLock(const std::string& key,
                                            std::chrono::milliseconds timeout) = 0;

  // --- what dead writers left
  // Finds the backend's own temporaries that no live writer holds any more and removes
  // them unless `dry_run`; a temporary a writer is still making is never listed. The
  // default has none (RBD: staging images are named and collected by the engine's gc).
  std::vector<Leftover> SweepTemporaries(bool dry_run) { return SweepTemporaries(dry_run, nullptr); }
  // The same, passing over the folders `looks` says were clean: its values are stamps
  // (opaque; a folder's identity and times, once settled) the backend gave of folders in
  // which a sweep found nothing at all, and a folder whose stamp is still that one is not
  // listed again (a name made or removed in a folder changes its times). On return
  // `looks` holds the stamps of the folders found clean now, or passed over as such. The
  // caller keeps it between sweeps and bounds how long a stamp is trusted.
  virtual std::vector<Leftover> SweepTemporaries(bool dry_run, SweepLooks* looks);
  // Paths the backend cannot read while it decides what uses an image, each with its
  // cause: while one is there, no image is removed (local: headers and folders under the
  // root its scan cannot read). None by default.
  virtual std::vector<std::string> UnreadableUsers() { return {}; }
  // The keys that have a lock object (RBD: in a RADOS namespace of their own, so the
  // listing holds nothing else) or lock file (local: under <root>/.locks), held or not:
  // what a crashed holder left is found here and discarded by whoever takes it next.
  virtual std::vector<std::string> ListLocks() = 0;
  // A folder on the storage itself where flock(2) excludes across every host that shares
  // it (local: <root>/.locks), for the engine's shared/exclusive entry use locks; none
  // where the storage keeps a clone safe by itself (RBD clone v2: the child attaches to
  // the snapshot atomically, and an image with children goes to the trash).
  virtual std::optional<std::filesystem::path> SharedLockDir() const { return std::nullopt; }

  // --- small records every host sharing this storage reads and writes
  // A table maps keys (ValidateName rules) to short values (at most 4 KiB). RBD: the omap
  // of one RADOS object per table, beside the lock objects; local: one file per key
  // under <root>/.state/<table>/, written to a temporary and renamed. Each WriteTable is
  // atomic (RBD: one write op; local: per key). A table never written reads empty. A key
  // outside those rules (another tool's) is never read, so never written back or erased.
  virtual std::map<std::string, std::string> ReadTable(const std::string& table) = 0;
  virtual void WriteTable(const std::string& table, const std::map<std::string, std::string>& set,
                          const std::vector<std::string>& erase = {}) = 0;
  // One key's value (nullopt: none), for a reader of one key in a table of a key per
  // entry (the fates a miss is labelled by): local reads one file, RBD one omap key.
  virtual std::optional<std::string> ReadTableValue(const std::string& table, const std::string& key) {
    auto all = ReadTable(table);
    auto it = all.find(key);
    if (it == all.end()) return std::nullopt;
    return std::move(it->second);
  }
  // A stamp that differs after any WriteTable of `table` on any host, for a reader that
  // skips a table unchanged since it last read all of it; "" when the backend cannot tell
  // (then the table is read every time). Local: the table folder's inode and times, and
  // only once they are older than the times can show a change in (2 s); a value edited in
  // place, not renamed, changes no stamp.
  virtual std::string TableStamp(const std::string& table) {
    (void)table;
    return "";
  }
  // A stamp of the names in `pool`: it differs after any image is made, removed or
  // renamed there (local: or its sidecar), on any host, and not after a write into an
  // image. For
  // a pass that skips comparing the pool with its index when neither changed since they
  // were last found in step; "" when the backend cannot tell (then it compares every
  // time). Local: the pool folder's and its `.meta` folder's inodes and times, given only
  // once they are older than the times can show a change in (2 s). RBD: the versions of the
  // pool's (namespace's) `rbd_directory` and `rbd_trash` objects, which every create,
  // rename and removal writes (metadata is not in them: the engine's marks are set before
  // a rename).
  virtual std::string PoolStamp(const std::string& pool) {
    (void)pool;
    return "";
  }

  // --- instant import (RBD: an import-only live migration; rbd_migration.cpp)
  // Makes `ref` at once as an import of `source_spec` (librbd's migration source spec:
  // {"type":"raw"|"qcow","stream":{"type":"file","file_path":...}}). Until the import is
  // committed, every reader of `ref` (and of its clones, on any host) reads what is not
  // copied yet through that source, so the path must reach the same file everywhere.
  // Default: kInvalidArgument (the backend cannot).
  virtual void PrepareImport(const std::string& source_spec, const ImageRef& ref);
  virtual bool CanImportInstantly() const { return false; }
  // Whether the backend's store stopped answering within its timeout moments ago (an op
  // of this process timed out in the last minute): best-effort clean-ups after a failure,
  // whose leftovers a pass removes anyway, are skipped rather than each waiting for a
  // timeout of its own. Default: never (a local folder answers or fails).
  virtual bool Unresponsive() const { return false; }
  // Where an import of `ref` stands; kNone for an image that is not being imported.
  enum class ImportState { kNone, kPrepared, kExecuting, kExecuted, kOther };
  virtual ImportState ImportStatus(const ImageRef& /*ref*/) { return ImportState::kNone; }
  // The source spec an image being imported reads through ("" when none).
  virtual std::string ImportSource(const ImageRef& /*ref*/) { return ""; }
  // Copies every byte not copied yet (resumes a killed one); then Commit makes the image
  // independent of the source (its clones keep reading right); Abort removes an image
  // whose import never got a clone.
  virtual void ExecuteImport(const ImageRef& ref, const ProgressFn& progress);
  virtual void CommitImport(const ImageRef& ref);
  virtual void AbortImport(const ImageRef& ref);

  // --- free space (local: local_space.cpp; rbd: rbd_space.cpp)
  // The space of the filesystem or pool that holds entry_pool(). Throws kBackend naming
  // the root or pool when it cannot be read.
  virtual SpaceInfo FreeSpace() = 0;
};

// Checks a backend image or snapshot name; throws kInvalidArgument naming it if bad.
void ValidateName(const std::string& what, const std::string& name);
// The same rule without the throw: whether the cache could have made `name`. A listed
// name that is not one is another's, and is passed over (never a failure of a pass).
bool IsValidName(const std::string& name);

}  // namespace cachemgr::storage
