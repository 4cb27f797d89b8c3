// cachemgr/error.h: the one exception type the library throws.
//
// Every failure is an Error carrying a code and a message that names the thing and
// the cause ("image 3f2c...: checksum mismatch: source md5 ab12..., got 9e0f...").
// A cache miss is not an error. Only the command-line tool maps codes to exit codes.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "cachemgr/export.h"

namespace cachemgr {

enum class Errc {
  kInvalidArgument,  // a caller's argument is malformed (a hostile image id, a bad size)
  kConfig,           // the configuration is invalid; the message names the key path
  kNotFound,         // an image, entry, volume or pool does not exist
  kAlreadyExists,    // a name is taken
  kCorrupt,          // integrity: checksum mismatch, truncated data, a damaged index
  kRefused,          // format safety: the image is of a kind that is never let in
  kBusy,             // another process or host holds the lock
  kBackend,          // the storage backend (librbd/librados, the filesystem) failed
  kSource,           // the image source (Glance, the image directory) failed
  kUnauthorized,     // the source refused our credentials (401/403), or cephx did
  kTimeout,          // an operation did not finish within its configured time
  kIo,               // a local file operation failed
  kInternal,         // a bug: an invariant did not hold
};

// Short stable name of a code ("not_found"), used in JSON output and logs.
CACHEMGR_EXPORT std::string_view ErrcName(Errc code) noexcept;

class CACHEMGR_EXPORT Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

}  // namespace cachemgr
