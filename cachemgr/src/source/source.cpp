#include "source/source.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "cachemgr/error.h"

namespace cachemgr::source {

void Source::ReadRange(const std::string& image_id, uint64_t /*offset*/,
                       std::span<std::byte> /*out*/) {
  throw Error(Errc::kSource, "image " + image_id + ": the " + kind() +
                                 " source does not serve byte ranges");
}

uint64_t Source::Download(const std::string& image_id, const DownloadBounds& bounds,
                          const Sink& sink, const ProgressFn& progress) {
  const std::string what = "image " + image_id;
  uint64_t got = 0;
  Download(
      image_id,
      [&](std::span<const std::byte> data) {
        if (bounds.size && got + data.size() > *bounds.size) {
          throw Error(Errc::kCorrupt, what + ": body longer than its declared size " +
                                          std::to_string(*bounds.size) + " bytes");
        }
        if (!bounds.size && bounds.max_bytes && got + data.size() > bounds.max_bytes) {
          throw Error(Errc::kRefused, what + ": no declared size and the body passed " +
                                          std::to_string(bounds.max_bytes) +
                                          " bytes (source.max_image_gb)");
        }
        got += data.size();
        sink(data);
      },
      progress);
  if (bounds.size && got != *bounds.size) {
    throw Error(Errc::kCorrupt, what + ": truncated download: got " + std::to_string(got) + " of " +
                                    std::to_string(*bounds.size) + " declared bytes");
  }
  return got;
}

namespace {
int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}
}  // namespace

LocalFile::LocalFile(int fd, std::string name) : fd_(fd), name_(std::move(name)) {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    throw Error(Errc::kSource, "cannot stat " + name_ + ": " + std::strerror(e));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  mtime_ns_ = MtimeNs(st);
}
LocalFile::LocalFile(LocalFile&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)),
      name_(std::move(o.name_)),
      size_(o.size_),
      mtime_ns_(o.mtime_ns_) {}
LocalFile& LocalFile::operator=(LocalFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    name_ = std::move(o.name_);
    size_ = o.size_;
    mtime_ns_ = o.mtime_ns_;
  }
  return *this;
}
LocalFile::~LocalFile() {
  if (fd_ >= 0) ::close(fd_);
}
std::filesystem::path LocalFile::ProcPath() const { return "/proc/self/fd/" + std::to_string(fd_); }
void LocalFile::RequireUnchanged(const std::string& image_id) const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    throw Error(Errc::kSource,
                "image " + image_id + ": cannot stat " + name_ + ": " + std::strerror(errno));
  }
  if (static_cast<uint64_t>(st.st_size) != size_ || MtimeNs(st) != mtime_ns_) {
    throw Error(Errc::kCorrupt, "image " + image_id + ": file " + name_ +
                                    " changed while it was read (size or mtime differ); "
                                    "retry once it is no longer being written");
  }
}

std::unique_ptr<Source> MakeSource(const SourceOptions& options,
                                   std::shared_ptr<spdlog::logger> logger) {
  switch (options.type) {
    case SourceType::kGlance:
      return MakeGlanceSource(options.glance, std::move(logger));
    case SourceType::kFile:
      return MakeFileSource(options.file, std::move(logger));
  }
  throw Error(Errc::kConfig, "source.type: unknown source type");
}

std::optional<RbdLocation> ParseRbdLocation(const std::string& url) {
  static const std::string kScheme = "rbd://";
  if (url.rfind(kScheme, 0) != 0) return std::nullopt;
  std::vector<std::string> parts;
  size_t start = kScheme.size();
  while (true) {
    size_t slash = url.find('/', start);
    parts.push_back(url.substr(start, slash == std::string::npos ? std::string::npos
                                                                 : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  // Glance also writes rbd://<pool>/<image> (no fsid, no snapshot) for old images: not
  // clonable safely since the cluster cannot be checked.
  if (parts.size() != 4) return std::nullopt;
  for (const auto& p : parts) {
    if (p.empty()) return std::nullopt;
  }
  return RbdLocation{parts[0], parts[1], parts[2], parts[3]};
}

void ValidateImageId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 200 && id[0] != '.' && id[0] != '-';
  for (char c : id) {
    bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '.' || c == '_' || c == '-';
    if (!allowed) ok = false;
  }
  if (!ok) {
    std::string shown;
    for (char c : id.substr(0, 80)) {
      shown += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    throw Error(Errc::kInvalidArgument,
                "image id '" + shown +
                    "' is not valid: expected 1..200 of [A-Za-z0-9._-], not starting with "
                    "'.' or '-'");
  }
}

void RequireBounded(const ImageMeta& meta, const MetaLimits& limits) {
  const std::string what = "image " + meta.id;
  if (!meta.invalid.empty()) {
    std::string fields;
    for (const auto& f : meta.invalid) fields += (fields.empty() ? "" : "; ") + f;
    throw Error(Errc::kRefused, what + ": the source describes it with impossible values: " +
                                    fields + " (fix the image's record in the source)");
  }
  auto gib = [](uint64_t b) { return std::to_string(b / (1ull << 30)) + " GiB"; };
  if (meta.size && limits.max_image_bytes && *meta.size > limits.max_image_bytes) {
    throw Error(Errc::kRefused, what + ": size " + std::to_string(*meta.size) +
                                    " bytes is over source.max_image_gb (" +
                                    gib(limits.max_image_bytes) + ")");
  }
  if (meta.virtual_size && limits.max_virtual_bytes &&
      *meta.virtual_size > limits.max_virtual_bytes) {
    throw Error(Errc::kRefused, what + ": virtual_size " + std::to_string(*meta.virtual_size) +
                                    " bytes is over conversion.max_virtual_size_gb (" +
                                    gib(limits.max_virtual_bytes) + ")");
  }
}

std::optional<Digest> CheckableDigest(const ImageMeta& meta) {
  static const char* kStrong[] = {"sha256", "sha384", "sha512"};
  if (!meta.os_hash_value.empty()) {
    for (const char* algo : kStrong) {
      if (meta.os_hash_algo == algo) return Digest{algo, meta.os_hash_value};
    }
  }
  if (!meta.checksum.empty()) return Digest{"md5", meta.checksum};
  return std::nullopt;
}

void RequireVerifiable(const ImageMeta& meta, bool allow_unverified) {
  if (allow_unverified || CheckableDigest(meta)) return;
  std::string algo = meta.os_hash_algo.empty() ? "none" : "'" + meta.os_hash_algo + "'";
  throw Error(Errc::kRefused,
              "image " + meta.id +
                  ": the source gives no digest that can be checked (no md5 checksum; "
                  "os_hash_algo " +
                  algo +
                  ", known: sha256, sha384, sha512): its bytes cannot be verified. Add a "
                  "checksum to the image, or accept the risk with source.allow_unverified: true");
}

void RequireUsable(const ImageMeta& meta) {
  if (meta.status != "active") {
    bool gone = meta.status == "deleted" || meta.status == "pending_delete" ||
                meta.status == "killed";
    throw Error(gone ? Errc::kNotFound : Errc::kRefused,
                "image " + meta.id + ": status is '" + meta.status + "', not 'active'");
  }
  if (!meta.container_format.empty() && meta.container_format != "bare") {
    throw Error(Errc::kRefused, "image " + meta.id + ": container_format '" +
                                    meta.container_format + "' is not supported (only 'bare')");
  }
}

}  // namespace cachemgr::source
