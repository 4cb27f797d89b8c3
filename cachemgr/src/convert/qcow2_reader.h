// convert/qcow2_reader.h: a qcow2's disk bytes read by this project's own reader of its
// tables, for images whose clusters are compressed (as the cloud images operators download
// are): the fill streams them into the backend with no raw copy written and read back, and
// inflates clusters on several threads at once. Images with plain clusters only keep
// MapPlainQcow2 (qemu-img's own map); everything this reader does not know is left to
// `qemu-img convert`.
//
// It reads what qemu reads, by qemu's rules (block/qcow2.h, qcow2-cluster.c,
// qcow2-threads.c of qemu 7.2), and the tests compare its bytes with qemu-img convert's
// for every cluster size and cluster kind:
//   - L1 entry: bits 9-55 the L2 table's offset, 0 for none (then the range reads zeros).
//   - L2 entry: bit 62 set: compressed, whatever the other bits say; else bit 0 (zero
//     flag) set: zeros (in a version 2 image that is a corruption, kCorrupt); else bits
//     9-55 the cluster's offset, 0 for unallocated (zeros: there is no backing file).
//   - compressed cluster: its offset is the entry's low 62 - (cluster_bits - 8) bits, its
//     length (nb_sectors + 1) * 512 - (offset % 512) with nb_sectors the next
//     cluster_bits - 8 bits; bytes past the end of the file read as zeros; raw deflate
//     (window 2^12) that must fill the whole cluster (Z_STREAM_END, or Z_BUF_ERROR with the
//     cluster full: its length is known to a sector only), anything else is kCorrupt.
//   - an L1 or L2 table reads as zeros where it lies past the end of the file (qemu's
//     reads do so); a table that is not cluster-aligned, or a plain cluster not aligned or
//     past the end of the file, is kCorrupt (qemu calls them corruption; `qemu-img check`
//     and CheckIntact refuse them first).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>

namespace cachemgr::convert {

// What the reader hands over, in disk order, covering [0, virtual_size) exactly once.
struct DiskSink {
  std::function<void(uint64_t n)> zeros;                     // n bytes that read as zeros
  std::function<void(std::span<const std::byte> d)> data;  // the next bytes of the disk
};

// Whether this reader reads the qcow2 at `fd`: "" when it does, else why not (for the
// log): a version other than 2 or 3, a v3 incompatible feature (dirty, corrupt, external
// data file, zstd compression, extended L2) or a compression type other than zlib,
// encryption, a backing file, a cluster size qemu does not make, a disk over 2^62 bytes,
// or a disk size other than `virtual_size`.
std::string Qcow2ReaderRefuses(int fd, uint64_t virtual_size);

// Hands the disk of the qcow2 at `fd` to `sink`, which Qcow2ReaderRefuses passed.
// `threads` (at least 1) inflate compressed clusters side by side. kCorrupt (naming
// `image_id`, the disk offset and the cause) by the rules above; kIo when a read fails;
// kTimeout past `time_limit` (conversion.timeout_s, as a qemu-img run has: a small file
// can describe a large disk that inflates from one shared cluster, bounded by
// max_virtual_size_gb).
void ReadQcow2Disk(int fd, uint64_t virtual_size, const std::string& image_id,
                   const DiskSink& sink, unsigned threads, std::chrono::seconds time_limit);

}  // namespace cachemgr::convert
