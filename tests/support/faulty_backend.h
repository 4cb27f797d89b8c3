// tests/support/faulty_backend.h: a Backend that wraps another and fails on request.
//
// Like leveldb's fault-injection Env: every verb is forwarded to the wrapped backend
// unless a fault is armed for it, and then it throws Error(kBackend) *instead of*
// calling through (the wrapped backend is left as the failed call found it), except for
// writer faults, which fail mid-stream as a full disk or a lost OSD would.
// Thread-safe: the engine may call it from several threads.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "storage/backend.h"

namespace cachemgr::test {

enum class Verb {
  kExists,
  kStat,
  kList,
  kAllocatedBytes,
  kCreate,
  kAppend,
  kFinish,
  kAdopt,
  kOpen,
  kRead,
  kResize,
  kRename,
  kRemove,
  kCreateSnapshot,
  kProtectSnapshot,
  kUnprotectSnapshot,
  kRemoveSnapshot,
  kListSnapshots,
  kClone,
  kCopy,
  kFlatten,
  kParent,
  kDepth,
  kChildren,
  kGetMetadata,
  kSetMetadata,
  kRemoveMetadata,
  kListTrash,
  kPurgeTrash,
  kAcquireLock,
  kIdentity,
  kRequireIntact,
  kListIdentities,
  kEvictWatchers,
  kRemoveDanglingName,
  kSweepTemporaries,
  kListLocks,
  kReadTable,
  kWriteTable,
  kOwnBytes,  // the pinned flatten's measure
  kCloneInPlace,
  kCount_
};

const char* VerbName(Verb verb);

class FaultyBackend final : public storage::Backend {
 public:
  explicit FaultyBackend(std::unique_ptr<storage::Backend> inner);

  // The `n`th call of `verb` from now (1 = the next one) fails; 0 disarms.
  void FailNthCall(Verb verb, uint64_t n);
  // Every call of `verb` from now fails, until Clear().
  void FailAlways(Verb verb);
  // Writers made from now on fail the Append that would take them past `bytes` bytes
  // (the bytes before it are written); UINT64_MAX disarms.
  void FailWritesAfter(uint64_t bytes);
  // Runs `hook` after every Identity call that returned, with what it returned (another
  // host acting between two reads of the engine); an empty hook removes it. The hook runs
  // outside the backend's lock and may call the wrapped backend.
  void AfterIdentity(
      std::function<void(const storage::ImageRef& ref, const std::string& identity)> hook);
  // Runs `hook` after every Clone that returned (another process acting between the clone
  // and what the engine does next); an empty hook removes it. Runs as AfterIdentity's.
  void AfterClone(std::function<void(const storage::SnapRef& parent, const storage::ImageRef& child)>
                      hook);
  // Disarms every fault (call counts are kept).
  void Clear();
  // Calls of `verb` seen so far (failed ones included).
  uint64_t calls(Verb verb) const;
  // Faults thrown so far.
  uint64_t faults() const;
  storage::Backend& inner() { return *inner_; }

  std::string kind() const override { return inner_->kind(); }
  std::string location() const override { return inner_->location(); }
  std::string entry_pool() const override { return inner_->entry_pool(); }
  std::string volume_pool() const override { return inner_->volume_pool(); }
  std::string cluster_id() const override { return inner_->cluster_id(); }

