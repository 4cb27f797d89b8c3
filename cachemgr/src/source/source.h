// source/source.h: where images come from (Glance v2 over HTTP, or a directory).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cachemgr/options.h"

namespace spdlog {
class logger;
}

namespace cachemgr::source {

// What the source says about an image (Glance v2 image fields).
struct ImageMeta {
  std::string id;
  std::string status;            // "active" is the only usable one
  std::string disk_format;       // raw | qcow2 | vmdk | vdi | vhd | vhdx | ...
  std::string container_format;  // must be "bare"
  std::optional<uint64_t> size;          // bytes of the stored file
  std::optional<uint64_t> virtual_size;  // bytes of the disk (may be absent in Glance)
  std::string checksum;          // md5 hex of the stored file (may be empty)
  std::string os_hash_algo;      // sha512 (Glance's default) | sha256 | ... (may be empty)
  std::string os_hash_value;     // hex
  // "algo:value" as the index and the entries' metadata keep it; "" without a value.
  std::string OsHash() const {
    return os_hash_value.empty() ? std::string() : os_hash_algo + ":" + os_hash_value;
  }
  std::string updated_at;        // ISO 8601 as the source gives it
  std::string direct_url;        // e.g. rbd://<fsid>/<pool>/<image>/<snap>
  std::vector<std::string> locations;  // every location url
  // DescribeForInstant left checksum and os_hash empty because the only digests there are
  // the file's own, not computed yet: whoever reads the file computes them.
  bool digests_deferred = false;
  // Fields the source sent that cannot be true ("size: -1 is not a byte count"): such an
  // image is refused before anything is made for it (RequireBounded).
  std::vector<std::string> invalid;
};

// What a download may bring: the source's declared size is a bound, not a fact.
struct DownloadBounds {
  std::optional<uint64_t> size;  // declared bytes: a longer or shorter body is kCorrupt
  uint64_t max_bytes = 0;        // with no declared size: more is kRefused; 0 = no bound
};

// A regular file of the source opened read-only, without following symlinks. Move-only;
// closes its descriptor.
class LocalFile {
 public:
  LocalFile(int fd, std::string name);
  LocalFile(LocalFile&& o) noexcept;
  LocalFile& operator=(LocalFile&& o) noexcept;
  LocalFile(const LocalFile&) = delete;
  LocalFile& operator=(const LocalFile&) = delete;
  ~LocalFile();

  int fd() const { return fd_; }
  const std::string& name() const { return name_; }  // for messages: dir/id
  // A path that reaches the open file itself (/proc/self/fd/N), for a program or a
  // linkat(AT_SYMLINK_FOLLOW); valid while this object lives.
  std::filesystem::path ProcPath() const;
  // kCorrupt naming the file when its size or mtime differ from when it was opened:
  // whatever was read from it may be a mix of two versions.
  void RequireUnchanged(const std::string& image_id) const;
  uint64_t size() const { return size_; }

