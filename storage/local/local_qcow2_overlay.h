// storage/local/local_qcow2_overlay.h: writing an empty qcow2 v3 overlay of a backing
// file directly (header, backing format extension, backing file name, refcount table and
// blocks, a zeroed L1 table), as `qemu-img create -f qcow2 -F <fmt> -b <file>` does, but
// without starting a process: a clone is most of a local cache hit, and qemu-img's
// start-up was most of the clone.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace cachemgr::storage {

// qemu-img's default cluster size (64 KiB) as a shift.
constexpr uint32_t kQcow2DefaultClusterBits = 16;

// Where an empty overlay keeps its metadata; every offset is in bytes in the file.
struct Qcow2OverlayLayout {
  uint64_t cluster_size = 0;
  uint64_t size = 0;                   // virtual size: the request rounded up to 512 bytes
  uint64_t refcount_table_offset = 0;  // cluster 1
  uint32_t refcount_table_clusters = 0;
  uint64_t refcount_blocks_offset = 0;  // right after the table
  uint32_t refcount_blocks = 0;
  uint64_t l1_table_offset = 0;    // right after the blocks; 0 when l1_size is 0
  uint32_t l1_size = 0;            // entries (8 bytes each)
  uint64_t metadata_clusters = 0;  // header + table + blocks + L1, each counted once
  uint64_t file_size = 0;          // the end of the L1 table, as qemu-img leaves it
};

// The layout of an empty overlay of `size` bytes with clusters of 2^cluster_bits bytes.
// Throws Error(kInvalidArgument) when qemu could not open it: cluster_bits outside
// 9..21, or an L1 table over qemu's 32 MiB bound (a large size with small clusters).
Qcow2OverlayLayout PlanQcow2Overlay(uint64_t size, uint32_t cluster_bits);

// The non-zero bytes of that overlay as (offset, bytes) pieces; every other byte up to
// layout.file_size is zero. `backing` is stored as given (an absolute path here);
// `backing_format` goes in the backing format extension ("raw" or "qcow2"). Throws
// Error(kInvalidArgument) when the name is empty, over 1023 bytes (qemu's limit) or does
// not fit in the first cluster, or the format is not raw or qcow2.
std::vector<std::pair<uint64_t, std::string>> Qcow2OverlayBytes(const Qcow2OverlayLayout& layout,
                                                                const std::string& backing,
                                                                const std::string& backing_format);

// Writes the overlay into the open file `fd` (emptied first) (named `path` in messages), ending
// with the file's length set to layout.file_size. It does not fsync: the caller publishes
// the file as it publishes any other (fsync, link, fsync of the folder).
void WriteQcow2Overlay(int fd, const std::filesystem::path& path, uint64_t size,
                       const std::string& backing, const std::string& backing_format,
                       uint32_t cluster_bits = kQcow2DefaultClusterBits);

}  // namespace cachemgr::storage
