#include "engine/floor_reservations.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "cachemgr/error.h"
#include "util/flock.h"
#include "util/hex.h"

namespace cachemgr::engine {

namespace {

namespace fs = std::filesystem;

std::string KeyName(const std::string& key) {
  return util::HexEncode({reinterpret_cast<const unsigned char*>(key.data()), key.size()});
}

// The reserved bytes, in decimal.
bool ReadRecord(int fd, uint64_t* bytes) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return false;
  unsigned long long b = 0;
  if (std::sscanf(buf, "%llu", &b) != 1) return false;
  *bytes = b;
  return true;
}

bool WriteRecord(int fd, uint64_t bytes) {
  const std::string text = std::to_string(bytes) + "\n";
  return ::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size());
}

// Makes the reservations' folder if missing; it must be a real folder (a symlink there
// would lead the removal of dead reservations out of it).
void RequireFolder(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode)) {
    throw Error(Errc::kIo, "free-space floor: " + dir.string() +
                               " is not a folder of the cache's own (a symlink, or something "
                               "else by that name); replace it with a real folder");
  }
}

// A reservation's name as Reserve makes it: <hex key>.<pid>.<8 hex digits>. Nothing else
// in the folder is read or removed.
bool IsReservationName(const std::string& name) {
  const auto a = name.find('.');
  const auto b = a == std::string::npos ? a : name.find('.', a + 1);
  if (a == 0 || a == std::string::npos || b == std::string::npos || b == a + 1) return false;
  const std::string key = name.substr(0, a);
  const std::string pid = name.substr(a + 1, b - a - 1);
  const std::string tail = name.substr(b + 1);
  return key.find_first_not_of("0123456789abcdef") == std::string::npos &&
         pid.find_first_not_of("0123456789") == std::string::npos && tail.size() == 8 &&
         tail.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

FloorReservations::Hold::~Hold() {
  if (!fd_) return;
  std::error_code ec;
  fs::remove(path_, ec);  // while still locked: no reader takes it for a dead one's
  fd_.Reset();            // the flock goes with the descriptor
}

util::UniqueFd FloorReservations::Decide(std::chrono::milliseconds timeout) const {
  RequireFolder(dir_);
  auto r = util::LockFile({dir_ / ".decide.lock", util::FlockMode::kExclusive, timeout});
  if (r.failure) {
    throw Error(r.failure->kind == util::LockFileFailure::Kind::kTimeout ? Errc::kBusy : Errc::kIo,
                "free-space floor: cannot lock " + (dir_ / ".decide.lock").string() + ": " +
                    (r.failure->kind == util::LockFileFailure::Kind::kTimeout
                         ? "another miss holds it (waited " + std::to_string(timeout.count()) +
                               " ms)"
                         : std::string(std::strerror(r.failure->error))) +
                    "; check the folder's permissions, or retry");
  }
  return std::move(r.fd);
}

uint64_t FloorReservations::Others(const std::string& key) const {
  const std::string mine = KeyName(key) + ".";
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!IsReservationName(name) || name.starts_with(mine)) continue;
    util::UniqueFd fd(::open(entry.path().c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (!fd) continue;
    uint64_t bytes = 0;
    const bool read = ReadRecord(fd.get(), &bytes);
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (read) total += bytes;  // held: a fill in progress
      continue;
    }
    fs::remove(entry.path(), ec);  // nobody holds it: its process died
  }
  return total;
}

FloorReservations::Hold FloorReservations::Reserve(const std::string& key, uint64_t bytes) const {
  std::error_code ec;
  RequireFolder(dir_);
  // Written and locked under a hidden name, then renamed into place: no reader ever sees
  // a file without its record and its lock.
  const std::string name = KeyName(key) + "." + std::to_string(::getpid()) + "." +
                           util::RandomHex(8);
  const fs::path tmp = dir_ / ("." + name);
  const fs::path path = dir_ / name;
  util::UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd || ::flock(fd.get(), LOCK_EX) != 0) {
    throw Error(Errc::kIo, "free-space floor: cannot make the reservation " + tmp.string() + ": " +
                               std::strerror(errno) + "; check the folder's permissions");
  }
  if (!WriteRecord(fd.get(), bytes)) {
    const int err = errno;
    fs::remove(tmp, ec);
    throw Error(Errc::kIo, "free-space floor: cannot write the reservation " + tmp.string() +
                               ": " + std::strerror(err) + "; check the folder's free space");
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(Errc::kIo, "free-space floor: cannot make the reservation " + path.string() +
                               ": " + ec.message() + "; check the folder's permissions");
  }
  return Hold(std::move(fd), path);
}

}  // namespace cachemgr::engine
