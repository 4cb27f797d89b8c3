// storage/local/local_backend.h: the Backend on a plain directory (Nova's `_base` cache).
//
// Layout under the root:
//   _base/<name>              cache entries (the engine names them sha1(image_id)), raw
//   volumes/<name>            volumes: qcow2 overlays, reflinks or sparse copies
//   <pool>/.meta/<name>.json  sidecar: format, metadata, snapshots, parent (the index is
//                             rebuilt from these; a file without one is a raw image)
//   <pool>/.tmp-*             files being made; renamed (linked) into place when durable
//   .trash/<id>/              images removed while overlays still used them
//   .backing/<inode>          the name overlays use as their backing file: a hard link
//                             of the parent, named by its inode (see below)
//   .locks/<key>.lock         flock files of AcquireLock
//   .tmp/                     raw views of qcow2 files while they are read
//
// Snapshots are records in the sidecar (name, protected, size), not copies: the engine
// never writes an image after snapshotting it, so a snapshot reads the image's first
// `size` bytes.
//
// A qcow2 overlay names its backing file by path, and a reader (qemu starting a VM,
// qemu-img) reads that path from the header and opens it a moment later. So the path an
// overlay of ours names is never one that changes: it is `.backing/<inode>`, a hard link
// of the parent made at the first clone. Removing, renaming or flattening the parent
// changes its own name only; the overlay's header is never rewritten and its backing
// file never moves. The link goes when no overlay names it and no other name holds the
// inode. Overlays made by other tools against `<pool>/<name>` are still seen as users;
// those alone are repointed (header only) when their base leaves its name.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "cachemgr/options.h"
#include "storage/backend.h"

namespace spdlog {
class logger;
}

namespace cachemgr::storage {

class LocalBackend final : public Backend {
 public:
  // Creates the root's folders, resolves owner/group (kConfig naming an unknown one) and,
  // for CloneMode::kAuto, probes whether reflink works on the root's filesystem.
  LocalBackend(const LocalBackendOptions& options, std::shared_ptr<spdlog::logger> logger);
  ~LocalBackend() override;

  // The clone mode in effect (never kAuto).
  CloneMode clone_mode() const;
  // Where an image's file lives (it need not exist).
  std::filesystem::path PathOf(const ImageRef& ref) const;
  // "raw" or "qcow2": the on-disk format of an existing image.
  std::string FormatOf(const ImageRef& ref);
  // Whether FICLONE works between two files in `dir`.
  static bool ReflinkWorks(const std::filesystem::path& dir);

  std::string kind() const override;
  std::string location() const override;
  std::string entry_pool() const override;
  std::string volume_pool() const override;
  std::string cluster_id() const override;

  bool Exists(const ImageRef& ref) override;
  // Anything at the name, a link that leads nowhere or loops, a FIFO or a folder too.
  bool NameTaken(const ImageRef& ref) override;
  // Only a qcow2 overlay: a copy writes the image, and a reflink's cost grows with the
  // file's extents.
  bool CheapClone() const override { return clone_mode() == CloneMode::kQcow2; }
  ImageInfo Stat(const ImageRef& ref) override;
  std::vector<std::string> List(const std::string& pool) override;
  std::map<std::string, std::string> ListIdentities(const std::string& pool) override;
  uint64_t AllocatedBytes(const ImageRef& ref) override;
  std::unique_ptr<ImageWriter> Create(const ImageRef& ref, uint64_t size) override;
  bool Adopt(const std::filesystem::path& raw_file, const ImageRef& ref) override;
  bool AdoptShared(const std::filesystem::path& file, const ImageRef& ref) override;
  void RequireIntact(const ImageRef& ref) override;
  std::unique_ptr<ImageReader> Open(const ImageRef& ref,
                                    const std::optional<std::string>& snap) override;
  void Resize(const ImageRef& ref, uint64_t size) override;
  void Rename(const ImageRef& from, const std::string& to_name) override;
  std::string Identity(const ImageRef& ref) override;
  RemoveOutcome Remove(const ImageRef& ref) override;
  // local_removal_batch.cpp
  std::unique_ptr<RemovalBatch> BeginRemovals(const std::vector<ImageRef>& images) override;
  size_t RemovalBatchLimit() const override;

  void CreateSnapshot(const SnapRef& snap) override;
  void ProtectSnapshot(const SnapRef& snap) override;
  void UnprotectSnapshot(const SnapRef& snap) override;
  void RemoveSnapshot(const SnapRef& snap) override;
  std::vector<SnapInfo> ListSnapshots(const ImageRef& ref) override;

  void Clone(const SnapRef& parent, const ImageRef& child) override;
  // In qcow2 clone mode: the overlay written under `.tmp-<staging>-placed` (the temporary
  // RemoveDanglingName(staging, "") removes), its sidecar (with `publish`'s metadata) and
  // the image linked at `child`; false in the other modes.
  bool CloneInPlace(const SnapRef& parent, const ImageRef& staging, const ImageRef& child,
                    uint64_t size, const PublishFn& publish) override;
  // For an empty identity: the temporary a CloneInPlace under the staging name `ref` left
  // (local_temporaries.cpp). Nothing else: a Rename here never leaves a bare name.
  bool RemoveDanglingName(const ImageRef& ref, const std::string& identity) override;
  void Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) override;
  void Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) override;
  void Flatten(const ImageRef& ref, const ProgressFn& progress) override;
  std::optional<SnapRef> Parent(const ImageRef& ref) override;
  uint32_t Depth(const ImageRef& ref) override;
  std::vector<ImageRef> Children(const SnapRef& snap) override;

  std::map<std::string, std::string> GetMetadata(const ImageRef& ref) override;
  void SetMetadata(const ImageRef& ref, const std::string& key, const std::string& value) override;
  void RemoveMetadata(const ImageRef& ref, const std::string& key) override;

  std::vector<TrashEntry> ListTrash() override;
  bool PurgeTrash(const TrashEntry& entry) override;

  std::unique_ptr<Lock> AcquireLock(const std::string& key,
                                    std::chrono::milliseconds timeout) override;
  // `.tmp-*` regular files in the root's own folders (never through a symlink) whose
  // writer's flock is free (local_temporaries.cpp).
  using Backend::SweepTemporaries;
  std::vector<Leftover> SweepTemporaries(bool dry_run, SweepLooks* looks) override;
  std::vector<std::string> ListLocks() override;
  std::optional<std::filesystem::path> SharedLockDir() const override;
  // local_tables.cpp
  std::map<std::string, std::string> ReadTable(const std::string& table) override;
  std::optional<std::string> ReadTableValue(const std::string& table, const std::string& key) override;
  std::string TableStamp(const std::string& table) override;
  std::string PoolStamp(const std::string& pool) override;
  std::vector<std::string> UnreadableUsers() override;
  void WriteTable(const std::string& table, const std::map<std::string, std::string>& set,
                  const std::vector<std::string>& erase) override;

  SpaceInfo FreeSpace() override;  // local_space.cpp

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachemgr::storage
