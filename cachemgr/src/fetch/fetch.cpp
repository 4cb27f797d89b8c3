#include "fetch/fetch.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "cachemgr/error.h"
#include "convert/format.h"
#include "convert/qcow2_reader.h"
#include "fetch/integrity.h"
#include "fetch/workdir.h"
#include "util/hash.h"

namespace cachemgr::fetch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::chrono::microseconds Since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t);
}

// Removes `dest` from the backend unless Commit() ran: whatever path failed (a writer
// that was finished, an adopted hard link, a mismatch found after the fact), nothing
// half-checked stays at dest.
class DestGuard {
 public:
  DestGuard(storage::Backend& backend, storage::ImageRef dest, spdlog::logger& log)
      : backend_(backend), dest_(std::move(dest)), log_(log) {}
  ~DestGuard() {
    if (committed_) return;
    if (backend_.Unresponsive()) {  // the fill's record names it: the pass removes it
      log_.warn("failed fetch left for the pass: the backend did not answer in time pool={} "
                "image={}", dest_.pool, dest_.name);
      return;
    }
    try {
      if (backend_.Exists(dest_)) backend_.Remove(dest_);
    } catch (const std::exception& e) {
      log_.error("cannot remove failed fetch pool={} image={} error=\"{}\"", dest_.pool,
                 dest_.name, e.what());
    }
  }
  void Commit() { committed_ = true; }

 private:
  storage::Backend& backend_;
  storage::ImageRef dest_;
  spdlog::logger& log_;
  bool committed_ = false;
};

// The staging files of one fill, in its private working directory (see workdir.h),
// which goes with them on every exit path.
class StagingFiles {
 public:
  StagingFiles(const fs::path& dir, const std::string& image_id, spdlog::logger& log)
      : work_(dir, image_id, &log),
        download_(work_.File("image.download")),
        raw_(work_.File("image.raw")) {}
  const fs::path& download() const { return download_; }
  const fs::path& raw() const { return raw_; }

 private:
  WorkDir work_;
  fs::path download_, raw_;
};

class File {
 public:
  File(const fs::path& path, int flags)
      : path_(path), fd_(::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, 0600)) {
    if (fd_ < 0) throw Error(Errc::kIo, "cannot open " + path.string() + ": " + std::strerror(errno));
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  void Write(std::span<const std::byte> data) {
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Error(Errc::kIo, "cannot write " + path_.string() + ": " + std::strerror(errno));
      }
      data = data.subspan(static_cast<size_t>(n));
    }
  }
  size_t Read(std::span<std::byte> out) {
    while (true) {
      ssize_t n = ::read(fd_, out.data(), out.size());
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) {
        throw Error(Errc::kIo, "cannot read " + path_.string() + ": " + std::strerror(errno));
      }
    }
  }
  int fd() const { return fd_; }
  size_t PRead(std::span<std::byte> out, uint64_t offset) {
    while (true) {
      ssize_t n = ::pread(fd_, out.data(), out.size(), static_cast<off_t>(offset));
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) {
        throw Error(Errc::kIo, "cannot read " + path_.string() + ": " + std::strerror(errno));
      }
    }
  }
  // Start of the next data at or after `offset` (`end` when only a hole is left). A
  // file system without SEEK_DATA reports everything as data.
  uint64_t NextData(uint64_t offset, uint64_t end) {
    off_t r = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
    if (r >= 0) return std::min<uint64_t>(static_cast<uint64_t>(r), end);
    return errno == ENXIO ? end : offset;
  }
  // End of the data that starts at `offset`.
  uint64_t NextHole(uint64_t offset, uint64_t end) {
    off_t r = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
    if (r > static_cast<off_t>(offset)) return std::min<uint64_t>(static_cast<uint64_t>(r), end);
    return end;
  }
  void Close() {
    if (fd_ >= 0 && ::close(fd_) != 0) {
      fd_ = -1;
      throw Error(Errc::kIo, "cannot close " + path_.string() + ": " + std::strerror(errno));
    }
    fd_ = -1;
  }

 private:
  fs::path path_;
  int fd_;
};

void CheckFreeSpace(const fs::path& dir, uint64_t need, const std::string& image_id,
                    const std::string& what) {
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) {
    throw Error(Errc::kIo, "cannot statvfs conversion dir " + dir.string() + ": " + std::strerror(errno));
  }
  uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (avail < need) {
    throw Error(Errc::kIo, "image " + image_id + ": conversion dir " + dir.string() + " has " +
                               std::to_string(avail) + " bytes free, " + what + " needs " +
                               std::to_string(need));
  }
}

