// storage/local/local_qcow2_overlay.cpp: see local_qcow2_overlay.h. Field offsets and
// rules are those of qemu's docs/interop/qcow2.txt (version 3, 112-byte header).
#include "storage/local/local_qcow2_overlay.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "cachemgr/error.h"
#include "storage/local/local_files.h"

namespace cachemgr::storage {

namespace {

constexpr uint32_t kMinClusterBits = 9;        // qemu's MIN_CLUSTER_BITS
constexpr uint32_t kMaxClusterBits = 21;       // qemu's MAX_CLUSTER_BITS
constexpr uint64_t kMaxL1Bytes = 32ULL << 20;  // qemu's QCOW_MAX_L1_SIZE
constexpr uint64_t kMaxSize = 1ULL << 62;
constexpr uint32_t kHeaderLength = 112;  // v3 with the compression type byte, as qemu 5.1+
constexpr uint32_t kRefcountOrder = 4;   // 16-bit refcounts, qemu's default
constexpr uint32_t kBackingFormatExt = 0xE2792ACA;
constexpr size_t kMaxBackingName = 1023;

uint64_t CeilDiv(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }
uint64_t Align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

void PutBe16(std::string& s, size_t at, uint16_t v) {
  s[at] = static_cast<char>(v >> 8);
  s[at + 1] = static_cast<char>(v);
}
void PutBe32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>(v >> (24 - 8 * i));
}
void PutBe64(std::string& s, size_t at, uint64_t v) {
  PutBe32(s, at, static_cast<uint32_t>(v >> 32));
  PutBe32(s, at + 4, static_cast<uint32_t>(v));
}

[[noreturn]] void Invalid(const std::string& what) {
  throw Error(Errc::kInvalidArgument, "qcow2 overlay: " + what);
}

}  // namespace

Qcow2OverlayLayout PlanQcow2Overlay(uint64_t size, uint32_t cluster_bits) {
  if (cluster_bits < kMinClusterBits || cluster_bits > kMaxClusterBits)
    Invalid("cluster_bits " + std::to_string(cluster_bits) + " is outside 9..21");
  if (size > kMaxSize) Invalid("virtual size " + std::to_string(size) + " is too large");
  Qcow2OverlayLayout l;
  l.cluster_size = uint64_t{1} << cluster_bits;
  // qemu keeps the virtual size in whole 512-byte sectors and rounds a request up.
  l.size = CeilDiv(size, 512) * 512;
  const uint64_t l2_entries = l.cluster_size / 8;
  const uint64_t l1_size = CeilDiv(l.size, l.cluster_size * l2_entries);
  if (l1_size * 8 > kMaxL1Bytes)
    Invalid("virtual size " + std::to_string(size) + " needs an L1 table of " +
            std::to_string(l1_size * 8) + " bytes with " + std::to_string(l.cluster_size) +
            "-byte clusters (qemu's limit is 32 MiB)");
  l.l1_size = static_cast<uint32_t>(l1_size);
  const uint64_t l1_clusters = CeilDiv(l1_size * 8, l.cluster_size);
  // The refcount blocks count themselves and the table that points at them: grow both
  // until they cover every metadata cluster.
  const uint64_t per_block = l.cluster_size * 8 / (1U << kRefcountOrder);
  uint64_t table = 1;
  uint64_t blocks = 1;
  for (;;) {
    const uint64_t total = 1 + table + blocks + l1_clusters;
    const uint64_t need_blocks = CeilDiv(total, per_block);
    const uint64_t need_table = CeilDiv(need_blocks * 8, l.cluster_size);
    if (need_blocks <= blocks && need_table <= table) break;
    blocks = std::max(blocks, need_blocks);
    table = std::max(table, need_table);
  }
  l.refcount_table_offset = l.cluster_size;
  l.refcount_table_clusters = static_cast<uint32_t>(table);
  l.refcount_blocks_offset = l.refcount_table_offset + table * l.cluster_size;
  l.refcount_blocks = static_cast<uint32_t>(blocks);
  const uint64_t l1_offset = l.refcount_blocks_offset + blocks * l.cluster_size;
  l.metadata_clusters = 1 + table + blocks + l1_clusters;
  if (l1_size > 0) {
    l.l1_table_offset = l1_offset;
    l.file_size = l1_offset + l1_size * 8;
  } else {
    l.file_size = l1_offset;
  }
  return l;
}

