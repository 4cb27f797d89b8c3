// storage/local/local_root.cpp: see local_root.h.
#include "storage/local/local_root.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <system_error>

#include "cachemgr/error.h"

namespace cachemgr::storage {
namespace {

namespace fs = std::filesystem;

const std::string kKey = "backend.local.root";

[[noreturn]] void Refuse(const fs::path& root, const std::string& why, const std::string& fix) {
  throw Error(Errc::kConfig, kKey + ": " + root.string() + " " + why + "; " + fix);
}

void WriteMarker(const fs::path& root) {
  const fs::path marker = root / kRootMarker;
  int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return;  // another process marked it first
    const int e = errno;
    Refuse(root, std::string("cannot be marked as a cache root: ") + std::strerror(e),
           "make it writable by this user");
  }
  static const char kText[] =
      "This folder is a cachemgr cache root (backend.local.root). The cache creates and\n"
      "removes files under it; do not keep anything else here.\n";
  ssize_t w = ::write(fd, kText, sizeof kText - 1);
  ::fsync(fd);
  ::close(fd);
  if (w != static_cast<ssize_t>(sizeof kText - 1)) {
    Refuse(root, "cannot be marked as a cache root (short write)", "check free space");
  }
  int dir = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

// A root made before roots were marked: only the cache's own folders, and the layout's
// _base/.meta among them.
bool IsUnmarkedCacheRoot(const fs::path& root) {
  static const std::set<std::string> kOwn = {"_base",    "volumes", ".trash", ".state",
                                             ".backing", ".locks",  ".tmp"};
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (!kOwn.count(name) || e.is_symlink() || !e.is_directory()) return false;
  }
  if (ec) return false;
  auto meta = fs::symlink_status(root / "_base" / ".meta", ec);
  return !ec && fs::is_directory(meta);
}

}  // namespace

void ClaimLocalRoot(const fs::path& root) {
  std::error_code ec;
  auto st = fs::symlink_status(root, ec);
  if (!fs::exists(st)) {
    fs::create_directories(root, ec);
    if (ec) Refuse(root, "cannot be created: " + ec.message(), "create it or fix its parent");
    WriteMarker(root);
    return;
  }
  if (!fs::is_directory(root, ec)) {
    Refuse(root, "is not a folder", "point backend.local.root at a folder of its own");
  }
  if (fs::exists(fs::symlink_status(root / kRootMarker, ec))) {
    if (!fs::is_regular_file(fs::symlink_status(root / kRootMarker, ec))) {
      Refuse(root, std::string("holds a ") + kRootMarker + " that is not a regular file",
             "remove it if this folder is the cache's");
    }
    return;
  }
  // A new filesystem's lost+found does not make a folder someone's.
  bool empty = true;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    empty = empty && e.path().filename() == "lost+found";
  }
  if (ec) Refuse(root, "cannot be read: " + ec.message(), "make it readable by this user");
  if (empty || IsUnmarkedCacheRoot(root)) {
    WriteMarker(root);
    return;
  }
  Refuse(root,
         std::string("is not empty and holds no ") + kRootMarker +
             " marker: it is not a cache root, and the cache would create and remove files "
             "in it",
         "point backend.local.root at a new or empty folder (if this folder really is the "
         "cache's, create the file " +
             (root / kRootMarker).string() + ")");
}

}  // namespace cachemgr::storage
