// tests/support/faulty_backend.cpp
#include "support/faulty_backend.h"

#include "cachemgr/error.h"

namespace cachemgr::test {

using namespace storage;

const char* VerbName(Verb verb) {
  static const char* kNames[] = {"Exists",
                                 "Stat",
                                 "List",
                                 "AllocatedBytes",
                                 "Create",
                                 "Append",
                                 "Finish",
                                 "Adopt",
                                 "Open",
                                 "Read",
                                 "Resize",
                                 "Rename",
                                 "Remove",
                                 "CreateSnapshot",
                                 "ProtectSnapshot",
                                 "UnprotectSnapshot",
                                 "RemoveSnapshot",
                                 "ListSnapshots",
                                 "Clone",
                                 "Copy",
                                 "Flatten",
                                 "Parent",
                                 "Depth",
                                 "Children",
                                 "GetMetadata",
                                 "SetMetadata",
                                 "RemoveMetadata",
                                 "ListTrash",
                                 "PurgeTrash",
                                 "AcquireLock",
                                 "Identity",
                                 "RequireIntact",
                                 "ListIdentities",
                                 "EvictWatchers",
                                 "RemoveDanglingName",
                                 "SweepTemporaries",
                                 "ListLocks",
                                 "ReadTable",
                                 "WriteTable",
                                 "OwnBytes",
                                 "CloneInPlace"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(Verb::kCount_));
  return kNames[static_cast<size_t>(verb)];
}

namespace {

class FaultyWriter final : public ImageWriter {
 public:
  FaultyWriter(FaultyBackend& owner, std::unique_ptr<ImageWriter> inner, std::string what,
               uint64_t limit)
      : owner_(owner), inner_(std::move(inner)), what_(std::move(what)), limit_(limit) {}

  void Append(std::span<const std::byte> data) override {
    owner_.Hit(Verb::kAppend, what_);
    if (limit_ != UINT64_MAX && appended_ + data.size() > limit_) {
      // Write what fits, then fail: the image is half-written when the error arrives.
      size_t fits = static_cast<size_t>(limit_ - appended_);
      if (fits > 0) inner_->Append(data.first(fits));
      appended_ += fits;
      owner_.Hit(Verb::kCount_, what_);  // counts the fault
    }
    inner_->Append(data);
    appended_ += data.size();
  }
  ImportStats Finish() override {
    owner_.Hit(Verb::kFinish, what_);
    return inner_->Finish();
  }

 private:
  FaultyBackend& owner_;
  std::unique_ptr<ImageWriter> inner_;
  std::string what_;
  uint64_t limit_;
  uint64_t appended_ = 0;
};

class FaultyReader final : public ImageReader {
 public:
  FaultyReader(FaultyBackend& owner, std::unique_ptr<ImageReader> inner, std::string what)
      : owner_(owner), inner_(std::move(inner)), what_(std::move(what)) {}
  uint64_t size() const override { return inner_->size(); }
  size_t Read(uint64_t offset, std::span<std::byte> out) override {
    owner_.Hit(Verb::kRead, what_);
    return inner_->Read(offset, out);
  }