std::vector<std::pair<uint64_t, std::string>> Qcow2OverlayBytes(const Qcow2OverlayLayout& l,
                                                                const std::string& backing,
                                                                const std::string& backing_format) {
  if (backing_format != "raw" && backing_format != "qcow2")
    Invalid("backing format '" + backing_format + "' is neither raw nor qcow2");
  if (backing.empty() || backing.size() > kMaxBackingName)
    Invalid("backing file name of " + std::to_string(backing.size()) +
            " bytes (qemu takes 1 to 1023)");
  if (backing.find('\0') != std::string::npos) Invalid("backing file name holds a NUL byte");
  const uint64_t format_ext_end = kHeaderLength + 8 + Align8(backing_format.size());
  const uint64_t name_offset = format_ext_end + 8;  // after the end-of-extensions marker
  if (name_offset + backing.size() > l.cluster_size)
    Invalid("backing file name " + backing + " does not fit in a " +
            std::to_string(l.cluster_size) + "-byte first cluster");

  std::string header(name_offset + backing.size(), '\0');
  header.replace(0, 4, "QFI\xfb", 4);
  PutBe32(header, 4, 3);  // version
  PutBe64(header, 8, name_offset);
  PutBe32(header, 16, static_cast<uint32_t>(backing.size()));
  uint32_t cluster_bits = 0;
  while ((uint64_t{1} << cluster_bits) < l.cluster_size) ++cluster_bits;
  PutBe32(header, 20, cluster_bits);
  PutBe64(header, 24, l.size);
  // 32 crypt_method: none.
  PutBe32(header, 36, l.l1_size);
  PutBe64(header, 40, l.l1_table_offset);
  PutBe64(header, 48, l.refcount_table_offset);
  PutBe32(header, 56, l.refcount_table_clusters);
  // 60 nb_snapshots, 64 snapshots_offset, 72..95 feature bits: all zero (no dirty bit,
  // no lazy refcounts, no external data file, no extended L2).
  PutBe32(header, 96, kRefcountOrder);
  PutBe32(header, 100, kHeaderLength);
  // 104 compression_type: zlib (0); 105..111 padding.
  PutBe32(header, kHeaderLength, kBackingFormatExt);
  PutBe32(header, kHeaderLength + 4, static_cast<uint32_t>(backing_format.size()));
  header.replace(kHeaderLength + 8, backing_format.size(), backing_format);
  // format_ext_end: the end-of-extensions marker (type 0, length 0), already zero.
  header.replace(name_offset, backing.size(), backing);

  std::vector<std::pair<uint64_t, std::string>> out;
  out.emplace_back(0, std::move(header));
  std::string table(uint64_t{l.refcount_blocks} * 8, '\0');
  for (uint32_t b = 0; b < l.refcount_blocks; ++b)
    PutBe64(table, size_t{b} * 8, l.refcount_blocks_offset + uint64_t{b} * l.cluster_size);
  out.emplace_back(l.refcount_table_offset, std::move(table));
  // Every metadata cluster is used once; the clusters are the first ones in the file.
  const uint64_t per_block = l.cluster_size / 2;
  for (uint32_t b = 0; b < l.refcount_blocks; ++b) {
    const uint64_t first = uint64_t{b} * per_block;
    const uint64_t count = std::min(per_block, l.metadata_clusters - first);
    std::string block(count * 2, '\0');
    for (uint64_t i = 0; i < count; ++i) PutBe16(block, i * 2, 1);
    out.emplace_back(l.refcount_blocks_offset + uint64_t{b} * l.cluster_size, std::move(block));
  }
  return out;
}

void WriteQcow2Overlay(int fd, const std::filesystem::path& path, uint64_t size,
                       const std::string& backing, const std::string& backing_format,
                       uint32_t cluster_bits) {
  const auto layout = PlanQcow2Overlay(size, cluster_bits);
  const auto pieces = Qcow2OverlayBytes(layout, backing, backing_format);
  // The L1 table and the rest are zeros: a sparse length, as qemu-img leaves them.
  if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(layout.file_size)) != 0)
    FailErrno("cannot size", path, errno);
  for (const auto& [offset, bytes] : pieces)
    PwriteAll(fd, bytes.data(), bytes.size(), offset, path);
}

}  // namespace cachemgr::storage
