// A directory of image files named by image id (Glance's file store, an NFS image pool).
//
// An optional sidecar <id>.json ({"disk_format", "checksum", "os_hash_algo",
// "os_hash_value", "virtual_size", "container_format"}) says what the image is meant to
// be; without one the format is read from the header and, when it names no digest, the
// checksums are computed from the file. Both are computed once per file version and kept
// (in the cache's index through a DigestCache, else in this object) with the file's
// identity (device, inode, size, mtime and ctime in ns): while a stat gives the same
// identity, Describe reads nothing of the image.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <vector>

#include "cachemgr/error.h"
#include "convert/format.h"
#include "source/source.h"
#include "util/file_identity.h"
#include "util/hash.h"

namespace cachemgr::source {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kSidecarSuffix = ".json";

// An image id of this source: valid (ValidateImageId), and not the name of a sidecar (the
// description of another image, never an image itself).
void ValidateFileImageId(const std::string& image_id) {
  ValidateImageId(image_id);
  if (image_id.size() > 5 && image_id.ends_with(kSidecarSuffix)) {
    throw Error(Errc::kNotFound, "image " + image_id + ": the name of a sidecar (the description "
                                 "of image " + image_id.substr(0, image_id.size() - 5) +
                                 "), not of an image");
  }
}

std::string IsoTime(const struct timespec& ts) {
  struct tm tm {};
  gmtime_r(&ts.tv_sec, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

constexpr size_t kMaxSidecarBytes = 1 << 20;

const char* KindOf(mode_t mode) {
  if (S_ISLNK(mode)) return "a symlink";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}

bool IsHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char ch) { return std::isxdigit(static_cast<unsigned char>(ch)); });
}

// The image store is read, never changed, and never left: the directory is opened once
// and every image and sidecar is opened inside it with O_NOFOLLOW, only when it is a
// regular file, and read from that descriptor alone. A symlink to a secret elsewhere,
// a FIFO that would hang a read or a device are refused by name.
class FileSource final : public Source {
 public:
  FileSource(const FileSourceOptions& options, std::shared_ptr<spdlog::logger> logger)
      : dir_(options.dir), logger_(std::move(logger)) {
    std::error_code ec;
    location_ = fs::absolute(dir_, ec).lexically_normal().string();
    if (ec) location_ = dir_.string();
    if (!logger_) logger_ = std::make_shared<spdlog::logger>("cachemgr-null");
  }
  ~FileSource() override {
    if (dir_fd_ >= 0) ::close(dir_fd_);
  }

  std::string kind() const override { return "file"; }

  ImageMeta Describe(const std::string& image_id) override {
    return DescribeFile(image_id, /*may_defer=*/false);
  }

  ImageMeta DescribeForInstant(const std::string& image_id) override {
    return DescribeFile(image_id, /*may_defer=*/true);
  }

  std::optional<fs::path> SharedPath(const std::string& image_id) override {
    ValidateFileImageId(image_id);
    return fs::absolute(dir_ / image_id).lexically_normal();
  }

  void KeepDigests(const std::string& image_id, const LocalFile& file, const std::string& md5,
                   const std::string& sha512) override {
    struct stat st {};
    if (::fstat(file.fd(), &st) != 0) return;
    FileDigests kept = Lookup(image_id).value_or(FileDigests{});
    const std::string identity = util::SettledFileIdentity(st);
    if (kept.identity != identity) kept = FileDigests{identity, "", "", ""};
    kept.md5 = md5;
    kept.sha512 = sha512;
    Store(image_id, kept);
  }