 private:
  FaultyBackend& owner_;
  std::unique_ptr<ImageReader> inner_;
  std::string what_;
};

std::string Name(const ImageRef& ref) { return ref.pool + "/" + ref.name; }
std::string Name(const SnapRef& snap) { return Name(snap.image) + "@" + snap.snap; }

}  // namespace

FaultyBackend::FaultyBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

void FaultyBackend::FailNthCall(Verb verb, uint64_t n) {
  std::lock_guard lock(mu_);
  auto& arm = arms_[static_cast<size_t>(verb)];
  arm.fail_at = n == 0 ? 0 : arm.calls + n;
}

void FaultyBackend::FailAlways(Verb verb) {
  std::lock_guard lock(mu_);
  arms_[static_cast<size_t>(verb)].always = true;
}

void FaultyBackend::FailWritesAfter(uint64_t bytes) {
  std::lock_guard lock(mu_);
  write_limit_ = bytes;
}

void FaultyBackend::Clear() {
  std::lock_guard lock(mu_);
  for (auto& arm : arms_) {
    arm.fail_at = 0;
    arm.always = false;
  }
  write_limit_ = UINT64_MAX;
}

uint64_t FaultyBackend::calls(Verb verb) const {
  std::lock_guard lock(mu_);
  return arms_[static_cast<size_t>(verb)].calls;
}

uint64_t FaultyBackend::faults() const {
  std::lock_guard lock(mu_);
  return faults_;
}

void FaultyBackend::Hit(Verb verb, const std::string& what) {
  std::string message;
  {
    std::lock_guard lock(mu_);
    if (verb == Verb::kCount_) {  // a writer's byte limit was reached
      ++faults_;
      message = "injected fault: write to " + what + " past the byte limit";
    } else {
      auto& arm = arms_[static_cast<size_t>(verb)];
      ++arm.calls;
      if (!arm.always && arm.calls != arm.fail_at) return;
      ++faults_;
      message = std::string("injected fault: ") + VerbName(verb) + " call #" +
                std::to_string(arm.calls) + " on " + what;
    }
  }
  throw Error(Errc::kBackend, message);
}

bool FaultyBackend::Exists(const ImageRef& ref) {
  Hit(Verb::kExists, Name(ref));
  return inner_->Exists(ref);
}
bool FaultyBackend::NameTaken(const ImageRef& ref) {
  Hit(Verb::kExists, Name(ref));
  return inner_->NameTaken(ref);
}
ImageInfo FaultyBackend::Stat(const ImageRef& ref) {
  Hit(Verb::kStat, Name(ref));
  return inner_->Stat(ref);
}
std::vector<std::string> FaultyBackend::List(const std::string& pool) {
  Hit(Verb::kList, pool);
  return inner_->List(pool);
}
uint64_t FaultyBackend::AllocatedBytes(const ImageRef& ref) {
  Hit(Verb::kAllocatedBytes, Name(ref));
  return inner_->AllocatedBytes(ref);
}
std::unique_ptr<ImageWriter> FaultyBackend::Create(const ImageRef& ref, uint64_t size) {
  Hit(Verb::kCreate, Name(ref));
  uint64_t limit;
  {
    std::lock_guard lock(mu_);
    limit = write_limit_;
  }
  return std::make_unique<FaultyWriter>(*this, inner_->Create(ref, size), Name(ref), limit);
}
bool FaultyBackend::Adopt(const std::filesystem::path& raw_file, const ImageRef& ref) {
  Hit(Verb::kAdopt, Name(ref));
  return inner_->Adopt(raw_file, ref);
}
bool FaultyBackend::AdoptShared(const std::filesystem::path& file, const ImageRef& ref) {
  Hit(Verb::kAdopt, Name(ref));
  return inner_->AdoptShared(file, ref);
}
void FaultyBackend::RequireIntact(const ImageRef& ref) {
  Hit(Verb::kRequireIntact, Name(ref));
  inner_->RequireIntact(ref);
}
std::unique_ptr<ImageReader> FaultyBackend::Open(const ImageRef& ref,
                                                 const std::optional<std::string>& snap) {
  Hit(Verb::kOpen, Name(ref));
  return std::make_unique<FaultyReader>(*this, inner_->Open(ref, snap), Name(ref));
}
void FaultyBackend::Resize(const ImageRef& ref, uint64_t size) {
  Hit(Verb::kResize, Name(ref));
  inner_->Resize(ref, size);
}
void FaultyBackend::Rename(const ImageRef& from, const std::string& to_name) {
  Hit(Verb::kRename, Name(from));
  inner_->Rename(from, to_name);
}
void FaultyBackend::AfterIdentity(
    std::function<void(const ImageRef& ref, const std::string& identity)> hook) {
  std::lock_guard lock(mu_);
  after_identity_ = std::move(hook);
}

std::string FaultyBackend::Identity(const ImageRef& ref) {
  Hit(Verb::kIdentity, Name(ref));
  auto identity = inner_->Identity(ref);
  std::function<void(const ImageRef&, const std::string&)> hook;
  {
    std::lock_guard lock(mu_);
    hook = after_identity_;
  }
  if (hook) hook(ref, identity);
  return identity;
}
RemoveOutcome FaultyBackend::Remove(const ImageRef& ref) {
  Hit(Verb::kRemove, Name(ref));
  return inner_->Remove(ref);
}
void FaultyBackend::CreateSnapshot(const SnapRef& snap) {
  Hit(Verb::kCreateSnapshot, Name(snap));
  inner_->CreateSnapshot(snap);
}
void FaultyBackend::ProtectSnapshot(const SnapRef& snap) {
  Hit(Verb::kProtectSnapshot, Name(snap));
  inner_->ProtectSnapshot(snap);
}
void FaultyBackend::UnprotectSnapshot(const SnapRef& snap) {
  Hit(Verb::kUnprotectSnapshot, Name(snap));
  inner_->UnprotectSnapshot(snap);
}
void FaultyBackend::RemoveSnapshot(const SnapRef& snap) {
  Hit(Verb::kRemoveSnapshot, Name(snap));
  inner_->RemoveSnapshot(snap);
}
std::vector<SnapInfo> FaultyBackend::ListSnapshots(const ImageRef& ref) {
  Hit(Verb::kListSnapshots, Name(ref));
  return inner_->ListSnapshots(ref);
}
void FaultyBackend::AfterClone(std::function<void(const SnapRef&, const ImageRef&)> hook) {
  std::lock_guard lock(mu_);
  after_clone_ = std::move(hook);
}
void FaultyBackend::Clone(const SnapRef& parent, const ImageRef& child) {
  Hit(Verb::kClone, Name(child));
  inner_->Clone(parent, child);
  std::function<void(const SnapRef&, const ImageRef&)> hook;
  {
    std::lock_guard lock(mu_);
    hook = after_clone_;
  }
  if (hook) hook(parent, child);
}
bool FaultyBackend::CloneInPlace(const SnapRef& parent, const ImageRef& staging,
                                 const ImageRef& child, uint64_t size,
                                 const PublishFn& publish) {
  Hit(Verb::kCloneInPlace, Name(child));
  return inner_->CloneInPlace(parent, staging, child, size, [&](const std::string& identity) {
    std::function<void(const SnapRef&, const ImageRef&)> hook;
    {
      std::lock_guard lock(mu_);
      hook = after_clone_;
    }
    if (hook) hook(parent, child);
    return publish(identity);
  });
}
void FaultyBackend::Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) {
  Hit(Verb::kCopy, Name(dest));
  inner_->Copy(source, dest, progress);
}
void FaultyBackend::Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) {
  Hit(Verb::kCopy, Name(dest));
  inner_->Copy(source, dest, progress);
}
void FaultyBackend::Flatten(const ImageRef& ref, const ProgressFn& progress) {
  Hit(Verb::kFlatten, Name(ref));
  inner_->Flatten(ref, progress);
}
std::optional<SnapRef> FaultyBackend::Parent(const ImageRef& ref) {
  Hit(Verb::kParent, Name(ref));
  return inner_->Parent(ref);
}
uint32_t FaultyBackend::Depth(const ImageRef& ref) {
  Hit(Verb::kDepth, Name(ref));
  return inner_->Depth(ref);
}
std::vector<ImageRef> FaultyBackend::Children(const SnapRef& snap) {
  Hit(Verb::kChildren, Name(snap));
  return inner_->Children(snap);
}
uint64_t FaultyBackend::OwnBytes(const ImageRef& ref) {
  Hit(Verb::kOwnBytes, Name(ref));
  return inner_->OwnBytes(ref);
}
std::map<std::string, std::string> FaultyBackend::GetMetadata(const ImageRef& ref) {
  Hit(Verb::kGetMetadata, Name(ref));
  return inner_->GetMetadata(ref);
}
void FaultyBackend::SetMetadata(const ImageRef& ref, const std::string& key,
                                const std::string& value) {
  Hit(Verb::kSetMetadata, Name(ref));
  inner_->SetMetadata(ref, key, value);
}
void FaultyBackend::RemoveMetadata(const ImageRef& ref, const std::string& key) {
  Hit(Verb::kRemoveMetadata, Name(ref));
  inner_->RemoveMetadata(ref, key);
}
std::vector<TrashEntry> FaultyBackend::ListTrash() {
  Hit(Verb::kListTrash, "trash");
  return inner_->ListTrash();
}
bool FaultyBackend::PurgeTrash(const TrashEntry& entry) {
  Hit(Verb::kPurgeTrash, entry.id);
  return inner_->PurgeTrash(entry);
}
std::unique_ptr<Lock> FaultyBackend::AcquireLock(const std::string& key,
                                                 std::chrono::milliseconds timeout) {
  Hit(Verb::kAcquireLock, key);
  return inner_->AcquireLock(key, timeout);
}