struct Context {
  source::Source& source;
  const source::ImageMeta& meta;
  storage::Backend& backend;
  const storage::ImageRef& dest;
  const FetchOptions& options;
  spdlog::logger& log;
  FetchResult& result;
  std::shared_ptr<spdlog::logger> logger;
  source::DownloadBounds bounds;  // the declared size, else the configured maximum

  source::ProgressFn Progress(const std::string& stage) const {
    if (!options.progress) return {};
    return [this, stage](uint64_t done, uint64_t total) { options.progress(stage, done, total); };
  }
};

// Collects the first bytes so the header is checked before anything reaches the backend.
class HeaderGate {
 public:
  explicit HeaderGate(std::function<void(std::span<const std::byte>)> check)
      : check_(std::move(check)) {}
  // Returns the bytes that may pass now (possibly none).
  template <typename Out>
  void Pass(std::span<const std::byte> d, Out&& out) {
    if (done_) {
      out(d);
      return;
    }
    head_.insert(head_.end(), d.begin(), d.end());
    if (head_.size() >= convert::kHeaderBytes) Flush(out);
  }
  template <typename Out>
  void Flush(Out&& out) {
    if (done_) return;
    check_(head_);
    done_ = true;
    if (!head_.empty()) out(std::span<const std::byte>(head_));
    head_.clear();
    head_.shrink_to_fit();
  }

 private:
  std::function<void(std::span<const std::byte>)> check_;
  std::vector<std::byte> head_;
  bool done_ = false;
};