 private:
  ImageMeta DescribeFile(const std::string& image_id, bool may_defer) {
    ValidateFileImageId(image_id);
    std::optional<LocalFile> opened = OpenEntry(image_id, image_id, /*missing_ok=*/true);
    if (!opened) {
      Forget(image_id);  // a removed image's kept digests would only grow the index
      throw Error(Errc::kNotFound, "image " + image_id + ": no file " + (dir_ / image_id).string());
    }
    LocalFile file = std::move(*opened);
    ImageMeta m;
    m.id = image_id;
    m.status = "active";
    m.container_format = "bare";
    m.size = file.size();
    {
      struct stat st {};
      ::fstat(file.fd(), &st);
      m.updated_at = IsoTime(st.st_mtim);
    }
    m.direct_url = "file://" + fs::absolute(dir_ / image_id).string();
    m.locations.push_back(m.direct_url);

    json sidecar = ReadSidecar(image_id);
    auto str = [&](const char* key) {
      auto it = sidecar.find(key);
      return it != sidecar.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    m.disk_format = str("disk_format");
    if (std::string c = str("container_format"); !c.empty()) m.container_format = c;
    m.checksum = str("checksum");
    m.os_hash_algo = str("os_hash_algo");
    m.os_hash_value = str("os_hash_value");
    // A sidecar that names a digest is the claim checked at fetch; the file's own digests
    // stand in only when it names none (else a computed os_hash would always match and
    // a wrong md5 claim would go unchecked).
    const bool need_hashes = m.checksum.empty() && m.os_hash_value.empty();
    FileDigests known = Known(image_id, file, m.disk_format.empty(), need_hashes, may_defer);
    if (m.disk_format.empty())
      m.disk_format = known.disk_format == "vpc" ? "vhd" : known.disk_format;
    if (auto it = sidecar.find("virtual_size"); it != sidecar.end() && it->is_number_unsigned()) {
      m.virtual_size = it->get<uint64_t>();
    } else if (m.disk_format == "raw") {
      m.virtual_size = m.size;
    }
    if (need_hashes && known.md5.empty()) {
      m.digests_deferred = true;  // may_defer, and not kept for this version
    } else if (need_hashes) {
      m.checksum = known.md5;
      m.os_hash_algo = "sha512";
      m.os_hash_value = known.sha512;
    }
    file.RequireUnchanged(image_id);
    return m;
  }

 public:

  std::vector<ImageMeta> ListActive() override { return ListActiveAndRefused(nullptr); }

  std::vector<ImageMeta> ListActiveAndRefused(std::vector<std::string>* refused) override {
    std::vector<ImageMeta> out;
    std::error_code ec;
    fs::directory_iterator it(dir_, ec);
    if (ec) throw Error(Errc::kSource, "cannot list image directory " + dir_.string() + ": " + ec.message());
    for (const auto& entry : it) {
      std::string name = entry.path().filename().string();
      if (name.size() > 5 && name.ends_with(kSidecarSuffix)) continue;
      try {
        ValidateImageId(name);
      } catch (const Error&) {
        continue;  // not an image file (a lock, a dotfile, a name with spaces)
      }
      try {
        out.push_back(Describe(name));
      } catch (const Error& e) {
        if (e.code() == Errc::kNotFound) continue;  // removed while listing
        // One hostile or unreadable entry (a symlink, a FIFO, a bad sidecar, a file this
        // user may not read) does not hide the rest: its own prefill fails with its reason.
        logger_->warn("image store entry not listed image={} dir={} error=\"{}\"", name,
                      dir_.string(), e.what());
        if (refused) refused->push_back(name);
      }
    }
    return out;
  }

  uint64_t Download(const std::string& image_id, const Sink& sink,
                    const ProgressFn& progress) override {
    ValidateFileImageId(image_id);
    LocalFile file = *OpenEntry(image_id, image_id, /*missing_ok=*/false);
    return ReadAll(image_id, file, sink, progress);
  }

  std::optional<LocalFile> OpenLocal(const std::string& image_id) override {
    ValidateFileImageId(image_id);
    return OpenEntry(image_id, image_id, /*missing_ok=*/false);
  }

  void SetDigestCache(std::shared_ptr<DigestCache> cache) override {
    std::lock_guard lock(mu_);
    cache_ = std::move(cache);
  }

  std::string Ping() override {
    DirFd();
    if (::access(dir_.c_str(), R_OK | X_OK) != 0) {
      throw Error(Errc::kSource, "image directory " + dir_.string() + " is not readable: " +
                                     std::strerror(errno));
    }
    return "image directory " + dir_.string() + ": readable";
  }

 private:
  // The image directory, opened once (O_DIRECTORY): every entry is opened relative to it.
  int DirFd() {
    std::lock_guard lock(mu_);
    if (dir_fd_ >= 0) return dir_fd_;
    int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      throw Error(Errc::kSource, "cannot open image directory " + dir_.string() +
                                     " (source.file.dir): " + std::strerror(errno));
    }
    dir_fd_ = fd;
    return dir_fd_;
  }

