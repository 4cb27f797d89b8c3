// storage/rbd/rbd_backend.h: the Backend on Ceph RBD (librbd/librados C API).
//
// The backend joins the process's client for its identity (rbd_connection.h: one per
// conf, client, keyring and timeouts, shared by every backend of the process); one ioctx
// per (pool, namespace), kept for the backend's life. The configured namespace applies
// to the configured pool only: any other pool (Glance's "images", the parent of a direct clone) is read in its default
// namespace. Writers, readers and locks hold a reference to their pool context, so they
// stay valid even if they outlive the backend object.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cachemgr/options.h"
#include "storage/backend.h"
#include "storage/rbd/rbd_error.h"
#include "storage/rbd/rbd_handles.h"

namespace spdlog {
class logger;
}

namespace cachemgr::storage::rbd {

// Milliseconds since `start`, for the ms= field of log lines and messages.
inline long long MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

// An open ioctx and the cluster it belongs to. Members are declared cluster -> ioctx so
// the ioctx is destroyed first.
struct PoolCtx {
  std::shared_ptr<ClusterHandle> cluster;
  IoCtxHandle io;
  std::string pool;
  std::string ns;
  // "pool[/ns]/name": how messages name an image.
  std::string Where(const std::string& name) const;
};

class RbdBackend final : public Backend {
 public:
  // Connects; throws kTimeout (monitors unreachable within connect_timeout_s),
  // kUnauthorized (cephx refused the key), kNotFound (the pool does not exist) or
  // kConfig (unreadable conf or keyring, unknown feature name).
  RbdBackend(const RbdBackendOptions& options, std::shared_ptr<spdlog::logger> logger);
  ~RbdBackend() override;

  std::string kind() const override { return "rbd"; }
  std::string location() const override;
  std::string entry_pool() const override { return options_.pool; }
  std::string volume_pool() const override { return options_.pool; }
  std::string cluster_id() const override { return fsid_; }

  bool Exists(const ImageRef& ref) override;
  ImageInfo Stat(const ImageRef& ref) override;
  std::vector<std::string> List(const std::string& pool) override;
  std::map<std::string, std::string> ListIdentities(const std::string& pool) override;
  uint64_t AllocatedBytes(const ImageRef& ref) override;
  std::unique_ptr<ImageWriter> Create(const ImageRef& ref, uint64_t size) override;
  bool Adopt(const std::filesystem::path& raw_file, const ImageRef& ref) override;
  std::unique_ptr<ImageReader> Open(const ImageRef& ref,
                                    const std::optional<std::string>& snap) override;
  void Resize(const ImageRef& ref, uint64_t size) override;
  void Rename(const ImageRef& from, const std::string& to_name) override;
  std::string Identity(const ImageRef& ref) override;
  bool HasIdentity(const ImageRef& ref, const std::string& identity) override;
  bool NameTaken(const ImageRef& ref) override;
  size_t EvictWatchers(const ImageRef& ref) override;  // rbd_watchers.cpp
  size_t OtherWatchers(const ImageRef& ref) override;  // rbd_watchers.cpp
  bool RemoveDanglingName(const ImageRef& ref,
                          const std::string& identity) override;  // rbd_leftovers.cpp
  RemoveOutcome Remove(const ImageRef& ref) override;

  void CreateSnapshot(const SnapRef& snap) override;
  void ProtectSnapshot(const SnapRef& snap) override;
  void UnprotectSnapshot(const SnapRef& snap) override;
  void RemoveSnapshot(const SnapRef& snap) override;
  std::vector<SnapInfo> ListSnapshots(const ImageRef& ref) override;