// Every byte of an opened source file, from its descriptor; kCorrupt when it changed
// while read.
void ReadLocal(const Context& c, const source::LocalFile& file, const source::Sink& sink) {
  std::vector<std::byte> buf(std::clamp<uint64_t>(file.size(), 4096, 4 << 20));
  uint64_t done = 0;
  auto progress = c.Progress("download");
  while (true) {
    ssize_t n = ::pread(file.fd(), buf.data(), buf.size(), static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      throw Error(Errc::kSource, "image " + c.meta.id + ": cannot read " + file.name() + ": " +
                                     std::strerror(errno));
    }
    if (n == 0) break;
    sink(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
    done += static_cast<uint64_t>(n);
    if (progress) progress(done, file.size());
  }
  file.RequireUnchanged(c.meta.id);
  if (done != file.size()) {
    throw Error(Errc::kCorrupt,
                "image " + c.meta.id + ": file " + file.name() + " changed while it was read");
  }
}

// Raw: source (or its opened file) -> hash -> backend writer, no temporary file.
void StreamRaw(Context& c, const source::LocalFile* local = nullptr) {
  if (!c.meta.size) {
    throw Error(Errc::kSource, "image " + c.meta.id + ": the source does not say its size");
  }
  const uint64_t size = *c.meta.size;
  Integrity integrity(c.meta, c.log);
  auto started = Clock::now();
  auto writer = c.backend.Create(c.dest, size);
  std::vector<std::byte> head_bytes, tail;  // the stream's first bytes and its last 512
  HeaderGate gate([&](std::span<const std::byte> head) {
    head_bytes.assign(head.begin(), head.end());
    std::string detected = convert::DetectFormat(head);
    c.result.detected_format = detected;
    convert::RequireFormatMatches(c.meta.id, c.meta.disk_format, detected);
  });
  auto append = [&](std::span<const std::byte> d) { writer->Append(d); };
  auto sink = [&](std::span<const std::byte> d) {
    integrity.Update(d);
    if (d.size() >= 512) {
      tail.assign(d.end() - 512, d.end());
    } else {
      tail.insert(tail.end(), d.begin(), d.end());
      if (tail.size() > 512) tail.erase(tail.begin(), tail.end() - 512);
    }
    if (integrity.bytes() > size) {
      throw Error(Errc::kCorrupt,
                  "image " + c.meta.id + ": download longer than its size " + std::to_string(size));
    }
    gate.Pass(d, append);
  };
  if (local) {
    ReadLocal(c, *local, sink);
  } else {
    c.source.Download(c.meta.id, c.bounds, sink, c.Progress("download"));
  }
  gate.Flush(append);
  // Formats known by a footer (a fixed VHD, a DMG) are told at the end, as DetectFdFormat
  // tells them from a file: before Finish, so that a refusal drops the image.
  if (integrity.bytes() >= 1024) {
    const std::string detected = convert::DetectFormat(head_bytes, tail);
    c.result.detected_format = detected;
    convert::RequireFormatMatches(c.meta.id, c.meta.disk_format, detected);
  }
  // Before Finish: a mismatch drops the writer, which removes the image.
  integrity.Verify(c.meta, c.result);
  writer->Finish();
  c.result.virtual_size = size;
  c.result.download = Since(started);
}

// File source + raw: the backend adopts the opened file (a reflink, or a hard link when
// configured) or, when it cannot, the bytes are streamed from the same descriptor. Either
// way they are hashed from what was made (the adopted image, or the stream) and the file
// is checked unchanged at the end.
void AdoptRaw(Context& c, const source::LocalFile& file) {
  // Head and tail (a footer names some formats), as any other fill of a file reads them.
  std::string detected = convert::DetectFdFormat(file.fd(), file.name());
  c.result.detected_format = detected;
  convert::RequireFormatMatches(c.meta.id, c.meta.disk_format, detected);
  auto started = Clock::now();
  if (!c.backend.AdoptShared(file.ProcPath(), c.dest)) {
    StreamRaw(c, &file);
    return;
  }
  c.result.adopted = true;
  c.result.import = Since(started);
  started = Clock::now();
  // The digests are of the adopted image itself, not of the source's file: a reflink is a
  // copy of the bytes the file held at that moment, and the file may be written after it
  // (and its mtime put back). (A hard link is the file itself: the same bytes either way.)
  Integrity integrity(c.meta, c.log);
  const auto reader = c.backend.Open(c.dest);
  std::vector<std::byte> buf(std::clamp<uint64_t>(reader->size(), 4096, 4 << 20));
  auto progress = c.Progress("download");
  uint64_t done = 0;
  while (const size_t n = reader->Read(done, buf)) {
    integrity.Update(std::span<const std::byte>(buf.data(), n));
    done += n;
    if (progress) progress(done, reader->size());
  }
  file.RequireUnchanged(c.meta.id);
  if (done != file.size()) {
    throw Error(Errc::kCorrupt, "image " + c.meta.id + ": file " + file.name() +
                                    " changed while it was adopted");
  }
  integrity.Verify(c.meta, c.result);
  c.result.virtual_size = done;
  c.result.download = Since(started);
}

// Hands an image's bytes, in order, to a new backend image: zeros as a count (the
// writer skips them), data read from a file. Finish() checks that exactly `size`
// bytes went in before the image is made visible.
class Feeder {
 public:
  Feeder(Context& c, uint64_t size, fs::path from)
      : c_(c),
        size_(size),
        from_(std::move(from)),
        writer_(c.backend.Create(c.dest, size)),
        buf_(4 << 20) {}

  void Zeros(uint64_t n) {
    if (done_ + n > size_) Changed();
    writer_->AppendZeros(n);
    done_ += n;
    if (c_.options.progress) c_.options.progress("import", done_, size_);
  }
  void Bytes(std::span<const std::byte> d) { Feed(d); }
  void Data(File& in, uint64_t offset, uint64_t n) {
    while (n > 0) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(buf_.size(), n));
      const size_t got = in.PRead(std::span(buf_.data(), want), offset);
      if (got == 0) Changed();  // shorter than it was
      Feed(std::span<const std::byte>(buf_.data(), got));
      offset += got;
      n -= got;
    }
  }
  void Finish() {
    if (done_ != size_) Changed();
    writer_->Finish();
  }

 private:
  void Feed(std::span<const std::byte> d) {
    if (done_ + d.size() > size_) Changed();
    writer_->Append(d);
    done_ += d.size();
    if (c_.options.progress) c_.options.progress("import", done_, size_);
  }
  [[noreturn]] void Changed() const {
    throw Error(Errc::kIo, "image " + c_.meta.id + ": file " + from_.string() +
                               " changed while it was imported");
  }

  Context& c_;
  uint64_t size_;
  fs::path from_;
  std::unique_ptr<storage::ImageWriter> writer_;
  std::vector<std::byte> buf_;
  uint64_t done_ = 0;
};

