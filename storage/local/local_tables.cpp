// Tables shared by the hosts of one local root (a `_base` root on an NFS export every
// host mounts): <root>/.state/<table>/<key> holds the key's value. A write lands by
// rename(2) over the key's file, which NFS makes atomic on the server; a reader sees the
// old value or the new one, never a mix. Files whose names start with '.' are a writer's
// temporaries (swept like every `.tmp-*` file of the root) and are not keys.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>

#include "cachemgr/error.h"
#include "storage/local/local_backend.h"
#include "storage/local/local_files.h"
#include "util/unique_fd.h"

namespace cachemgr::storage {

namespace fs = std::filesystem;

namespace {
constexpr size_t kMaxValue = 4096;

// The value of `key` in the table folder `dir_fd`: nullopt when there is none to act on.
std::optional<std::string> ReadValueAt(int dir_fd, const std::string& key) {
  // O_NOFOLLOW: a symlink is not a key.
  const util::UniqueFd file(
      ::openat(dir_fd, key.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (file.get() < 0) return std::nullopt;  // removed meanwhile, or not a file
  struct stat st {};
  // A value the backend wrote is a regular file with one name (renamed into place): a
  // hard link to a file elsewhere is not one.
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) return std::nullopt;
  // A value is written whole and renamed into place (WriteTable): one read that returns
  // fstat's size is the value (the table of last uses has a key per entry and is read on
  // every pass; no second read to see the end). A file that reads otherwise (edited in
  // place, a size an NFS client cached) is read to its end, as any other.
  if (st.st_size > static_cast<off_t>(kMaxValue)) return std::nullopt;  // not a value we wrote
  char buf[kMaxValue + 1];
  size_t got = 0;
  bool failed = false;
  while (got < sizeof buf) {
    const ssize_t n = ::read(file.get(), buf + got, sizeof buf - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) failed = true;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
    if (got == static_cast<size_t>(st.st_size)) break;
  }
  // Unreadable, cut short, or grown past 4 KiB meanwhile: not a value to act on.
  if (failed || got > kMaxValue || got < static_cast<size_t>(st.st_size)) return std::nullopt;
  return std::string(buf, got);
}

// A table's folder opened for reading its keys; an empty descriptor when there is no
// such table yet. O_NOFOLLOW: a table is a folder of the cache's own, never a link out of
// the root (RequireOwnFolder names what is there instead).
util::UniqueFd OpenTableFolder(const fs::path& dir) {
  util::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0 && errno == ENOENT) return fd;
  if (fd.get() < 0 && (errno == ELOOP || errno == ENOTDIR)) RequireOwnFolder(dir);
  if (fd.get() < 0) {
    throw Error(Errc::kIo, "table " + dir.string() + ": cannot open: " + std::strerror(errno));
  }
  return fd;
}

}  // namespace

std::map<std::string, std::string> LocalBackend::ReadTable(const std::string& table) {
  ValidateName("table", table);
  const fs::path dir = fs::path(location()) / ".state" / table;
  std::map<std::string, std::string> out;
  // readdir and openat, not a path walk and a stream per key: the table of last uses has
  // a key per entry and is read on every eviction pass.
  const util::UniqueFd fd = OpenTableFolder(dir);
  if (fd.get() < 0) return out;  // no such table yet
  const int err = ForEachName(fd.get(), [&](const char* name, unsigned char type) {
    if (type != DT_REG && type != DT_UNKNOWN) return;  // symlinks, folders
    // A key the cache could not have written (temporaries start with '.'): another's file.
    if (!IsValidName(name)) return;
    if (auto value = ReadValueAt(fd.get(), name)) out[name] = std::move(*value);
  });
  // Cut short, the table would lose keys that are there: callers forget what they miss.
  if (err != 0) {
    throw Error(Errc::kIo, "table " + dir.string() + ": cannot list: " + std::strerror(err));
  }
  return out;
}

std::optional<std::string> LocalBackend::ReadTableValue(const std::string& table,
                                                        const std::string& key) {
  ValidateName("table", table);
  ValidateName("table key", key);
  const fs::path dir = fs::path(location()) / ".state" / table;
  const util::UniqueFd fd = OpenTableFolder(dir);
  if (fd.get() < 0) return std::nullopt;  // no such table yet
  return ReadValueAt(fd.get(), key);
}

std::string LocalBackend::TableStamp(const std::string& table) {
  ValidateName("table", table);
  return SettledFolderStamp(fs::path(location()) / ".state" / table);
}

// A name made, removed or renamed in a folder changes the folder's times (POSIX), so the
// pool's set of images and of sidecars is as it was while both folders' stamps are. A
// link (or anything else not a folder) at either gives no stamp.
std::string LocalBackend::PoolStamp(const std::string& pool) {
  ValidateName("pool", pool);
  const fs::path dir = fs::path(location()) / pool;
  const std::string folder = SettledFolderStamp(dir);
  if (folder.empty()) return "";
  const std::string meta = SettledFolderStamp(dir / ".meta");
  if (meta.empty()) return "";
  return folder + "/" + meta;
}

void LocalBackend::WriteTable(const std::string& table,
                              const std::map<std::string, std::string>& set,
                              const std::vector<std::string>& erase) {
  ValidateName("table", table);
  if (set.empty() && erase.empty()) return;
  const fs::path dir = fs::path(location()) / ".state" / table;
  EnsureOwnFolder(dir);
  std::error_code ec;
  for (const auto& [key, value] : set) {
    ValidateName("table key", key);
    if (value.size() > kMaxValue) {
      throw Error(Errc::kInvalidArgument, "table " + table + " key " + key + ": value over 4 KiB");
    }
    WriteDurable(dir / key, value);
  }
  for (const auto& key : erase) {
    ValidateName("table key", key);
    fs::remove(dir / key, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      throw Error(Errc::kIo, "table " + dir.string() + ": cannot remove " + key + ": " +
                                 ec.message());
    }
  }
}

}  // namespace cachemgr::storage
