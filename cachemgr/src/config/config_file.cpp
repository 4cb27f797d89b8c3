// config/config_file.cpp: see config_file.h.
#include "config/config_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <system_error>

#include "cachemgr/config.h"
#include "cachemgr/error.h"
#include "util/unique_fd.h"

namespace cachemgr {
namespace config {
namespace {

namespace fs = std::filesystem;

std::string KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Folders that are never a cache's, exactly.
constexpr std::array<std::string_view, 20> kSystemFolders = {
    "/",      "/bin", "/boot", "/dev",  "/etc",  "/home", "/lib",  "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt",  "/proc", "/root", "/run",  "/sbin", "/srv",   "/sys",   "/tmp"};
// ... and more of them, exactly.
constexpr std::array<std::string_view, 8> kSystemFoldersToo = {
    "/usr", "/var", "/var/lib", "/var/tmp", "/var/cache", "/var/log", "/var/run", "/usr/local"};
// Trees that hold only the system's own files (or the kernel's views): nothing under
// them is a cache.
constexpr std::array<std::string_view, 11> kSystemTrees = {"/proc",  "/sys",   "/dev",   "/boot",
                                                           "/etc",   "/bin",   "/sbin",  "/lib",
                                                           "/lib32", "/lib64", "/libx32"};

bool Under(std::string_view path, std::string_view tree) {
  return path == tree || (path.size() > tree.size() && path.substr(0, tree.size()) == tree &&
                          path[tree.size()] == '/');
}

}  // namespace

std::string ReadConfigText(const fs::path& path) {
  const std::string name = "config file " + path.string();
  // O_NONBLOCK: opening a FIFO with no writer must not wait for one.
  const util::UniqueFd owned(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!owned) {
    const int e = errno;
    throw Error(Errc::kConfig, name + ": cannot read: " + std::strerror(e));
  }
  const int fd = owned.get();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    throw Error(Errc::kConfig, name + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    throw Error(Errc::kConfig, name + ": is " + KindOf(st.st_mode) +
                                   ", not a regular file; point --config at a YAML file");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxConfigBytes) {
    throw Error(Errc::kConfig, name + ": " + std::to_string(st.st_size) +
                                   " bytes, over the limit of " + std::to_string(kMaxConfigBytes) +
                                   " bytes for a config");
  }
  // The file may grow while it is read: read at most one byte over the limit.
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      const int e = errno;
      throw Error(Errc::kConfig, name + ": read failed: " + std::strerror(e));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      throw Error(Errc::kConfig, name + ": over the limit of " + std::to_string(kMaxConfigBytes) +
                                     " bytes for a config");
    }
  }
  return text;
}

void RefuseSystemFolder(const std::string& key, const fs::path& dir) {
  std::error_code ec;
  fs::path resolved = fs::weakly_canonical(fs::absolute(dir, ec), ec);
  if (ec) resolved = fs::absolute(dir).lexically_normal();
  std::string p = resolved.string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  bool system = false;
  for (auto f : kSystemFolders) system = system || p == f;
  for (auto f : kSystemFoldersToo) system = system || p == f;
  for (auto t : kSystemTrees) system = system || Under(p, t);
  system = system || (Under(p, "/usr") && !Under(p, "/usr/local"));  // merged /bin, /lib
  // A user's home folder itself (its files are the user's, not the cache's).
  if (Under(p, "/home") && p.find('/', 6) == std::string::npos) system = true;
  if (const char* home = std::getenv("HOME");
      home && *home && p == fs::path(home).lexically_normal().string()) {
    system = true;
  }
  if (system) {
    const std::string how = p == dir.string() ? "" : " (" + dir.string() + " resolves to it)";
    throw Error(Errc::kConfig, key + ": " + p + how +
                                   " is a system folder the cache must not write in; use a "
                                   "folder of its own, e.g. /var/lib/cachemgr");
  }
}

}  // namespace config

std::filesystem::path FindConfigFile(const std::string& explicit_path) {
  const char* env = std::getenv("CACHEMGR_CONFIG");
  const bool from_env = env != nullptr && *env != '\0';
  namespace fs = std::filesystem;
  fs::path chosen = !explicit_path.empty() ? fs::path(explicit_path)
                    : from_env             ? fs::path(env)
                                           : DefaultConfigPath();
  std::error_code ec;
  if (fs::exists(fs::symlink_status(chosen, ec)) && fs::exists(chosen, ec)) return chosen;
  const std::string missing = std::strerror(ENOENT);
  std::string looked;
  if (!explicit_path.empty()) {
    looked = "--config " + explicit_path + " (" + missing + ")";
  } else {
    looked = "--config (not given), $CACHEMGR_CONFIG ";
    looked += from_env ? std::string("= ") + env + " (" + missing + ")"
                       : "(not set), " + DefaultConfigPath().string() + " (" + missing + ")";
  }
  throw Error(Errc::kConfig, "no config file found; looked at: " + looked +
                                 ". Pass --config FILE or set $CACHEMGR_CONFIG "
                                 "(examples/cachemgr.yaml lists every key)");
}

}  // namespace cachemgr
