// storage/local/local_io.cpp: reading and writing image bytes: the reader (a raw file,
// or a raw view of a qcow2 one), the writer that streams an import into a temporary file
// and publishes it, and Resize.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "storage/local/local_impl.h"

namespace cachemgr::storage {

namespace {

constexpr size_t kWriteBuffer = 1 << 20;

class LocalReader final : public ImageReader {
 public:
  LocalReader(UniqueFd fd, uint64_t size, fs::path path)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)) {}
  uint64_t size() const override { return size_; }
  size_t Read(uint64_t offset, std::span<std::byte> out) override {
    if (offset >= size_) return 0;
    size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
    size_t done = 0;
    while (done < want) {
      ssize_t r =
          ::pread(fd_.get(), out.data() + done, want - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        FailErrno("read failed on", path_, errno);
      }
      if (r == 0) {
        // Past the file's end but inside the image (a snapshot taken before a shrink
        // cannot happen; a sparse tail can): zeros.
        std::memset(out.data() + done, 0, want - done);
        done = want;
        break;
      }
      done += static_cast<size_t>(r);
    }
    return done;
  }

 private:
  UniqueFd fd_;
  uint64_t size_;
  fs::path path_;
};

class LocalWriter final : public ImageWriter {
 public:
  LocalWriter(LocalBackend::Impl& impl, ImageRef ref, uint64_t size)
      : impl_(impl), ref_(std::move(ref)), size_(size) {
    impl_.EnsurePool(ref_.pool);
    auto [tmp, fd] = MakeTemp(impl_.PoolDir(ref_.pool), ref_.name);
    tmp_ = tmp;
    fd_ = std::move(fd);
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) {
      int e = errno;
      UnlinkIfHolds(tmp_, fd_.get());
      FailErrno("cannot size", tmp_, e);
    }
    buffer_.reserve(kWriteBuffer);
    start_ = std::chrono::steady_clock::now();
  }

  ~LocalWriter() override {
    if (!finished_) {
      UnlinkIfHolds(tmp_, fd_.get());  // before the lock goes: see MakeTemp
      fd_.Reset();
    }
  }

  void Append(std::span<const std::byte> data) override {
    if (finished_) Fail(Errc::kInternal, "image " + RefName(ref_) + ": Append after Finish");
    if (appended_ + data.size() > size_)
      Fail(Errc::kInvalidArgument, "image " + RefName(ref_) + ": data exceeds its size of " +
                                       std::to_string(size_) + " bytes");
    const char* p = reinterpret_cast<const char*>(data.data());
    size_t left = data.size();
    while (left > 0) {
      size_t n = std::min(left, kWriteBuffer - buffer_.size());
      buffer_.append(p, n);
      p += n;
      left -= n;
      appended_ += n;
      if (buffer_.size() == kWriteBuffer) Flush();
    }
  }

  void AppendZeros(uint64_t n) override {
    if (finished_) Fail(Errc::kInternal, "image " + RefName(ref_) + ": Append after Finish");
    if (appended_ + n > size_)
      Fail(Errc::kInvalidArgument, "image " + RefName(ref_) + ": data exceeds its size of " +
                                       std::to_string(size_) + " bytes");
    // The buffer may hold data: zeros fill it up to its end.
    if (!buffer_.empty()) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, kWriteBuffer - buffer_.size()));
      buffer_.append(k, '\0');
      appended_ += k;
      n -= k;
      if (buffer_.size() == kWriteBuffer) Flush();
      if (n == 0) return;
    }
    // Whole buffers of zeros: the file was sized up front, they stay a hole.
    const uint64_t skip = n - n % kWriteBuffer;
    flushed_ += skip;
    appended_ += skip;
    n -= skip;
    buffer_.append(static_cast<size_t>(n), '\0');
    appended_ += n;
  }

  ImportStats Finish() override {
    if (finished_) Fail(Errc::kInternal, "image " + RefName(ref_) + ": Finish called twice");
    Flush();
    impl_.ApplyOwnership(fd_.get(), tmp_);
    FsyncFd(fd_.get(), tmp_);
    // fd_ (and its lock) stays open until the temporary name is gone: see MakeTemp.
    // Checked again: the name may have been taken while the data streamed in, and the
    // sidecar below must not overwrite that image's.
    impl_.RequireFree(ref_);
    finished_ = true;  // Publish removes the temporary name itself, also on failure
    impl_.Publish(tmp_, fd_.get(), ref_, Sidecar{});
    fd_.Reset();
    stats_.bytes_in = appended_;
    stats_.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - start_);
    return stats_;
  }

 private:
  // Writes the buffer (which starts at a multiple of kWriteBuffer), skipping all-zero
  // 4 KiB blocks so they stay holes.
  void Flush() {
    size_t pos = 0;
    while (pos < buffer_.size()) {
      size_t block = std::min<size_t>(kBlock, buffer_.size() - pos);
      if (IsZero(pos, block)) {
        pos += block;
        continue;
      }
      size_t run_end = pos + block;
      while (run_end < buffer_.size()) {
        size_t next = std::min<size_t>(kBlock, buffer_.size() - run_end);
        if (IsZero(run_end, next)) break;
        run_end += next;
      }
      PwriteAll(fd_.get(), buffer_.data() + pos, run_end - pos, flushed_ + pos, tmp_);
      stats_.bytes_written += run_end - pos;
      pos = run_end;
    }
    flushed_ += buffer_.size();
    buffer_.clear();
  }

  bool IsZero(size_t pos, size_t n) const {
    const char* p = buffer_.data() + pos;
    // The first byte is zero and every byte equals the next: memcmp runs at memory speed.
    return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
  }

  LocalBackend::Impl& impl_;
  ImageRef ref_;
  uint64_t size_;
  fs::path tmp_;
  UniqueFd fd_;
  std::string buffer_;
  uint64_t appended_ = 0;
  uint64_t flushed_ = 0;
  bool finished_ = false;
  ImportStats stats_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

