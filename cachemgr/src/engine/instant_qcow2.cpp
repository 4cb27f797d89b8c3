// The qcow2 side of the instant miss (instant_qcow2.h).
//
// A Glance qcow2 is checked before any byte of it is served, as a fill checks the file it
// downloaded, but without its data: the header, the L1 table, every L2 table it points
// at, the refcount table and every refcount block are fetched by Range reads and written
// at their own offsets into a sparse file of the image's size. qemu-img then reads that
// file as it would read the image's (every table there, every data cluster a hole), so
// the fill's own checks run unchanged. Anything the tables alone cannot settle (a bitmap
// directory, a table past the end) fails those checks and makes the miss a normal one,
// which checks the whole file.
#include "engine/instant_qcow2.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "cachemgr/error.h"
#include "fetch/workdir.h"
#include "util/byte_order.h"
#include "util/hash.h"
#include "util/unique_fd.h"

namespace cachemgr::engine {

namespace {

constexpr size_t kDigestReadBytes = 4 << 20;
// The tables fetched for one image, at most: 64 KiB clusters hold a 40 GiB disk's L2
// tables in 5 MiB; an image that needs more is a normal miss.
constexpr uint64_t kMaxTableBytes = 64ull << 20;
// ... and in at most this many Range reads (small clusters mean many small tables).
constexpr uint64_t kMaxTableReads = 4096;
// The one name a working dir holds besides its lock (fetch/workdir.cpp sweeps it).
constexpr const char* kFileName = "image.download";
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // L1, L2 and refcount entries
constexpr uint64_t kCompressedBit = 1ull << 62;           // an L2 entry of another layout

util::UniqueFd CreatePrivate(const std::filesystem::path& path, const std::string& image_id) {
  util::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    throw Error(Errc::kIo, "image " + image_id + ": cannot create " + path.string() + ": " +
                               std::strerror(errno));
  }
  return fd;
}

void WriteAll(int fd, const std::byte* data, size_t len, uint64_t offset, const std::string& what) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pwrite(fd, data + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(Errc::kIo, "cannot write " + what + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

// Fetches the tables of a qcow2 whose first bytes are `head` into `tables` (offset ->
// bytes), each within `size`. "" or why they cannot be fetched.
std::string TableRanges(source::Source& source, const std::string& image_id,
                        const std::vector<std::byte>& head, uint64_t size,
                        std::map<uint64_t, std::vector<std::byte>>* tables) {
  const uint32_t cluster_bits = util::LoadBe32(head.data() + 20);
  if (cluster_bits < 9 || cluster_bits > 21) {
    return "its cluster size 2^" + std::to_string(cluster_bits) + " is not qemu's";
  }
  const uint64_t cluster = 1ull << cluster_bits;
  uint64_t fetched = 0;
  auto fetch = [&](uint64_t offset, uint64_t len, const char* what) -> std::string {
    if (len == 0 || tables->count(offset)) return "";
    if (offset > size || len > size - offset) {
      return std::string("its ") + what + " lies past the end of the file";
    }
    fetched += len;
    if (fetched > kMaxTableBytes) {
      return "its tables are over " + std::to_string(kMaxTableBytes >> 20) + " MiB";
    }
    if (tables->size() >= kMaxTableReads) {
      return "its tables take over " + std::to_string(kMaxTableReads) + " reads (clusters of " +
             std::to_string(cluster) + " bytes)";
    }
    std::vector<std::byte> bytes(static_cast<size_t>(len));
    source.ReadRange(image_id, offset, bytes);
    (*tables)[offset] = std::move(bytes);
    return "";
  };
  auto entries = [](const std::vector<std::byte>& table) {
    std::vector<uint64_t> out;
    for (size_t i = 0; i + 8 <= table.size(); i += 8) {
      if (const uint64_t off = util::LoadBe64(table.data() + i) & kOffsetMask; off != 0) {
        out.push_back(off);
      }
    }
    return out;
  };
  // The whole first cluster (header extensions live there), read again: the tables are
  // found from the header qemu will read.
  if (auto why = fetch(0, std::min(cluster, size), "header"); !why.empty()) return why;
  const auto& first = (*tables)[0];
  if (first.size() < head.size() || !std::equal(head.begin(), head.end(), first.begin())) {
    return "Glance served two different headers for it";
  }
  const auto* h = first.data();
  const uint64_t l1_offset = util::LoadBe64(h + 40);
  const uint64_t l1_bytes = uint64_t{util::LoadBe32(h + 36)} * 8;
  if (auto why = fetch(l1_offset, l1_bytes, "L1 table"); !why.empty()) return why;
  const uint64_t refcount_offset = util::LoadBe64(h + 48);
  const uint64_t refcount_bytes = uint64_t{util::LoadBe32(h + 56)} * cluster;
  if (auto why = fetch(refcount_offset, refcount_bytes, "refcount table"); !why.empty()) return why;
  const auto l2s = l1_bytes != 0 ? entries((*tables)[l1_offset]) : std::vector<uint64_t>{};
  for (uint64_t l2 : l2s) {
    if (auto why = fetch(l2, cluster, "L2 table"); !why.empty()) return why;
    // Each cluster's kind, read from the table itself: qemu-img map, on this file whose
    // data clusters are all holes, calls every one of them zero.
    const auto& table = (*tables)[l2];
    for (size_t i = 0; i + 8 <= table.size(); i += 8) {
      const uint64_t entry = util::LoadBe64(table.data() + i);
      const uint64_t data = entry & kOffsetMask;
      if ((entry & kCompressedBit) != 0) {
        return "the qcow2 image has compressed clusters (librbd reads plain ones)";
      }
      if ((entry & 1) != 0 && data != 0) {
        return "the qcow2 image has zeroed clusters that still point at data (librbd 16 would "
               "read the data)";
      }
      if (data != 0 && (data > size || cluster > size - data)) {
        return "a data cluster of the qcow2 image lies past the end of the file";
      }
    }
  }
  const auto blocks =
      refcount_bytes != 0 ? entries((*tables)[refcount_offset]) : std::vector<uint64_t>{};
  for (uint64_t block : blocks) {
    if (auto why = fetch(block, cluster, "refcount block"); !why.empty()) return why;
  }
  return "";
}

}  // namespace

std::string Qcow2Unsupported(int fd) {
  unsigned char h[104] = {};
  const ssize_t n = ::pread(fd, h, sizeof h, 0);
  if (n < 72) return "its qcow2 header is short";
  const uint32_t version = util::LoadBe32(h + 4);
  if (version != 2 && version != 3) return "qcow2 version " + std::to_string(version);
  if (util::LoadBe32(h + 32) != 0) return "the qcow2 image is encrypted";
  if (const uint32_t snaps = util::LoadBe32(h + 60); snaps != 0) {
    return "the qcow2 image has " + std::to_string(snaps) + " internal snapshot(s)";
  }
  if (version == 3) {
    if (n < 80) return "its qcow2 v3 header is short";
    if (const uint64_t incompatible = util::LoadBe64(h + 72); incompatible != 0) {
      return "the qcow2 image has incompatible features " + std::to_string(incompatible) +
             " (dirty, corrupt, external data, zstd or extended L2)";
    }
  }
  return "";
}

std::string GuestDigest(int fd, const std::vector<convert::Extent>& extents,
                        const std::string& what, const std::string& algo) {
  util::Hasher hasher(algo);
  std::vector<std::byte> buf(kDigestReadBytes);
  for (const auto& e : extents) {
    uint64_t done = 0;
    while (done < e.length) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), e.length - done));
      if (!e.data) {
        std::fill(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(want), std::byte{0});
        hasher.Update(std::span<const std::byte>(buf.data(), want));
        done += want;
        continue;
      }
      const ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(e.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(Errc::kSource, "cannot read " + what + " by its qcow2 map");
      hasher.Update(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
      done += static_cast<uint64_t>(n);
    }
  }
  return hasher.HexDigest();
}

