// storage/rbd/rbd_error.h: the one place where a negative errno from librados/librbd
// becomes a cachemgr::Error.
#pragma once

#include <string_view>

#include "cachemgr/error.h"

namespace cachemgr::storage::rbd {

// The code a negative errno maps to (ENOENT -> kNotFound, EEXIST -> kAlreadyExists,
// EBUSY -> kBusy, ETIMEDOUT -> kTimeout, EACCES/EPERM -> kUnauthorized, else kBackend).
Errc ErrcFromErrno(int negative_errno);

// Whether an op of this process timed out (ETIMEDOUT thrown here) within the last
// minute: the cluster is not answering (Backend::Unresponsive).
bool TimedOutRecently();

// Throws "rbd <op> <what>: <strerror> (errno N)" with the mapped code; an ETIMEDOUT is
// remembered for TimedOutRecently.
[[noreturn]] void ThrowErrno(int negative_errno, std::string_view op, std::string_view what);

// Returns r when r >= 0, else throws as ThrowErrno does.
inline long long Check(long long r, std::string_view op, std::string_view what) {
  if (r < 0) ThrowErrno(static_cast<int>(r), op, what);
  return r;
}

}  // namespace cachemgr::storage::rbd
