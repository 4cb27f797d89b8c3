// util/flock.h: the one flock(2) wait with a time limit in the project.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>

#include "util/unique_fd.h"

namespace cachemgr::util {

enum class FlockMode { kShared, kExclusive };

struct LockFileRequest {
  // The lock file; created (0644, never through a symlink) when missing.
  std::filesystem::path path;
  FlockMode mode = FlockMode::kExclusive;
  // How long to wait for another holder to let go. 0: one try.
  std::chrono::milliseconds timeout{0};
  // The polls back off from 2 ms to this; a shorter cap hands a freed lock over sooner
  // at the cost of more wake-ups.
  std::chrono::milliseconds max_pause{50};
};

// Why LockFile did not return a descriptor.
struct LockFileFailure {
  enum class Kind { kOpen, kLock, kTimeout } kind;
  int error = 0;  // errno for kOpen and kLock
};

// Opens the lock file and takes flock on it within the request's timeout. A holder may
// discard its lock file (unlink it while held): a lock taken on a file no longer at the
// path excludes nobody, so the file at the path is opened and locked again. Returns the
// locked descriptor (the lock lasts while it is open), or the failure: the caller words
// the error, since it knows what the lock guards.
struct LockFileResult {
  UniqueFd fd;
  std::optional<LockFileFailure> failure;
};
LockFileResult LockFile(const LockFileRequest& request);

// Unlinks the lock file held open at `fd` from `path` (a holder's discard), but only when
// it is one LockFile made: a regular, empty file with no other name, still the one at
// `path`. Anything else there (a file with content, a FIFO, a hard link to a file
// elsewhere, a file put in its place) is not the cache's to remove: false, and it stays.
bool DiscardLockFile(int fd, const std::filesystem::path& path);

}  // namespace cachemgr::util