RelayedQcow2 CheckRelayedQcow2(source::Source& source, const source::ImageMeta& meta,
                               const ConversionOptions& options,
                               const std::shared_ptr<spdlog::logger>& log) {
  RelayedQcow2 out;
  const uint64_t size = *meta.size;
  std::vector<std::byte> head(static_cast<size_t>(std::min<uint64_t>(size, 104)));
  source.ReadRange(meta.id, 0, head);
  if (head.size() < 72) {
    out.why_not = "its qcow2 header is short";
    return out;
  }
  // The disk's size as the header gives it, before any table is read: over the limit is
  // refused as a fill refuses it; librbd imports whole 512-byte sectors only.
  const uint64_t disk = util::LoadBe64(head.data() + 24);
  const auto max_virtual = static_cast<uint64_t>(options.max_virtual_size_gb * (1ull << 30));
  if (max_virtual > 0 && disk > max_virtual) {
    throw Error(Errc::kRefused, "image " + meta.id + ": its disk of " + std::to_string(disk) +
                                    " bytes is over conversion.max_virtual_size_gb");
  }
  if (disk == 0 || disk % 512 != 0) {
    out.why_not = "its disk of " + std::to_string(disk) + " bytes is not whole 512-byte sectors";
    return out;
  }
  // The import's check downloads the whole file here: room for it now, or a normal miss
  // (which needs that room too) says what is missing.
  struct statvfs vfs {};
  if (::statvfs(options.dir.c_str(), &vfs) == 0 &&
      static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < size) {
    out.why_not = "conversion.dir " + options.dir + " has no room for the file (" +
                  std::to_string(size) + " bytes) that the import's check downloads";
    return out;
  }
  std::map<uint64_t, std::vector<std::byte>> tables;
  if (auto why = TableRanges(source, meta.id, head, size, &tables); !why.empty()) {
    out.why_not = why;
    return out;
  }
  fetch::WorkDir dir(options.dir, meta.id, log.get());
  const auto path = dir.File(kFileName);
  auto fd = CreatePrivate(path, meta.id);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    throw Error(Errc::kIo, "image " + meta.id + ": cannot size " + path.string() + ": " +
                               std::strerror(errno));
  }
  for (const auto& [offset, bytes] : tables) {
    WriteAll(fd.get(), bytes.data(), bytes.size(), offset, path.string());
  }
  if (auto why = Qcow2Unsupported(fd.get()); !why.empty()) {
    out.why_not = why;
    return out;
  }
  try {
    // What qemu refuses or finds corrupt on this file of tables alone (a backing file, a
    // bitmap directory it did not get) is left to a normal miss, which checks the whole
    // file and refuses what a fill refuses.
    const auto inspected = convert::Inspect(path, "qcow2", meta.id, options, log);
    convert::CheckIntact(path, inspected.format, meta.id, options, log);
    const auto extents = convert::MapPlainQcow2(path, inspected.virtual_size, meta.id, options, log);
    if (!extents) {
      out.why_not = "the qcow2 image has compressed or encrypted clusters (librbd reads plain ones)";
      return out;
    }
    // (The extents' zero_over_data is not read here: on this file every data cluster is a
    // hole. TableRanges read the zero flags from the L2 tables.)
    if (meta.virtual_size && *meta.virtual_size != inspected.virtual_size) {
      out.why_not = "Glance's virtual_size " + std::to_string(*meta.virtual_size) +
                    " is not the qcow2 disk's " + std::to_string(inspected.virtual_size);
      return out;
    }
    out.virtual_size = inspected.virtual_size;
  } catch (const Error& e) {
    if (e.code() != Errc::kCorrupt && e.code() != Errc::kRefused) throw;
    out.why_not = std::string("its tables alone do not pass the checks (") + e.what() + ")";
  }
  return out;
}