std::unique_ptr<ImageWriter> LocalBackend::Create(const ImageRef& ref, uint64_t size) {
  impl_->RequireFree(ref);
  return std::make_unique<LocalWriter>(*impl_, ref, size);
}

std::unique_ptr<ImageReader> LocalBackend::Open(const ImageRef& ref,
                                                const std::optional<std::string>& snap) {
  impl_->Require(ref);
  Sidecar s = impl_->Load(ref);
  {
    std::lock_guard lock(impl_->mu);
    impl_->CheckShared(ref, s);
  }
  std::string format = impl_->Format(ref, s);
  uint64_t size = impl_->VirtualSize(ref, format);
  if (snap) {
    ValidateName("snapshot", *snap);
    auto* rec = s.Find(*snap);
    if (!rec) Fail(Errc::kNotFound, "snapshot " + RefName(ref) + "@" + *snap + ": not found");
    size = std::min(size, rec->size);
  }
  auto path = PathOf(ref);
  if (format == "raw") return std::make_unique<LocalReader>(OpenOrFail(path, O_RDONLY), size, path);
  // A qcow2 overlay is read through a raw view of it; the view is unlinked at once and
  // lives as long as the reader holds it open.
  auto [tmp, fd] = MakeTemp(impl_->root / ".tmp", "view");
  try {
    impl_->Qemu(
        {"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", path.string(), tmp.string()});
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  UniqueFd view = OpenOrFail(tmp, O_RDONLY);
  ::unlink(tmp.c_str());
  return std::make_unique<LocalReader>(std::move(view), size, path);
}

void LocalBackend::Resize(const ImageRef& ref, uint64_t size) {
  impl_->Require(ref);
  std::lock_guard lock(impl_->mu);
  std::string format = impl_->Format(ref, impl_->Load(ref));
  uint64_t current = impl_->VirtualSize(ref, format);
  if (size < current)
    Fail(Errc::kInvalidArgument, "image " + RefName(ref) + ": cannot shrink from " +
                                     std::to_string(current) + " to " + std::to_string(size) +
                                     " bytes");
  if (size == current) return;
  auto path = PathOf(ref);
  if (format == "qcow2") {
    impl_->Qemu({"qemu-img", "resize", "-q", "-f", "qcow2", path.string(), std::to_string(size)});
    return;
  }
  UniqueFd fd = OpenOrFail(path, O_WRONLY);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) FailErrno("cannot grow", path, errno);
  FsyncFd(fd.get(), path);
}

}  // namespace cachemgr::storage
