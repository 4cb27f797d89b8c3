// storage/local/local_temporaries.cpp: finding and removing the `.tmp-*` files that
// writers which died left under the root.
//
// Every temporary is made by MakeTemp (local_backend.cpp), which holds an flock on it
// until its name is gone. So a `.tmp-*` file whose flock can be taken has no writer: the
// sweep takes the lock, checks that the name still holds the inode it locked, and
// unlinks it while holding the lock. A writer that loses the race between mkostemp and
// its own flock sees its name gone and makes another.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "storage/local/local_backend.h"

namespace cachemgr::storage {
namespace {

constexpr std::string_view kTempPrefix = ".tmp-";

// Closes a descriptor on scope exit.
struct Closer {
  int fd = -1;
  ~Closer() {
    if (fd >= 0) ::close(fd);
  }
};

// Names in `dir` (opened without following a symlink at its last component).
std::vector<std::string> Names(int dir_fd) {
  std::vector<std::string> names;
  int dup_fd = ::dup(dir_fd);
  if (dup_fd < 0) return names;
  DIR* d = ::fdopendir(dup_fd);
  if (!d) {
    ::close(dup_fd);
    return names;
  }
  ::rewinddir(d);  // the duplicate shares the offset a previous listing left at the end
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

// Opens `name` in `parent` as a directory, never through a symlink; -1 if it is not one.
int OpenDirAt(int parent, const std::string& name) {
  return ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

// Looks at one `.tmp-*` name in `dir_fd`: a regular file whose lock is free is a leftover.
void SweepOne(int dir_fd, const std::string& dir_path, const std::string& name, bool dry_run,
              std::vector<Leftover>* out) {
  struct stat by_name {};
  if (::fstatat(dir_fd, name.c_str(), &by_name, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (!S_ISREG(by_name.st_mode)) return;  // symlinks, fifos, folders: not ours to touch
  Closer file{
      ::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)};
  if (file.fd < 0) return;
  struct stat by_fd {};
  if (::fstat(file.fd, &by_fd) != 0 || by_fd.st_dev != by_name.st_dev ||
      by_fd.st_ino != by_name.st_ino) {
    return;
  }
  if (::flock(file.fd, LOCK_EX | LOCK_NB) != 0) return;  // a live writer holds it
  // The name may have been replaced between the stat and the lock.
  struct stat again {};
  if (::fstatat(dir_fd, name.c_str(), &again, AT_SYMLINK_NOFOLLOW) != 0 ||
      again.st_dev != by_fd.st_dev || again.st_ino != by_fd.st_ino) {
    return;
  }
  Leftover l;
  l.path = dir_path + "/" + name;
  l.bytes = static_cast<uint64_t>(by_fd.st_blocks) * 512;
  if (!dry_run) l.removed = ::unlinkat(dir_fd, name.c_str(), 0) == 0;
  out->push_back(std::move(l));
}

void SweepDir(int dir_fd, const std::string& dir_path, bool dry_run, std::vector<Leftover>* out) {
  for (const auto& name : Names(dir_fd)) {
    if (name.compare(0, kTempPrefix.size(), kTempPrefix) == 0) {
      SweepOne(dir_fd, dir_path, name, dry_run, out);
    }
  }
}

}  // namespace

std::vector<Leftover> LocalBackend::SweepTemporaries(bool dry_run) {
  std::vector<Leftover> found;
  const std::string root = location();
  Closer root_fd{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (root_fd.fd < 0) return found;
  // The root's folders (pools, .tmp, .trash) and theirs (.meta, a trashed image's
  // folder): the only places MakeTemp is ever asked to write.
  for (const auto& name : Names(root_fd.fd)) {
    Closer dir{OpenDirAt(root_fd.fd, name)};
    if (dir.fd < 0) continue;
    const std::string dir_path = root + "/" + name;
    SweepDir(dir.fd, dir_path, dry_run, &found);
    for (const auto& sub_name : Names(dir.fd)) {
      Closer sub{OpenDirAt(dir.fd, sub_name)};
      if (sub.fd >= 0) SweepDir(sub.fd, dir_path + "/" + sub_name, dry_run, &found);
    }
  }
  return found;
}

}  // namespace cachemgr::storage