FetchedQcow2 FetchRelayedQcow2(source::Source& source, const std::string& image_id, uint64_t size,
                               const std::vector<std::string>& algos,
                               const ConversionOptions& options,
                               const std::shared_ptr<spdlog::logger>& log,
                               const std::function<void(uint64_t, uint64_t)>& progress) {
  FetchedQcow2 out;
  fetch::WorkDir dir(options.dir, image_id, log.get());
  const auto path = dir.File(kFileName);
  auto fd = CreatePrivate(path, image_id);
  util::ParallelHasher hasher(algos);
  uint64_t written = 0;
  source::DownloadBounds bounds;
  bounds.size = size;
  source.Download(
      image_id, bounds,
      [&](std::span<const std::byte> data) {
        hasher.Update(data);
        WriteAll(fd.get(), data.data(), data.size(), written, path.string());
        written += data.size();
      },
      [&](uint64_t done, uint64_t total) {
        if (progress) progress(done, total);
      });
  out.digests = hasher.Finish();
  try {
    const auto inspected = convert::Inspect(path, "qcow2", image_id, options, log);
    const auto extents = convert::MapPlainQcow2(path, inspected.virtual_size, image_id, options, log);
    if (!extents) {
      out.map_error = "the qcow2 file Glance serves now has compressed or encrypted clusters";
    } else {
      out.guest_md5 = GuestDigest(fd.get(), *extents, path.string(), kGuestAlgo);
    }
  } catch (const Error& e) {
    if (e.code() != Errc::kRefused && e.code() != Errc::kCorrupt) throw;
    out.map_error = std::string("the qcow2 file Glance serves now cannot be read by its map (") +
                    e.what() + ")";
  }
  return out;
}

}  // namespace cachemgr::engine
