// util/file_identity.h: one version of a file, as a stat tells it.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

namespace cachemgr::util {

inline int64_t Nanoseconds(const struct timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// "dev:ino:size:mtime_ns:ctime_ns". Any write, truncation, replacement or `touch -d`
// back to an old mtime changes it (the kernel moves ctime on each and no one can set
// it), so two stats with the same identity saw the same bytes. Used for the file
// source's kept digests and for the hard-linked bases of the local backend.
inline std::string FileIdentity(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(Nanoseconds(st.st_mtim)) + ":" +
         std::to_string(Nanoseconds(st.st_ctim));
}

}  // namespace cachemgr::util
