// fetch/workdir.h: the private working directory of one fill inside conversion.dir.
//
// conversion.dir may be shared (and writable by others): a name in it could be a symlink
// planted to redirect qemu-img's output. So every fill makes its own directory with
// mkdtemp (0700, named kWorkDirPrefix + 6 random characters), creates its files there
// with O_EXCL|O_NOFOLLOW, and holds a flock on kLockName inside it for its whole life.
// A fill killed with -9 leaves its directory; the lock is then free, which is how the
// eviction pass (SweepWorkDirs) and doctor (ListDeadWorkDirs) tell it from a live one.
// A fill killed between mkdtemp and writing its lock's mark leaves the directory empty,
// or holding only an empty lock file: such a directory (mode 0700, named like ours, of
// this user, nothing else in it) is swept too; it holds no byte of anyone's.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace spdlog {
class logger;
}

namespace cachemgr::fetch {

inline constexpr const char* kWorkDirPrefix = "cachemgr-fill.";
inline constexpr const char* kLockName = "fill.lock";
// What a fill writes into its lock file when it makes it (O_EXCL): only a directory whose
// lock carries it is the cache's to sweep.
inline constexpr const char* kLockMark = "cachemgr fill working directory\n";

// A directory that looks like a working dir but is not the cache's to remove, and why.
struct LeftAlone {
  std::filesystem::path path;
  std::string why;
};

class WorkDir {
 public:
  // Creates the directory in `parent` (made if missing) and takes its lock. kIo naming
  // the parent when it cannot. `log` (may be null) hears of a failed removal.
  WorkDir(const std::filesystem::path& parent, const std::string& image_id, spdlog::logger* log);
  // Removes the directory and everything in it; logs, never throws.
  ~WorkDir();
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // A path for a new file in the directory (not created).
  std::filesystem::path File(const std::string& name) const { return path_ / name; }

 private:
  void Cleanup() noexcept;

  std::filesystem::path path_;
  int dir_fd_ = -1;
  int lock_fd_ = -1;
  spdlog::logger* log_ = nullptr;
};

// Working directories in `parent` left by fills that are no longer running: named
// kWorkDirPrefix + 6 characters, a real directory (not a symlink) owned by this user,
// holding the lock file kLockName with kLockMark in it, and no fill holding that lock
// (or half-made, as above: empty, or holding only an empty lock, mode 0700).
// Anything else is not the cache's: a directory holding anything but a fill's names, or
// a lock without the mark that is not empty, is never listed here (see
// ListForeignWorkDirs), whatever its name or age. A directory whose own flock is held
// (a fill of this version at work) is never judged. Fills of versions before that flock
// do not hold it: in the instant between making their lock and locking it, a sweep of
// this version can take their directory for a half-made one (that fill then fails).
std::vector<std::filesystem::path> ListDeadWorkDirs(const std::filesystem::path& parent);

// Directories of this user named like working dirs that the cache did not make.
std::vector<LeftAlone> ListForeignWorkDirs(const std::filesystem::path& parent);

// Sweeps the dead working directories (each re-checked under its lock): unlinks only the
// names a fill makes (never recursing), then the lock and the directory when nothing
// else is left. Returns those removed (or that would be, with `dry_run`); the others,
// and the directories not made by the cache, go to `left_alone` (may be null), untouched.
std::vector<std::filesystem::path> SweepWorkDirs(const std::filesystem::path& parent, bool dry_run,
                                                 const std::shared_ptr<spdlog::logger>& logger,
                                                 std::vector<LeftAlone>* left_alone = nullptr);

}  // namespace cachemgr::fetch
