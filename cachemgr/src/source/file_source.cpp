// A directory of image files named by image id (Glance's file store, an NFS image pool).
//
// An optional sidecar <id>.json ({"disk_format", "checksum", "os_hash_algo",
// "os_hash_value", "virtual_size", "container_format"}) says what the image is meant to
// be; without one the format is read from the header and, when it names no digest, the
// checksums are computed from the file (and remembered while its size and mtime stay
// the same).
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <vector>

#include "cachemgr/error.h"
#include "convert/format.h"
#include "source/source.h"
#include "util/hash.h"

namespace cachemgr::source {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kSidecarSuffix = ".json";

std::string IsoTime(const struct timespec& ts) {
  struct tm tm {};
  gmtime_r(&ts.tv_sec, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

class FileSource final : public Source {
 public:
  FileSource(const FileSourceOptions& options, std::shared_ptr<spdlog::logger> logger)
      : dir_(options.dir), logger_(std::move(logger)) {
    if (!logger_) logger_ = std::make_shared<spdlog::logger>("cachemgr-null");
  }

  std::string kind() const override { return "file"; }

  ImageMeta Describe(const std::string& image_id) override {
    ValidateImageId(image_id);
    fs::path path = dir_ / image_id;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) {
        throw Error(Errc::kNotFound, "image " + image_id + ": no file " + path.string());
      }
      throw Error(Errc::kSource, "image " + image_id + ": cannot stat " + path.string() + ": " +
                                     std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
      throw Error(Errc::kSource, "image " + image_id + ": " + path.string() + " is not a regular file");
    }
    ImageMeta m;
    m.id = image_id;
    m.status = "active";
    m.container_format = "bare";
    m.size = static_cast<uint64_t>(st.st_size);
    m.updated_at = IsoTime(st.st_mtim);
    m.direct_url = "file://" + fs::absolute(path).string();
    m.locations.push_back(m.direct_url);

    json sidecar = ReadSidecar(image_id);
    auto str = [&](const char* key) {
      auto it = sidecar.find(key);
      return it != sidecar.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    m.disk_format = str("disk_format");
    if (m.disk_format.empty()) {
      std::string detected = convert::DetectFileFormat(path);
      m.disk_format = detected == "vpc" ? "vhd" : detected;
    }
    if (std::string c = str("container_format"); !c.empty()) m.container_format = c;
    if (auto it = sidecar.find("virtual_size"); it != sidecar.end() && it->is_number_integer()) {
      m.virtual_size = it->get<uint64_t>();
    } else if (m.disk_format == "raw") {
      m.virtual_size = m.size;
    }
    m.checksum = str("checksum");
    m.os_hash_algo = str("os_hash_algo");
    m.os_hash_value = str("os_hash_value");
    // A sidecar that names a digest is the claim checked at fetch; the file's own digests
    // stand in only when it names none (else a computed os_hash would always match and
    // a wrong md5 claim would go unchecked).
    if (m.checksum.empty() && m.os_hash_value.empty()) {
      Hashes h = ComputedHashes(image_id, st);
      if (m.checksum.empty()) m.checksum = h.md5;
      if (m.os_hash_value.empty()) {
        m.os_hash_algo = "sha512";
        m.os_hash_value = h.sha512;
      }
    }
    return m;
  }

  std::vector<ImageMeta> ListActive() override {
    std::vector<ImageMeta> out;
    std::error_code ec;
    fs::directory_iterator it(dir_, ec);
    if (ec) throw Error(Errc::kSource, "cannot list image directory " + dir_.string() + ": " + ec.message());
    for (const auto& entry : it) {
      std::string name = entry.path().filename().string();
      if (name.size() > 5 && name.ends_with(kSidecarSuffix)) continue;
      if (!entry.is_regular_file(ec)) continue;
      try {
        ValidateImageId(name);
      } catch (const Error&) {
        continue;  // not an image file (a lock, a dotfile, a name with spaces)
      }
      try {
        out.push_back(Describe(name));
      } catch (const Error& e) {
        if (e.code() != Errc::kNotFound) throw;  // removed while listing
      }
    }
    return out;
  }

  uint64_t Download(const std::string& image_id, const Sink& sink,
                    const ProgressFn& progress) override {
    ValidateImageId(image_id);
    fs::path path = dir_ / image_id;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) throw Error(Errc::kNotFound, "image " + image_id + ": no file " + path.string());
      throw Error(Errc::kSource, "image " + image_id + ": cannot open " + path.string() + ": " +
                                     std::strerror(errno));
    }
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    ::fstat(fd, &st);
    uint64_t total = static_cast<uint64_t>(st.st_size);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    std::vector<std::byte> buf(4 << 20);
    uint64_t done = 0;
    while (true) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Error(Errc::kSource, "image " + image_id + ": cannot read " + path.string() + ": " +
                                       std::strerror(errno));
      }
      if (n == 0) break;
      sink(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
      done += static_cast<uint64_t>(n);
      if (progress) progress(done, total);
    }
    return done;
  }

  std::optional<fs::path> LocalPath(const std::string& image_id) override {
    ValidateImageId(image_id);
    fs::path path = dir_ / image_id;
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return std::nullopt;
    return fs::absolute(path);
  }

  void Ping() override {
    if (::access(dir_.c_str(), R_OK | X_OK) != 0) {
      throw Error(Errc::kSource, "image directory " + dir_.string() + " is not readable: " +
                                     std::strerror(errno));
    }
  }

 private:
  struct Hashes {
    int64_t size = -1;
    int64_t mtime_ns = -1;
    std::string md5, sha512;
  };

  json ReadSidecar(const std::string& image_id) {
    fs::path p = dir_ / (image_id + kSidecarSuffix);
    std::ifstream in(p);
    if (!in) return json::object();
    try {
      json j = json::parse(in);
      if (!j.is_object()) throw Error(Errc::kSource, "sidecar " + p.string() + " is not a JSON object");
      return j;
    } catch (const json::exception& e) {
      throw Error(Errc::kSource, "sidecar " + p.string() + " is not valid JSON: " + e.what());
    }
  }

  Hashes ComputedHashes(const std::string& image_id, const struct stat& st) {
    int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    {
      std::lock_guard lock(mu_);
      auto it = hashes_.find(image_id);
      if (it != hashes_.end() && it->second.size == st.st_size && it->second.mtime_ns == mtime_ns) {
        return it->second;
      }
    }
    util::Hasher md5("md5"), sha512("sha512");
    Download(image_id, [&](std::span<const std::byte> d) {
      md5.Update(d);
      sha512.Update(d);
    }, {});
    Hashes h{st.st_size, mtime_ns, md5.HexDigest(), sha512.HexDigest()};
    std::lock_guard lock(mu_);
    hashes_[image_id] = h;
    return h;
  }

  fs::path dir_;
  std::shared_ptr<spdlog::logger> logger_;
  std::mutex mu_;
  std::map<std::string, Hashes> hashes_;
};

}  // namespace

std::unique_ptr<Source> MakeFileSource(const FileSourceOptions& options,
                                       std::shared_ptr<spdlog::logger> logger) {
  return std::make_unique<FileSource>(options, std::move(logger));
}

}  // namespace cachemgr::source
