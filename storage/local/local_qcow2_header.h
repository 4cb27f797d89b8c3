// storage/local/local_qcow2_header.h: what the local backend's scans read from a qcow2
// header, without running qemu-img (a scan of every volume must stay cheap).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace cachemgr::storage {

struct Qcow2Header {
  bool is_qcow2 = false;
  uint64_t size = 0;                             // virtual size, bytes
  std::optional<std::filesystem::path> backing;  // absolute, lexically normal
  // The name qemu opens: a relative name joined to the overlay's folder, `..` and
  // symlinks left for the kernel to resolve (lexically, `link/..` is not `link`'s parent).
  std::optional<std::filesystem::path> backing_as_opened;
  // A "file:" or "json:" name with a relative path: qemu opens it from its own working
  // directory, which no reader of the header knows. `backing` is then that relative path.
  bool backing_from_cwd = false;
  // The file could not be read (permissions, I/O): whether it names a backing file is
  // unknown.
  bool unreadable = false;
  int read_errno = 0;  // of an unreadable one
};

// The local file a backing name reaches: the name itself, the path after "file:", or the
// filename a "json:{...}" name gives; nullopt for other protocols (nbd:, http:, ...). A
// relative name stays relative (the header's reader joins it to the overlay's folder).
std::optional<std::string> LocalFileOfBackingName(const std::string& name);

// The magic, virtual size and backing file name of the file at `path`; is_qcow2 false
// when it cannot be read or is not qcow2.
Qcow2Header ReadQcow2Header(const std::filesystem::path& path);

}  // namespace cachemgr::storage