  bool Exists(const storage::ImageRef& ref) override;
  bool NameTaken(const storage::ImageRef& ref) override;  // counted and failed as Exists
  bool CheapClone() const override { return inner_->CheapClone(); }
  storage::ImageInfo Stat(const storage::ImageRef& ref) override;
  std::vector<std::string> List(const std::string& pool) override;
  uint64_t AllocatedBytes(const storage::ImageRef& ref) override;
  std::unique_ptr<storage::ImageWriter> Create(const storage::ImageRef& ref,
                                               uint64_t size) override;
  bool Adopt(const std::filesystem::path& raw_file, const storage::ImageRef& ref) override;
  bool AdoptShared(const std::filesystem::path& file, const storage::ImageRef& ref) override;
  void RequireIntact(const storage::ImageRef& ref) override;
  std::unique_ptr<storage::ImageReader> Open(const storage::ImageRef& ref,
                                             const std::optional<std::string>& snap) override;
  void Resize(const storage::ImageRef& ref, uint64_t size) override;
  void Rename(const storage::ImageRef& from, const std::string& to_name) override;
  std::string Identity(const storage::ImageRef& ref) override;
  size_t EvictWatchers(const storage::ImageRef& ref) override;
  bool RemoveDanglingName(const storage::ImageRef& ref, const std::string& identity) override;
  storage::RemoveOutcome Remove(const storage::ImageRef& ref) override;
  void CreateSnapshot(const storage::SnapRef& snap) override;
  void ProtectSnapshot(const storage::SnapRef& snap) override;
  void UnprotectSnapshot(const storage::SnapRef& snap) override;
  void RemoveSnapshot(const storage::SnapRef& snap) override;
  std::vector<storage::SnapInfo> ListSnapshots(const storage::ImageRef& ref) override;
  void Clone(const storage::SnapRef& parent, const storage::ImageRef& child) override;
  // The AfterClone hook runs inside `publish`, once the clone exists and before the
  // engine's own part (another process acting between the clone and what follows).
  bool CloneInPlace(const storage::SnapRef& parent, const storage::ImageRef& staging,
                    const storage::ImageRef& child, uint64_t size,
                    const PublishFn& publish) override;
  void Copy(const storage::SnapRef& source, const storage::ImageRef& dest,
            const storage::ProgressFn& progress) override;
  void Copy(const storage::ImageRef& source, const storage::ImageRef& dest,
            const storage::ProgressFn& progress) override;
  void Flatten(const storage::ImageRef& ref, const storage::ProgressFn& progress) override;
  std::optional<storage::SnapRef> Parent(const storage::ImageRef& ref) override;
  uint32_t Depth(const storage::ImageRef& ref) override;
  std::vector<storage::ImageRef> Children(const storage::SnapRef& snap) override;
  uint64_t OwnBytes(const storage::ImageRef& ref) override;
  bool FlattensInPlace() const override { return inner_->FlattensInPlace(); }
  std::map<std::string, std::string> GetMetadata(const storage::ImageRef& ref) override;
  void SetMetadata(const storage::ImageRef& ref, const std::string& key,
                   const std::string& value) override;
  void RemoveMetadata(const storage::ImageRef& ref, const std::string& key) override;
  std::vector<storage::TrashEntry> ListTrash() override;
  bool PurgeTrash(const storage::TrashEntry& entry) override;
  std::unique_ptr<storage::Lock> AcquireLock(const std::string& key,
                                             std::chrono::milliseconds timeout) override;
  using storage::Backend::SweepTemporaries;
  std::vector<storage::Leftover> SweepTemporaries(bool dry_run, storage::SweepLooks* looks) override;
  std::vector<std::string> ListLocks() override;
  std::optional<std::filesystem::path> SharedLockDir() const override {
    return inner_->SharedLockDir();
  }
  std::map<std::string, std::string> ListIdentities(const std::string& pool) override;
  std::map<std::string, std::string> ReadTable(const std::string& table) override;
  std::optional<std::string> ReadTableValue(const std::string& table, const std::string& key) override;
  void WriteTable(const std::string& table, const std::map<std::string, std::string>& set,
                  const std::vector<std::string>& erase) override;
  // Passed through: read only (the reconcile then skips a table it merged already).
  std::string TableStamp(const std::string& table) override { return inner_->TableStamp(table); }
  std::string PoolStamp(const std::string& pool) override { return inner_->PoolStamp(pool); }
  // Passed through: read only, and called only when a free-space floor is configured.
  storage::SpaceInfo FreeSpace() override { return inner_->FreeSpace(); }
  bool CanImportInstantly() const override { return inner_->CanImportInstantly(); }
  bool Unresponsive() const override { return inner_->Unresponsive(); }
  void PrepareImport(const std::string& spec, const storage::ImageRef& ref) override {
    inner_->PrepareImport(spec, ref);
  }
  ImportState ImportStatus(const storage::ImageRef& ref) override {
    return inner_->ImportStatus(ref);
  }
  std::string ImportSource(const storage::ImageRef& ref) override {
    return inner_->ImportSource(ref);
  }
  void ExecuteImport(const storage::ImageRef& ref, const storage::ProgressFn& progress) override {
    inner_->ExecuteImport(ref, progress);
  }
  void CommitImport(const storage::ImageRef& ref) override { inner_->CommitImport(ref); }
  void AbortImport(const storage::ImageRef& ref) override { inner_->AbortImport(ref); }

  // Counts the call and throws if a fault is armed for it (used by the writer and reader
  // wrappers too).
  void Hit(Verb verb, const std::string& what);

 private:
  struct Arm {
    uint64_t calls = 0;
    uint64_t fail_at = 0;  // absolute call number that fails; 0: none
    bool always = false;
  };
  std::unique_ptr<storage::Backend> inner_;
  mutable std::mutex mu_;
  std::array<Arm, static_cast<size_t>(Verb::kCount_)> arms_{};
  uint64_t write_limit_ = UINT64_MAX;
  uint64_t faults_ = 0;
  std::function<void(const storage::ImageRef&, const std::string&)> after_identity_;
  std::function<void(const storage::SnapRef&, const storage::ImageRef&)> after_clone_;
};

}  // namespace cachemgr::test