size_t FaultyBackend::EvictWatchers(const ImageRef& ref) {
  Hit(Verb::kEvictWatchers, Name(ref));
  return inner_->EvictWatchers(ref);
}
bool FaultyBackend::RemoveDanglingName(const ImageRef& ref, const std::string& identity) {
  Hit(Verb::kRemoveDanglingName, Name(ref));
  return inner_->RemoveDanglingName(ref, identity);
}
std::vector<Leftover> FaultyBackend::SweepTemporaries(bool dry_run, storage::SweepLooks* looks) {
  Hit(Verb::kSweepTemporaries, "temporaries");
  return inner_->SweepTemporaries(dry_run, looks);
}
std::vector<std::string> FaultyBackend::ListLocks() {
  Hit(Verb::kListLocks, "locks");
  return inner_->ListLocks();
}
std::map<std::string, std::string> FaultyBackend::ListIdentities(const std::string& pool) {
  Hit(Verb::kListIdentities, pool);
  return inner_->ListIdentities(pool);
}
std::map<std::string, std::string> FaultyBackend::ReadTable(const std::string& table) {
  Hit(Verb::kReadTable, "table " + table);
  return inner_->ReadTable(table);
}
std::optional<std::string> FaultyBackend::ReadTableValue(const std::string& table,
                                                         const std::string& key) {
  Hit(Verb::kReadTable, "table " + table + " key " + key);
  return inner_->ReadTableValue(table, key);
}
void FaultyBackend::WriteTable(const std::string& table,
                               const std::map<std::string, std::string>& set,
                               const std::vector<std::string>& erase) {
  Hit(Verb::kWriteTable, "table " + table);
  inner_->WriteTable(table, set, erase);
}

}  // namespace cachemgr::test
