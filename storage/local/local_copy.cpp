// storage/local/local_copy.cpp: clones and independent copies: qcow2 overlays (written
// directly, see local_qcow2_overlay.h), reflinks (FICLONE),
// sparse copies (SEEK_DATA/SEEK_HOLE and copy_file_range), and flattening.
#include <fcntl.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <future>
#include <system_error>

#include "storage/local/local_impl.h"
#include "storage/local/local_qcow2_header.h"
#include "storage/local/local_qcow2_overlay.h"

namespace cachemgr::storage {

bool LocalBackend::ReflinkWorks(const fs::path& dir) {
  try {
    auto [a, fa] = MakeTemp(dir, "reflink-probe-a");
    auto [b, fb] = MakeTemp(dir, "reflink-probe-b");
    std::string block(kBlock, 'x');
    bool ok =
        ::pwrite(fa.get(), block.data(), block.size(), 0) == static_cast<ssize_t>(block.size()) &&
        ::ioctl(fb.get(), FICLONE, fa.get()) == 0;
    ::unlink(a.c_str());
    ::unlink(b.c_str());
    return ok;
  } catch (const Error&) {
    return false;
  }
}

// Writes an independent raw copy of the first `size` bytes of `src` into `dest`.
void LocalBackend::Impl::Materialize(const fs::path& src, const std::string& src_format,
                                     uint64_t size, const fs::path& dest, int dest_fd, bool reflink,
                                     const ProgressFn& progress) const {
  if (src_format == "qcow2") {
    Qemu({"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", src.string(), dest.string()});
    if (::ftruncate(dest_fd, static_cast<off_t>(size)) != 0)
      FailErrno("cannot truncate", dest, errno);
    if (progress) progress(size, size);
    return;
  }
  UniqueFd in = OpenOrFail(src, O_RDONLY);
  if (reflink) {
    if (::ioctl(dest_fd, FICLONE, in.get()) != 0)
      FailErrno("reflink (FICLONE) from " + src.string() + " failed for", dest, errno);
    if (::ftruncate(dest_fd, static_cast<off_t>(size)) != 0)
      FailErrno("cannot truncate", dest, errno);
    if (progress) progress(size, size);
    return;
  }
  if (::ftruncate(dest_fd, static_cast<off_t>(size)) != 0)
    FailErrno("cannot truncate", dest, errno);
  // Copy only the data extents: holes stay holes.
  uint64_t off = 0;
  uint64_t done = 0;
  std::string buf;
  while (off < size) {
    off_t data = ::lseek(in.get(), static_cast<off_t>(off), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      FailErrno("SEEK_DATA failed on", src, errno);
    }
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) FailErrno("SEEK_HOLE failed on", src, errno);
    uint64_t start = static_cast<uint64_t>(data);
    uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    while (start < end) {
      loff_t in_off = static_cast<loff_t>(start);
      loff_t out_off = static_cast<loff_t>(start);
      size_t len = static_cast<size_t>(std::min<uint64_t>(end - start, 64 << 20));
      ssize_t n = ::copy_file_range(in.get(), &in_off, dest_fd, &out_off, len, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
        // Older kernels or odd filesystems: plain reads and writes.
        buf.resize(std::min<size_t>(len, 1 << 20));
        ssize_t r = ::pread(in.get(), buf.data(), std::min(len, buf.size()), in_off);
        if (r <= 0) FailErrno("read failed on", src, r < 0 ? errno : EIO);
        PwriteAll(dest_fd, buf.data(), static_cast<size_t>(r), start, dest);
        n = r;
      } else if (n < 0) {
        FailErrno("copy_file_range from " + src.string() + " failed for", dest, errno);
      } else if (n == 0) {
        break;
      }
      start += static_cast<uint64_t>(n);
      done += static_cast<uint64_t>(n);
      if (progress) progress(done, size);
    }
    off = std::max<uint64_t>(static_cast<uint64_t>(hole), start);
  }
  if (progress) progress(size, size);
}

