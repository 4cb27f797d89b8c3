// storage/local/local_files.h: file and descriptor helpers the local backend's files share.
// Every failure is an Error naming the file (kNotFound for ENOENT, else kBackend).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>

#include "cachemgr/error.h"
#include "storage/backend.h"
#include "util/unique_fd.h"

namespace cachemgr::storage {

using util::UniqueFd;

[[noreturn]] void Fail(Errc code, const std::string& message);
std::string Errno(int e);
// "<what> <path>: <strerror(e)>".
[[noreturn]] void FailErrno(const std::string& what, const std::filesystem::path& path, int e);
// "pool/name", how messages name an image.
std::string RefName(const ImageRef& ref);

UniqueFd OpenOrFail(const std::filesystem::path& path, int flags, mode_t mode = 0);
void FsyncFd(int fd, const std::filesystem::path& path);
void FsyncDir(const std::filesystem::path& dir);
void PwriteAll(int fd, const char* data, size_t n, uint64_t offset,
               const std::filesystem::path& path);
bool IsRegularFile(const std::filesystem::path& path);

// Makes the folder `dir` of the cache's own (and its parents) if missing, and requires it
// to be a real folder: a symlink there (or anything else by its name) would lead the
// cache's writes and removals out of the root. kBackend naming it otherwise.
void EnsureOwnFolder(const std::filesystem::path& dir);
// The same check without making it: kNotFound when it is missing.
void RequireOwnFolder(const std::filesystem::path& dir);

// A new file in `dir` under a name no image can have (images never start with '.'),
// locked (flock) for as long as the returned descriptor is open: a `.tmp-*` file whose
// lock is free belongs to a writer that died, and SweepTemporaries removes it. Keep the
// descriptor open until the temporary name is gone (published or unlinked).
std::pair<std::filesystem::path, UniqueFd> MakeTemp(const std::filesystem::path& dir,
                                                    const std::string& stem);

// The same under the one name `.tmp-<stem>-<tag>` (`tag`: six letters or digits), for a
// temporary its maker finds again by its stem alone after a crash: `stem` must be a name
// no other writer uses at once (kBackend when the name is taken).
std::pair<std::filesystem::path, UniqueFd> MakeTempNamed(const std::filesystem::path& dir,
                                                         const std::string& stem,
                                                         const std::string& tag);

// Opens the regular file `name` (relative to `dir_fd`, or a path with AT_FDCWD) to take
// its flock: for writing when it may be (NFS emulates flock with a whole-file byte-range
// lock, and takes an exclusive one only on a file open for writing), else for reading
// (enough on a local filesystem). Never opens a symlink, FIFO, device or folder: -1 then,
// errno ENOENT when nothing is there, EINVAL for anything but a regular file, ESTALE when
// the name changed while it was opened.
int OpenRegularToLock(int dir_fd, const char* name);

// Whether the name `path` (not followed) is the file open as `fd`.
bool NameHolds(const std::filesystem::path& path, int fd);

// Removes the name `path` only while it holds the file open as `fd`: a writer's clean-up
// of its temporary never removes what someone else put at that name meanwhile.
void UnlinkIfHolds(const std::filesystem::path& path, int fd);

// Writes `content` to `path` durably: a locked `.tmp-*` file in the same folder (a sweep
// removes it if the writer dies), fsync, rename over `path`, fsync of the folder.
void WriteDurable(const std::filesystem::path& path, const std::string& content);

// A folder's device, inode and times as one string; "" when it is not a folder (a link
// is not followed) or when its times are within 2 s of now: a change within the times'
// granularity of the last one may leave them as they are, so a stamp is given only once
// they are older than that. A name made, removed or renamed in the folder changes it.
std::string SettledFolderStamp(const std::filesystem::path& dir);

// Calls `fn(name, type)` for each name in the open folder `dir_fd` but "." and "..",
// `type` being readdir's d_type (DT_UNKNOWN where the filesystem does not tell), from the
// folder's start whatever listing the descriptor served before. Returns 0, or the errno
// that stopped the listing: one that is cut short part of the way is not the folder, and
// a caller that takes what is missing for gone must not go on with it.
int ForEachName(int dir_fd, const std::function<void(const char* name, unsigned char type)>& fn);

}  // namespace cachemgr::storage