  // Opens `name` in the directory: never through a symlink, only a regular file (checked
  // before the open, so a device is never opened, and on the open descriptor, so a swap
  // in between is seen). nullopt for a missing file when `missing_ok`.
  std::optional<LocalFile> OpenEntry(const std::string& name, const std::string& image_id,
                                     bool missing_ok) {
    const int dir = DirFd();
    const std::string shown = (dir_ / name).string();
    auto not_regular = [&](mode_t mode) {
      return Error(Errc::kRefused, "image " + image_id + ": " + shown + " is " + KindOf(mode) +
                                       "; the image store serves regular files only (replace it "
                                       "with the file itself)");
    };
    auto fail = [&](int e) -> std::optional<LocalFile> {
      if (e == ENOENT) {
        if (missing_ok) return std::nullopt;
        throw Error(Errc::kNotFound, "image " + image_id + ": no file " + shown);
      }
      if (e == ELOOP) throw not_regular(S_IFLNK);
      throw Error(Errc::kSource,
                  "image " + image_id + ": cannot open " + shown + ": " + std::strerror(e));
    };
    struct stat before {};
    if (::fstatat(dir, name.c_str(), &before, AT_SYMLINK_NOFOLLOW) != 0) return fail(errno);
    if (!S_ISREG(before.st_mode)) throw not_regular(before.st_mode);
    int fd = ::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return fail(errno);
    LocalFile file(fd, shown);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw not_regular(st.st_mode);
    return file;
  }