// Makes `dest` as an independent raw copy of `src` (its first `size` bytes).
void LocalBackend::Impl::CopyTo(const ImageRef& src, uint64_t size, const ImageRef& dest,
                                const ProgressFn& progress) {
  Sidecar src_sidecar = Load(src);
  std::string format = Format(src, src_sidecar);
  RequireFree(dest);
  EnsurePool(dest.pool);
  auto [tmp, fd] = MakeTemp(PoolDir(dest.pool), dest.name);
  try {
    Materialize(PathOf(src), format, size, tmp, fd.get(), mode == CloneMode::kReflink, progress);
    ApplyOwnership(fd.get(), tmp);
    FsyncFd(fd.get(), tmp);
    RequireFree(dest);  // again: the copy took time
    Publish(tmp, fd.get(), dest, Sidecar{});
  } catch (...) {
    UnlinkIfHolds(tmp, fd.get());
    throw;
  }
}

namespace {

// What a clone of a protected snapshot starts from, read under the backend's lock.
struct CloneSource {
  uint64_t size = 0;         // the snapshot's virtual size
  std::string format;        // the parent's on-disk format
  fs::path backing;          // qcow2 mode: the stable name an overlay names
};

CloneSource ReadCloneSource(LocalBackend::Impl& m, const SnapRef& parent, const ImageRef& child) {
  std::lock_guard lock(m.mu);
  Sidecar ps = m.Load(parent.image);
  m.CheckShared(parent.image, ps);
  const auto& rec = FindSnap(ps, parent);
  if (!rec.is_protected)
    Fail(Errc::kInvalidArgument,
         "snapshot " + RefName(parent.image) + "@" + parent.snap + ": not protected");
  m.RequireFree(child);
  CloneSource out;
  out.size = rec.size;
  out.format = m.Format(parent.image, ps);
  if (m.mode == CloneMode::kQcow2) {
    out.backing = m.EnsureStable(m.PathOf(parent.image));
    m.Relinked(parent.image, ps);
  }
  return out;
}

}  // namespace

// Writes the overlay of `from` (`size` bytes) into the temporary `tmp` and publishes it
// at `child` with a sidecar carrying `metadata(identity)` (nothing when unset).
void LocalBackend::Impl::PublishOverlay(const SnapRef& parent, const fs::path& tmp, int fd,
                                        uint64_t size, const fs::path& backing,
                                        const std::string& parent_format, const ImageRef& child,
                                        const PublishFn& metadata) {
  // What `qemu-img create -f qcow2 -F <fmt> -b <backing>` writes, without its process;
  // and what qemu-img checked by opening the backing file: that it is there, as `fmt`.
  const bool backing_ok =
      parent_format == "qcow2" ? ReadQcow2Header(backing).is_qcow2 : IsRegularFile(backing);
  if (!backing_ok)
    Fail(Errc::kCorrupt, "clone of " + RefName(parent.image) + ": backing file " +
                             backing.string() + " is not a " + parent_format + " file");
  WriteQcow2Overlay(fd, tmp, size, backing.string(), parent_format);
  ApplyOwnership(fd, tmp);
  // The overlay's fsync runs beside the sidecar's (write, fsync, link, fsync of .meta):
  // a journal commit each, and the two file fsyncs can share one. The image is linked
  // only after both. The future joins before `fd` closes, also on failure.
  std::future<void> synced;
  try {
    synced = std::async(std::launch::async, [fd, path = tmp] { FsyncFd(fd, path); });
  } catch (const std::system_error&) {
    FsyncFd(fd, tmp);  // no thread to be had: in turn, as before
  }
  Sidecar cs;
  cs.format = "qcow2";
  cs.parent = parent;
  if (metadata) cs.metadata = metadata(IdentityOfFd(fd, tmp));
  Publish(tmp, fd, child, cs, [&] {
    if (synced.valid()) synced.get();
  });
}

