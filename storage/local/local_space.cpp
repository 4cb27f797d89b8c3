// The local backend's free space: the filesystem of the root, as statvfs tells it.
#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

#include "cachemgr/error.h"
#include "storage/local/local_backend.h"
#include "storage/local/local_impl.h"

namespace cachemgr::storage {

SpaceInfo LocalBackend::FreeSpace() {
  const auto base = impl_->root / entry_pool();
  struct statvfs vfs {};
  if (::statvfs(base.c_str(), &vfs) != 0) {
    const int err = errno;
    throw Error(Errc::kBackend, "local root " + impl_->root.string() +
                                    ": cannot read its free space (statvfs " + base.string() +
                                    "): " + std::strerror(err) +
                                    "; check that the root exists and is readable");
  }
  // f_bavail, not f_bfree: the blocks reserved for root are not ours to fill, and a
  // floor counted on them would let the cache take the last unprivileged byte.
  SpaceInfo info;
  info.total_bytes = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  info.avail_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  return info;
}

}  // namespace cachemgr::storage