  // Every byte of `file` from its descriptor; kCorrupt when it changed while read.
  uint64_t ReadAll(const std::string& image_id, const LocalFile& file, const Sink& sink,
                   const ProgressFn& progress) {
    const int fd = file.fd();
    const uint64_t total = file.size();
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    std::vector<std::byte> buf(std::clamp<uint64_t>(total, 4096, 4 << 20));
    uint64_t done = 0;
    while (true) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(done));
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        throw Error(Errc::kSource, "image " + image_id + ": cannot read " + file.name() + ": " +
                                       std::strerror(errno));
      }
      if (n == 0) break;
      sink(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
      done += static_cast<uint64_t>(n);
      if (progress) progress(done, total);
    }
    file.RequireUnchanged(image_id);
    if (done != total) {
      throw Error(Errc::kCorrupt, "image " + image_id + ": file " + file.name() +
                                      " changed while it was read: " + std::to_string(done) +
                                      " of " + std::to_string(total) + " bytes");
    }
    return done;
  }

  // The sidecar's claims, refused when they cannot be checked: a symlink or other
  // non-regular file, more than kMaxSidecarBytes, a hash algorithm this tool does not
  // compute, or a digest that is not hex of that algorithm's length.
  json ReadSidecar(const std::string& image_id) {
    const std::string name = image_id + kSidecarSuffix;
    auto file = OpenEntry(name, image_id, /*missing_ok=*/true);
    if (!file) return json::object();
    const std::string& p = file->name();
    if (file->size() > kMaxSidecarBytes) {
      throw Error(Errc::kRefused, "sidecar " + p + " is " + std::to_string(file->size()) +
                                      " bytes, more than the " + std::to_string(kMaxSidecarBytes) +
                                      " a sidecar may have");
    }
    std::string text;
    ReadAll(image_id, *file,
            [&](std::span<const std::byte> d) {
              text.append(reinterpret_cast<const char*>(d.data()), d.size());
            },
            {});
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      // The image's description is unusable: refused (exit 4) until it is fixed, as any
      // other bad claim of a sidecar; never taken for an unreachable source.
      throw Error(Errc::kRefused, "sidecar " + p + " is not valid JSON (" + e.what() +
                                      "): fix or remove it to use image " + image_id);
    }
    if (!j.is_object()) {
      throw Error(Errc::kRefused, "sidecar " + p + " is not a JSON object: fix or remove it to "
                                  "use image " + image_id);
    }
    if (auto it = j.find("virtual_size");
        it != j.end() && !it->is_null() && !it->is_number_unsigned()) {
      throw Error(Errc::kRefused, "sidecar " + p + ": virtual_size " + it->dump().substr(0, 40) +
                                      " is not a whole number of bytes");
    }
    auto str = [&](const char* key) {
      auto it = j.find(key);
      return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    const std::string value = str("os_hash_value");
    std::string algo = str("os_hash_algo");
    if (algo.empty() && !value.empty()) algo = "sha512";
    if (!algo.empty()) {
      // The algorithms a fill verifies with (source::CheckableDigest); md5 belongs in
      // "checksum".
      if (algo != "sha256" && algo != "sha384" && algo != "sha512") {
        throw Error(Errc::kRefused, "sidecar " + p + " names hash algorithm '" + algo +
                                        "', which a fill cannot verify with (os_hash_algo: "
                                        "sha256, sha384 or sha512; an md5 goes in \"checksum\"); "
                                        "fix os_hash_algo in the sidecar");
      }
      if (!value.empty() && (!IsHex(value) || value.size() != DigestHexLength(algo))) {
        throw Error(Errc::kRefused, "sidecar " + p + ": os_hash_value is not a " + algo +
                                        " digest (" + std::to_string(DigestHexLength(algo)) +
                                        " hex digits)");
      }
    }
    if (const std::string md5 = str("checksum");
        !md5.empty() && (md5.size() != 32 || !IsHex(md5))) {
      throw Error(Errc::kRefused,
                  "sidecar " + p + ": checksum is not an md5 digest (32 hex digits)");
    }
    return j;
  }

  static size_t DigestHexLength(const std::string& algo) {
    util::Hasher h(algo);
    return h.HexDigest().size();
  }

  // The file's header format and digests as far as asked for, from the kept row when it
  // was computed from this very version of the file (same identity), else read from the
  // descriptor and kept. A file that changes while read is kCorrupt and nothing is kept.
  FileDigests Known(const std::string& image_id, const LocalFile& file, bool need_format,
                    bool need_hashes, bool may_defer = false) {
    struct stat st {};
    if (::fstat(file.fd(), &st) != 0) {
      throw Error(Errc::kSource, "image " + image_id + ": cannot stat " + file.name() + ": " +
                                     std::strerror(errno));
    }
    const std::string identity = util::FileIdentity(st);
    std::optional<FileDigests> kept = Lookup(image_id);
    // Any other identity is another version: a link added or dropped moves ctime as a
    // write with its mtime put back does, so even that is hashed again.
    if (!kept || kept->identity != identity) kept = FileDigests{identity, "", "", ""};
    const bool have_format = !need_format || !kept->disk_format.empty();
    const bool have_hashes = !need_hashes || (!kept->md5.empty() && !kept->sha512.empty());
    if (have_format && have_hashes) return *kept;
    if (!have_format) kept->disk_format = convert::DetectFdFormat(file.fd(), file.name());
    if (!have_hashes && may_defer) {
      kept->md5.clear();
      kept->sha512.clear();
      return *kept;  // not stored: nothing was learned but the format
    }
    if (!have_hashes) {
      util::Hasher md5("md5"), sha512("sha512");
      ReadAll(image_id, file,
              [&](std::span<const std::byte> d) {
                md5.Update(d);
                sha512.Update(d);
              },
              {});
      kept->md5 = md5.HexDigest();
      kept->sha512 = sha512.HexDigest();
    }
    // Kept only when nothing moved while it was read (ctime included): a write that
    // restored the size and mtime is another version, never labelled with these digests.
    struct stat after {};
    if (::fstat(file.fd(), &after) != 0 || util::FileIdentity(after) != identity) {
      throw Error(Errc::kCorrupt, "image " + image_id + ": file " + file.name() +
                                      " changed while it was read; retry once it is no longer "
                                      "being written");
    }
    // Kept once the clock has passed the file's times, so a rewrite from now on shows.
    kept->identity = util::SettledFileIdentity(st);
    Store(image_id, *kept);
    return *kept;
  }

  std::optional<FileDigests> Lookup(const std::string& image_id) {
    std::shared_ptr<DigestCache> cache;
    {
      std::lock_guard lock(mu_);
      cache = cache_;
      if (!cache) {
        auto it = kept_.find(image_id);
        if (it == kept_.end()) return std::nullopt;
        return it->second;
      }
    }
    return cache->Find(Location(), image_id);
  }

  void Store(const std::string& image_id, const FileDigests& d) {
    std::shared_ptr<DigestCache> cache;
    {
      std::lock_guard lock(mu_);
      cache = cache_;
      if (!cache) {
        kept_[image_id] = d;
        return;
      }
    }
    try {
      cache->Put(Location(), image_id, d);
    } catch (const Error& e) {
      // Only the next process's speed depends on it: the digests are right either way.
      logger_->warn("digests not kept image={} error=\"{}\"", image_id, e.what());
    }
  }

  void Forget(const std::string& image_id) {
    std::shared_ptr<DigestCache> cache;
    {
      std::lock_guard lock(mu_);
      kept_.erase(image_id);
      cache = cache_;
    }
    if (!cache) return;
    try {
      cache->Forget(Location(), image_id);
    } catch (const Error& e) {
      logger_->warn("digests not forgotten image={} error=\"{}\"", image_id, e.what());
    }
  }

  // The store's name in the kept rows: its absolute directory.
  const std::string& Location() const { return location_; }

  fs::path dir_;
  std::shared_ptr<spdlog::logger> logger_;
  std::mutex mu_;
  int dir_fd_ = -1;
  std::string location_;
  std::shared_ptr<DigestCache> cache_;       // the index's, when the engine gave one
  std::map<std::string, FileDigests> kept_;  // without one: this object's lifetime
};

}  // namespace

std::unique_ptr<Source> MakeFileSource(const FileSourceOptions& options,
                                       std::shared_ptr<spdlog::logger> logger) {
  return std::make_unique<FileSource>(options, std::move(logger));
}

}  // namespace cachemgr::source