void LocalBackend::Clone(const SnapRef& parent, const ImageRef& child) {
  impl_->Require(parent.image);
  std::shared_lock as_clone(impl_->users_mu);
  const CloneSource from = ReadCloneSource(*impl_, parent, child);
  if (impl_->mode != CloneMode::kQcow2) {
    impl_->CopyTo(parent.image, from.size, child, {});
    return;
  }
  impl_->EnsurePool(child.pool);
  auto [tmp, fd] = MakeTemp(impl_->PoolDir(child.pool), child.name);
  try {
    impl_->PublishOverlay(parent, tmp, fd.get(), from.size, from.backing, from.format, child, {});
  } catch (...) {
    UnlinkIfHolds(tmp, fd.get());
    throw;
  }
}

bool LocalBackend::CloneInPlace(const SnapRef& parent, const ImageRef& staging,
                                const ImageRef& child, uint64_t size, const PublishFn& publish) {
  if (impl_->mode != CloneMode::kQcow2) return false;
  impl_->Require(parent.image);
  impl_->Check(staging);
  std::shared_lock as_clone(impl_->users_mu);
  const CloneSource from = ReadCloneSource(*impl_, parent, child);
  if (size == 0) size = from.size;
  if (size < from.size)
    Fail(Errc::kInvalidArgument, "clone of " + RefName(parent.image) + "@" + parent.snap +
                                     ": size " + std::to_string(size) + " is smaller than its " +
                                     std::to_string(from.size) + " bytes");
  impl_->EnsurePool(child.pool);
  // Under the staging name, so that RemoveDanglingName(staging, "") finds it after a crash.
  auto [tmp, fd] = MakeTempNamed(impl_->PoolDir(child.pool), staging.name, Impl::kPlacedTag);
  try {
    impl_->PublishOverlay(parent, tmp, fd.get(), size, from.backing, from.format, child,
                          publish);
  } catch (...) {
    UnlinkIfHolds(tmp, fd.get());
    throw;
  }
  return true;
}

void LocalBackend::Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) {
  impl_->Require(source.image);
  Sidecar s = impl_->Load(source.image);
  {
    std::lock_guard lock(impl_->mu);
    impl_->CheckShared(source.image, s);
  }
  uint64_t size = FindSnap(s, source).size;
  impl_->CopyTo(source.image, size, dest, progress);
}

void LocalBackend::Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) {
  impl_->Require(source);
  Sidecar s = impl_->Load(source);
  {
    std::lock_guard lock(impl_->mu);
    impl_->CheckShared(source, s);
  }
  uint64_t size = impl_->VirtualSize(source, impl_->Format(source, s));
  impl_->CopyTo(source, size, dest, progress);
}

void LocalBackend::Flatten(const ImageRef& ref, const ProgressFn& progress) {
  impl_->Require(ref);
  std::unique_lock no_clones(impl_->users_mu);
  std::lock_guard lock(impl_->mu);
  Sidecar s = impl_->Load(ref);
  auto path = PathOf(ref);
  auto header = ReadQcow2Header(path);
  if (impl_->Format(ref, s) != "qcow2" || !header.backing) {
    if (s.parent) {
      s.parent.reset();
      impl_->Save(ref, s);
    }
    return;
  }
  // The output stays qcow2 (without a backing file), so overlays of this image keep a
  // valid backing format while the file is swapped underneath them.
  auto [tmp, fd] = MakeTemp(path.parent_path(), ref.name);
  try {
    impl_->Qemu(
        {"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", path.string(), tmp.string()});
    UniqueFd written = OpenOrFail(tmp, O_RDWR);
    impl_->ApplyOwnership(written.get(), tmp);
    FsyncFd(written.get(), tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) FailErrno("cannot rename onto", path, errno);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  FsyncDir(path.parent_path());
  s.parent.reset();
  impl_->Save(ref, s);
  if (progress) progress(header.size, header.size);
  impl_->log->info("flattened image={}", RefName(ref));
}

}  // namespace cachemgr::storage