 private:
  int fd_ = -1;
  std::string name_;
  uint64_t size_ = 0;
  int64_t mtime_ns_ = 0;
};

// What the file source learned from reading a whole image file, kept by the cache (the
// index) so that the next process asks a stat, not a hash. Keyed by the image store
// (`location`) and image id; valid only for the file version named by `identity`
// (util::FileIdentity).
struct FileDigests {
  std::string identity;
  std::string disk_format;  // read from the header; '' when not read
  std::string md5, sha512;  // '' when not computed
};
class DigestCache {
 public:
  virtual ~DigestCache() = default;
  // nullopt when nothing is kept; callers compare the identity themselves.
  virtual std::optional<FileDigests> Find(const std::string& location,
                                          const std::string& image_id) = 0;
  virtual void Put(const std::string& location, const std::string& image_id,
                   const FileDigests& digests) = 0;
  virtual void Forget(const std::string& location, const std::string& image_id) = 0;
};

// Receives downloaded bytes in order. Throwing aborts the download.
using Sink = std::function<void(std::span<const std::byte>)>;
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

class Source {
 public:
  virtual ~Source() = default;
  virtual std::string kind() const = 0;  // "glance" | "file"
  // kNotFound when the image does not exist; other codes for other failures. Does not
  // check status: callers decide (the engine requires "active").
  virtual ImageMeta Describe(const std::string& image_id) = 0;
  // Every active image.
  virtual std::vector<ImageMeta> ListActive() = 0;
  // The same, and in `refused` the ids of entries the source holds but refuses to
  // describe (a file source's symlink, FIFO, bad sidecar, or a file it may not read), so
  // that `prefill --all`
  // counts them as failures rather than leaving them out. A source that refuses nothing
  // while listing leaves `refused` alone.
  virtual std::vector<ImageMeta> ListActiveAndRefused(std::vector<std::string>* refused) {
    (void)refused;
    return ListActive();
  }
  // Streams the image's stored bytes into `sink`, from the first byte to the last
  // exactly once (retries resume where they stopped). Does not verify checksums.
  virtual uint64_t Download(const std::string& image_id, const Sink& sink,
                            const ProgressFn& progress = {}) = 0;
  // The same within `bounds`: the sink never sees a byte past the declared size (or
  // max_bytes), and a body of another length throws (kCorrupt; kRefused past max_bytes).
  // A source that can stall (HTTP) also derives its overall deadline from the bounds.
  virtual uint64_t Download(const std::string& image_id, const DownloadBounds& bounds,
                            const Sink& sink, const ProgressFn& progress = {});
  // Pools whose RBD images the source itself stores images in (Glance's rbd stores), the
  // only ones a direct clone may come from unless configured; empty when unknown.
  virtual std::vector<std::string> DirectPools() { return {}; }
  // The image's own file opened for reading, when the source has one (file source):
  // lets a backend reflink (or, when configured, hard-link) it instead of copying.
  // Everything is read from the descriptor, never by path again.
  virtual std::optional<LocalFile> OpenLocal(const std::string& image_id) = 0;
  // --- the instant miss (the image read in place while it is imported)
  // The image's file as a path every host sharing the cache reaches (file source: the
  // image directory's entry; nullopt for sources that have none, such as Glance).
  virtual std::optional<std::filesystem::path> SharedPath(const std::string& /*image_id*/) {
    return std::nullopt;
  }
  // Describe, without reading the whole image: a file source with no claimed digest
  // (no sidecar naming one) whose own digests are not kept yet leaves them empty and
  // sets digests_deferred. Others: Describe.
  virtual ImageMeta DescribeForInstant(const std::string& image_id) { return Describe(image_id); }
  // Keeps the digests the caller computed from `file` (file source: for that version of
  // the file only; a changed file is hashed again). Others ignore it.
  virtual void KeepDigests(const std::string& /*image_id*/, const LocalFile& /*file*/,
                           const std::string& /*md5*/, const std::string& /*sha512*/) {}
  // Bytes [offset, offset + out.size()) of the image's stored file, exactly: one Range
  // read (the relay that lets librbd read a Glance image in place). A short, long or
  // misplaced answer throws kSource; kSource too for a source that cannot (the default).
  virtual void ReadRange(const std::string& image_id, uint64_t offset, std::span<std::byte> out);
  // A cheap reachability check for `doctor` (authenticating first when the source
  // does); returns what was reached, throws on failure.
  virtual std::string Ping() = 0;
  // Where a source that computes digests keeps them across processes (file source);
  // others ignore it. Without one, digests are kept only while this object lives.
  virtual void SetDigestCache(std::shared_ptr<DigestCache> /*cache*/) {}
  // Every image the source lists, whatever its status, in as few requests as the source
  // allows (Glance: pages of its list API), for a pass that checks many entries at once;
  // an image absent from it must still be asked about alone (Describe). nullopt when
  // Describe is as cheap as a listing (file source: a stat).
  virtual std::optional<std::vector<ImageMeta>> ListForCheck() { return std::nullopt; }
  // Requests made to the source by this object so far (HTTP requests for Glance; 0 for
  // a source that makes none), for the pass's report and the bench.
  virtual uint64_t Requests() const { return 0; }
};

std::unique_ptr<Source> MakeGlanceSource(const GlanceSourceOptions& options,
                                         std::shared_ptr<spdlog::logger> logger);
std::unique_ptr<Source> MakeFileSource(const FileSourceOptions& options,
                                       std::shared_ptr<spdlog::logger> logger);
std::unique_ptr<Source> MakeSource(const SourceOptions& options,
                                   std::shared_ptr<spdlog::logger> logger);

// Parses rbd://<fsid>/<pool>/<image>/<snap>; nullopt for anything else.
struct RbdLocation {
  std::string fsid, pool, image, snap;
};
std::optional<RbdLocation> ParseRbdLocation(const std::string& url);

// Throws kInvalidArgument unless `id` can safely name an image in a URL or a file name:
// [A-Za-z0-9._-], 1..200 chars, not starting with '.' or '-'.
void ValidateImageId(const std::string& id);

// Throws unless `meta` describes an image that can be fetched: status "active" (deleted,
// pending_delete and killed images are kNotFound; queued, saving, deactivated and the
// rest kRefused), container_format "bare" or empty (kRefused).
void RequireUsable(const ImageMeta& meta);

// Limits on what a source may claim about an image.
struct MetaLimits {
  uint64_t max_image_bytes = 0;    // stored size (source.max_image_gb); 0 = none
  uint64_t max_virtual_bytes = 0;  // disk size (conversion.max_virtual_size_gb); 0 = none
};
// Throws kRefused naming the image and the field unless the sizes the source gave are
// plausible: no invalid field, size and virtual_size within `limits`.
void RequireBounded(const ImageMeta& meta, const MetaLimits& limits);

// The digest a fetch can check: os_hash with a known algorithm (sha256, sha384, sha512),
// else the md5 checksum; nullopt when there is none.
struct Digest {
  std::string algo, value;
};
std::optional<Digest> CheckableDigest(const ImageMeta& meta);
// Throws kRefused unless the image has a checkable digest or `allow_unverified`.
void RequireVerifiable(const ImageMeta& meta, bool allow_unverified);

}  // namespace cachemgr::source
