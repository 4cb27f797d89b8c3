// storage/local/local_adopt.cpp: taking a file in as an image without copying it: a
// hard link (Adopt), a reflink or a hard link of a file the cache does not own alone
// (AdoptShared), and the checks that keep such a shared base honest.
#include <fcntl.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "storage/local/local_impl.h"
#include "util/file_identity.h"
#include "util/hash.h"

namespace cachemgr::storage {

bool LocalBackend::Adopt(const fs::path& raw_file, const ImageRef& ref) {
  impl_->RequireFree(ref);
  if (!IsRegularFile(raw_file))
    Fail(Errc::kNotFound, "adopt " + raw_file.string() + ": not a regular file");
  impl_->EnsurePool(ref.pool);
  auto dest = PathOf(ref);
  const auto sidecar = impl_->SaveNew(ref, Sidecar{});
  if (::link(raw_file.c_str(), dest.c_str()) != 0) {
    int e = errno;
    impl_->DropNewSidecar(ref, sidecar.ino);
    if (e == EEXIST) Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
    // Another filesystem, a hard-link protection (fs.protected_hardlinks) or a link count
    // limit: the caller copies instead.
    if (e == EXDEV || e == EPERM || e == EMLINK || e == EACCES) {
      impl_->log->info("adopt falls back to a copy image={} file={} cause={}", RefName(ref),
                       raw_file.string(), Errno(e));
      return false;
    }
    FailErrno("cannot link " + raw_file.string() + " as", dest, e);
  }
  // The owner and mode apply to the shared inode: the hypervisor user must read it.
  UniqueFd fd = OpenOrFail(dest, O_RDONLY);
  impl_->ApplyOwnership(fd.get(), dest);
  FsyncDir(dest.parent_path());
  impl_->log->info("adopted image={} file={} bytes_copied=0", RefName(ref), raw_file.string());
  return true;
}

bool LocalBackend::AdoptShared(const fs::path& file, const ImageRef& ref) {
  impl_->RequireFree(ref);
  // /proc/self/fd/N reaches the caller's open file itself, whatever its name is now.
  UniqueFd src = OpenOrFail(file, O_RDONLY);
  struct stat st {};
  if (::fstat(src.get(), &st) != 0) FailErrno("cannot stat", file, errno);
  if (!S_ISREG(st.st_mode)) Fail(Errc::kRefused, "adopt " + file.string() + ": not a regular file");
  impl_->EnsurePool(ref.pool);
  if (impl_->AdoptByReflink(src.get(), file, ref)) return true;
  if (!impl_->options.hardlink_prefill) return false;
  return impl_->AdoptByHardLink(file, st, ref);
}

// A reflink: an inode of our own sharing extents copy-on-write; owner and mode apply
// to it alone. False when the filesystem cannot reflink `src_fd` here.
bool LocalBackend::Impl::AdoptByReflink(int src_fd, const fs::path& file, const ImageRef& ref) {
  auto [tmp, fd] = MakeTemp(PoolDir(ref.pool), ref.name);
  if (::ioctl(fd.get(), FICLONE, src_fd) == 0) {
    try {
      ApplyOwnership(fd.get(), tmp);
      FsyncFd(fd.get(), tmp);
      // Publish writes the sidecar, never over another image's, and drops the temporary.
      Publish(tmp, fd.get(), ref, Sidecar{});
    } catch (...) {
      UnlinkIfHolds(tmp, fd.get());
      throw;
    }
    log->info("adopted image={} file={} how=reflink bytes_copied=0", RefName(ref), file.string());
    return true;
  }
  UnlinkIfHolds(tmp, fd.get());
  return false;
}

// A hard link of `file` (whose stat is `st`), when the configured owner, group and mode
// are already the file's. False when the caller must copy instead.
bool LocalBackend::Impl::AdoptByHardLink(const fs::path& file, const struct stat& st,
                                         const ImageRef& ref) {
  const auto dest = PathOf(ref);
  // A hard link shares the inode: chown or chmod of the base would change the source.
  const bool owner_differs = (uid && *uid != st.st_uid) || (gid && *gid != st.st_gid) ||
                             (st.st_mode & 07777) != (options.mode & 07777);
  if (owner_differs) {
    log->info(
        "adopt copies: the configured owner/group/mode would change the shared file image={} "
        "file={}",
        RefName(ref), file.string());
    return false;
  }
  std::lock_guard lock(mu);
  // Never over the sidecar of an image that is there (see SaveNew).
  const auto new_sidecar = SaveNew(ref, Sidecar{});
  if (::linkat(AT_FDCWD, file.c_str(), AT_FDCWD, dest.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    int e = errno;
    DropNewSidecar(ref, new_sidecar.ino);
    if (e == EEXIST) Fail(Errc::kAlreadyExists, "image " + RefName(ref) + ": already exists");
    if (e == EXDEV || e == EPERM || e == EMLINK || e == EACCES || e == ENOENT) {
      log->info("adopt falls back to a copy image={} file={} cause={}", RefName(ref), file.string(),
                Errno(e));
      return false;
    }
    FailErrno("cannot link " + file.string() + " as", dest, e);
  }
  struct stat linked {};
  if (::stat(dest.c_str(), &linked) != 0 || linked.st_ino != st.st_ino) {
    ::unlink(dest.c_str());
    DropSidecar(ref);
    Fail(Errc::kCorrupt, "adopt " + file.string() + ": the linked file is not the one opened");
  }
  Sidecar s;
  // The bytes as adopted, so a later link-count change can be told from a rewrite.
  const auto [sha, hashed_as] = Impl::HashShared(dest);
  if (sha.empty() || hashed_as != Impl::SharedIdentity(linked)) {
    ::unlink(dest.c_str());
    DropSidecar(ref);
    Fail(Errc::kCorrupt, "adopt " + file.string() + ": the file changed while it was linked");
  }
  s.shared_sha256 = sha;
  s.shared_inode = Impl::SettledIdentity(linked);
  Save(ref, s);
  FsyncDir(dest.parent_path());
  log->info("adopted image={} file={} how=hardlink identity={} bytes_copied=0", RefName(ref),
            file.string(), s.shared_inode);
  return true;
}

void LocalBackend::RequireIntact(const ImageRef& ref) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  impl_->CheckShared(ref, s);
}

// A hard-linked base is only as good as the inode it shares: refused (kCorrupt) once its
// bytes, size or times differ from when it was adopted. A link added or dropped (the
// cache's own `.backing` name or rename, or anyone's `ln`) moves ctime with the link
// count, and so does a write with its mtime put back: when only ctime and the link
// count moved, the bytes are hashed and compared with those adopted, and the new
// identity is recorded only if they are the same.
void LocalBackend::Impl::CheckShared(const ImageRef& ref, Sidecar& s) {
  if (s.shared_inode.empty()) return;
  auto path = PathOf(ref);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
  const std::string now = SharedIdentity(st);
  if (now == s.shared_inode) return;
  if (util::OnlyLinksMoved(s.shared_inode, now) && !s.shared_sha256.empty()) {
    const auto [sha, read_from] = HashShared(path);
    if (sha == s.shared_sha256 && read_from == now) {
      s.shared_inode = SettledIdentity(st);
      Save(ref, s);
      return;
    }
  }
  // The engine records the image id in the entry's metadata (cachemgr.image_id).
  auto id = s.metadata.find("cachemgr.image_id");
  const std::string who = id != s.metadata.end() && !id->second.empty()
                              ? "image " + id->second + " (entry " + RefName(ref) + ")"
                              : "entry " + RefName(ref);
  Fail(Errc::kCorrupt,
       who +
           ": refused: it is a hard link of a file outside the cache "
           "(backend.local.hardlink_prefill) and that file changed since it was adopted "
           "(identity " +
           s.shared_inode + ", now " + now +
           "); remove the entry (cachemgr evict) so the image is fetched again");
}

// After a link of our own to or from a shared file (rename, `.backing`): its ctime moved
// for that alone, so the identity is recorded anew (checked just before).
void LocalBackend::Impl::Relinked(const ImageRef& ref, Sidecar& s) {
  if (s.shared_inode.empty()) return;
  auto path = PathOf(ref);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) FailErrno("cannot stat", path, errno);
  s.shared_inode = SettledIdentity(st);
  Save(ref, s);
}

std::string LocalBackend::Impl::SharedIdentity(const struct stat& st) {
  return util::FileIdentity(st);
}

// sha256 of the file at `path` and the identity it had while read ("" digest if it
// changed meanwhile: the caller then sees no match).
std::pair<std::string, std::string> LocalBackend::Impl::HashShared(const fs::path& path) {
  UniqueFd fd = OpenOrFail(path, O_RDONLY);
  struct stat before {};
  if (::fstat(fd.get(), &before) != 0) FailErrno("cannot stat", path, errno);
  util::Hasher sha("sha256");
  std::vector<char> buf(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FailErrno("cannot read", path, errno);
    if (n == 0) break;
    sha.Update(buf.data(), static_cast<size_t>(n));
  }
  struct stat after {};
  if (::fstat(fd.get(), &after) != 0) FailErrno("cannot stat", path, errno);
  const std::string id = SharedIdentity(before);
  if (SharedIdentity(after) != id) return {"", ""};
  return {sha.HexDigest(), id};
}

std::string LocalBackend::Impl::SettledIdentity(const struct stat& st) {
  return util::SettledFileIdentity(st);
}

}  // namespace cachemgr::storage