// The download into the staging file, hashed on the way and verified.
void DownloadVerified(Context& c, const StagingFiles& staging) {
  const uint64_t size = c.meta.size.value_or(0);
  auto started = Clock::now();
  Integrity integrity(c.meta, c.log);
  {
    File out(staging.download(), O_WRONLY | O_CREAT | O_EXCL);
    c.source.Download(
        c.meta.id, c.bounds,
        [&](std::span<const std::byte> d) {
          integrity.Update(d);
          if (c.meta.size && integrity.bytes() > size) {
            throw Error(Errc::kCorrupt, "image " + c.meta.id + ": download longer than its size " +
                                            std::to_string(size));
          }
          out.Write(d);
        },
        c.Progress("download"));
    out.Close();
  }
  integrity.Verify(c.meta, c.result);
  c.result.download = Since(started);
}

// The download's format and sizes, checked safe and intact before anything uses it.
convert::InspectResult InspectDownload(Context& c, const StagingFiles& staging) {
  if (c.options.progress) c.options.progress("convert", 0, 0);
  c.result.detected_format = convert::DetectFileFormat(staging.download());
  convert::InspectResult info = convert::Inspect(staging.download(), c.meta.disk_format, c.meta.id,
                                                 c.options.conversion, c.logger);
  // Nothing is ready until verified, with or without a checksum from the source.
  convert::CheckIntact(staging.download(), info.format, c.meta.id, c.options.conversion, c.logger);
  return info;
}

// A qcow2 whose clusters are stored plainly is read straight from the download: its map
// is the conversion, and no raw copy is written and read back. False when it is not one.
bool ImportPlainQcow2(Context& c, const StagingFiles& staging, const convert::InspectResult& info,
                      Clock::time_point convert_started) {
  auto extents = convert::MapPlainQcow2(staging.download(), info.virtual_size, c.meta.id,
                                        c.options.conversion, c.logger);
  if (!extents) return false;
  c.result.read_by = "map";
  c.result.convert = Since(convert_started);
  c.result.virtual_size = info.virtual_size;
  if (c.options.progress) c.options.progress("convert", info.virtual_size, info.virtual_size);
  auto started = Clock::now();
  File in(staging.download(), O_RDONLY);
  Feeder feed(c, info.virtual_size, staging.download());
  for (const auto& e : *extents) {
    if (e.data) {
      feed.Data(in, e.offset, e.length);
    } else {
      feed.Zeros(e.length);
    }
  }
  feed.Finish();
  c.result.import = Since(started);
  return true;
}

// A qcow2 that the map cannot read plainly (compressed clusters) read by this project's
// own reader of its tables straight from the download: clusters inflated on every core
// into the backend, no raw copy written and read back. False when the reader leaves the
// image to qemu-img convert (convert/qcow2_reader.h says which).
bool ImportQcow2ByReader(Context& c, const StagingFiles& staging,
                         const convert::InspectResult& info, Clock::time_point convert_started) {
  File in(staging.download(), O_RDONLY);
  if (auto why = convert::Qcow2ReaderRefuses(in.fd(), info.virtual_size); !why.empty()) {
    c.log.info("image {}: qcow2 left to qemu-img convert: {}", c.meta.id, why);
    return false;
  }
  c.result.read_by = "reader";
  c.result.convert = Since(convert_started);
  c.result.virtual_size = info.virtual_size;
  if (c.options.progress) c.options.progress("convert", info.virtual_size, info.virtual_size);
  const auto started = Clock::now();
  Feeder feed(c, info.virtual_size, staging.download());
  const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  convert::ReadQcow2Disk(in.fd(), info.virtual_size, c.meta.id,
                         {.zeros = [&](uint64_t n) { feed.Zeros(n); },
                          .data = [&](std::span<const std::byte> d) { feed.Bytes(d); }},
                         threads, std::chrono::seconds(c.options.conversion.timeout_s));
  feed.Finish();
  c.result.import = Since(started);
  return true;
}

// The raw file written by the conversion, into the backend: adopted whole when the
// backend can, else streamed with its holes handed over as counts.
void ImportRawFile(Context& c, const fs::path& raw, uint64_t raw_size) {
  auto started = Clock::now();
  if (!c.backend.Adopt(raw, c.dest)) {
    File in(raw, O_RDONLY);
    Feeder feed(c, raw_size, raw);
    // qemu-img leaves the zeros of a sparse image as holes in the raw file: they are
    // handed to the writer as a count instead of read.
    uint64_t pos = 0;
    while (pos < raw_size) {
      const uint64_t data = in.NextData(pos, raw_size);
      feed.Zeros(data - pos);
      if (data >= raw_size) break;
      const uint64_t hole = in.NextHole(data, raw_size);
      feed.Data(in, data, hole - data);
      pos = hole;
    }
    std::byte past_end{};
    if (in.PRead(std::span(&past_end, 1), raw_size) != 0) {
      throw Error(Errc::kIo, "image " + c.meta.id + ": converted file " + raw.string() +
                                 " changed while it was imported");
    }
    feed.Finish();
  }
  c.result.import = Since(started);
}