  void Clone(const SnapRef& parent, const ImageRef& child) override;
  bool CloneInPlace(const SnapRef& parent, const ImageRef& staging, const ImageRef& child,
                    uint64_t size, const PublishFn& publish) override;
  void Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) override;
  void Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) override;
  void Flatten(const ImageRef& ref, const ProgressFn& progress) override;
  std::optional<SnapRef> Parent(const ImageRef& ref) override;
  uint32_t Depth(const ImageRef& ref) override;
  std::vector<ImageRef> Children(const SnapRef& snap) override;
  // rbd_diff.cpp
  uint64_t OwnBytes(const ImageRef& ref) override;
  bool FlattensInPlace() const override { return true; }  // rbd flatten is online

  std::map<std::string, std::string> GetMetadata(const ImageRef& ref) override;
  void SetMetadata(const ImageRef& ref, const std::string& key, const std::string& value) override;
  void RemoveMetadata(const ImageRef& ref, const std::string& key) override;

  // rbd_trash.cpp
  std::vector<TrashEntry> ListTrash() override;
  bool PurgeTrash(const TrashEntry& entry) override;

  std::unique_ptr<Lock> AcquireLock(const std::string& key,
                                    std::chrono::milliseconds timeout) override;
  std::vector<std::string> ListLocks() override;

  // rbd_tables.cpp
  std::map<std::string, std::string> ReadTable(const std::string& table) override;
  std::optional<std::string> ReadTableValue(const std::string& table, const std::string& key) override;
  // The versions of the pool's (namespace's) `rbd_directory` and `rbd_trash` objects
  // (rbd_tables.cpp).
  std::string PoolStamp(const std::string& pool) override;
  void WriteTable(const std::string& table, const std::map<std::string, std::string>& set,
                  const std::vector<std::string>& erase) override;

  SpaceInfo FreeSpace() override;  // rbd_space.cpp

  // rbd_migration.cpp
  bool CanImportInstantly() const override { return true; }
  bool Unresponsive() const override { return TimedOutRecently(); }
  void PrepareImport(const std::string& source_spec, const ImageRef& ref) override;
  ImportState ImportStatus(const ImageRef& ref) override;
  std::string ImportSource(const ImageRef& ref) override;
  void ExecuteImport(const ImageRef& ref, const ProgressFn& progress) override;
  void CommitImport(const ImageRef& ref) override;
  void AbortImport(const ImageRef& ref) override;

 private:
  // Construction steps.
  void Connect();
  void OpenConfiguredPool();
  // The ioctx of `pool` (the configured namespace applies when it is options_.pool).
  std::shared_ptr<PoolCtx> Pool(const std::string& pool);
  std::shared_ptr<PoolCtx> PoolNs(const std::string& pool, const std::string& ns);
  // The RADOS namespace of the lock objects: "<namespace>.cachemgr-locks".
  std::shared_ptr<PoolCtx> LockPool();
  ImageHandle OpenImage(const PoolCtx& pool, const std::string& name, bool read_only,
                        const char* snap = nullptr);
  ImageOptionsHandle NewImageOptions() const;
  // Grows the image at `name` to `size` once the image opened is the one whose id is `id`
  // (kAlreadyExists when the name holds another).
  void ResizeImageWithId(PoolCtx& pool, const std::string& name, const std::string& id,
                         uint64_t size);
  // Breaks the locks on `oid` whose holder (named in the cookie) was a process of this
  // host that is gone, so a crash does not block the image for the whole lease.
  // Returns whether one was broken.
  bool BreakDeadHolders(PoolCtx& pool, const std::string& oid);
  void CopyFrom(const ImageRef& source, const char* snap, const ImageRef& dest,
                const ProgressFn& progress);
  // Removes the user snapshots of an open image (unprotecting them first).
  void RemoveAllSnapshots(rbd_image_t image, const std::string& where);
  // rbd_migration.cpp: Remove of an image whose import is not committed.
  void RemoveImporting(const ImageRef& ref, bool has_children);
  // rbd_watchers.cpp: what keeps an image busy (its watchers, its lock owner), for errors.
  std::string DescribeBusy(const PoolCtx& pool, const std::string& name);

  RbdBackendOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  uint64_t features_ = 0;
  std::shared_ptr<ClusterHandle> cluster_;
  std::string fsid_;
  std::mutex mu_;  // guards pools_
  std::map<std::string, std::shared_ptr<PoolCtx>> pools_;
};

}  // namespace cachemgr::storage::rbd