// Anything else: staging file -> inspect -> map (plain qcow2) or qemu-img convert ->
// import.
void ConvertAndImport(Context& c, const std::string& qemu_format) {
  const fs::path dir = c.options.conversion.dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(Errc::kIo, "cannot create conversion dir " + dir.string() + ": " + ec.message());
  CheckFreeSpace(dir, c.meta.size.value_or(0) + c.meta.virtual_size.value_or(0), c.meta.id,
                 "the download and its conversion");
  StagingFiles staging(dir, c.meta.id, c.log);

  DownloadVerified(c, staging);
  const auto convert_started = Clock::now();
  const convert::InspectResult info = InspectDownload(c, staging);
  if (c.options.before_import) c.options.before_import(info.virtual_size);
  if (qemu_format == "qcow2" && (ImportPlainQcow2(c, staging, info, convert_started) ||
                                 ImportQcow2ByReader(c, staging, info, convert_started))) {
    return;
  }

  // Anything else: converted to a raw file, which is imported.
  CheckFreeSpace(dir, info.virtual_size, c.meta.id, "the raw conversion");
  c.result.read_by = "qemu-img";
  convert::ConvertToRaw(staging.download(), qemu_format, staging.raw(), c.meta.id,
                        c.options.conversion, c.logger);
  fs::remove(staging.download(), ec);  // frees its space before the import
  c.result.convert = Since(convert_started);
  const uint64_t raw_size = fs::file_size(staging.raw());
  c.result.virtual_size = raw_size;
  if (c.options.progress) c.options.progress("convert", raw_size, raw_size);
  ImportRawFile(c, staging.raw(), raw_size);
}

}  // namespace

FetchResult FetchInto(source::Source& source, const source::ImageMeta& meta,
                      storage::Backend& backend, const storage::ImageRef& dest,
                      const FetchOptions& options, std::shared_ptr<spdlog::logger> logger) {
  if (!logger) logger = std::make_shared<spdlog::logger>("cachemgr-null");
  source::ValidateImageId(meta.id);
  source::RequireUsable(meta);
  // What the source claims is checked before anything is made: sizes are bounds, and an
  // image whose bytes cannot be verified is not fetched unless the operator allows it.
  const uint64_t max_virtual =
      static_cast<uint64_t>(options.conversion.max_virtual_size_gb * (1ull << 30));
  const uint64_t max_image = options.max_image_bytes ? options.max_image_bytes : max_virtual;
  source::RequireBounded(meta, {max_image, max_virtual});
  source::RequireVerifiable(meta, options.allow_unverified);
  const std::string qemu_format = convert::QemuFormat(meta.disk_format);
  if (qemu_format.empty()) {
    // Names the disk_format and what is supported.
    convert::RequireFormatMatches(meta.id, meta.disk_format, "raw");
  }
  if (backend.Exists(dest)) {
    throw Error(Errc::kAlreadyExists, "image " + meta.id + ": fetch target " + dest.pool + "/" +
                                          dest.name + " already exists");
  }

  FetchResult result;
  Context c{source, meta, backend, dest, options, *logger, result, logger, {meta.size, max_image}};
  DestGuard guard(backend, dest, *logger);
  auto started = Clock::now();
  try {
    if (qemu_format == "raw") {
      result.read_by = "raw";
      if (auto local = source.OpenLocal(meta.id)) {
        AdoptRaw(c, *local);
      } else {
        StreamRaw(c);
      }
    } else {
      ConvertAndImport(c, qemu_format);
    }
  } catch (const Error& e) {
    logger->warn("image fetch failed image={} pool={} dest={} code={} error=\"{}\"", meta.id,
                 dest.pool, dest.name, ErrcName(e.code()), e.what());
    throw;
  }
  RequireClaimedSize(meta, result);
  guard.Commit();
  logger->info(
      "image fetched image={} format={} read_by={} bytes={} virtual_size={} adopted={} "
      "download_ms={} convert_ms={} import_ms={} ms={}",
      meta.id, result.detected_format, result.read_by, result.bytes_downloaded,
      result.virtual_size, result.adopted, result.download.count() / 1000, result.convert.count() / 1000,
      result.import.count() / 1000,
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count());
  return result;
}

}  // namespace cachemgr::fetch
