// The qcow2 side of the instant miss: what in a qcow2 librbd's own `qcow` reader would
// read otherwise than qemu, the checks on a Glance qcow2 made from its tables alone
// (fetched by Range reads, before any byte is served), and the disk's bytes of a plain
// qcow2 read by its map (the import's judgement).
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "convert/format.h"
#include "source/source.h"

namespace cachemgr::engine {

// What in the qcow2 header at `fd` librbd's qcow reader would read otherwise than qemu,
// or not at all: another version, encryption, internal snapshots, any v3 incompatible
// feature (dirty, corrupt, external data file, zstd, extended L2). "" when none.
std::string Qcow2Unsupported(int fd);

// The digest that ties an import's entry to the image checked: the committed entry must
// hold the disk's bytes with this digest (collision-resistant: a relayed image's bytes
// come from a Glance that may lie).
inline constexpr const char* kGuestAlgo = "sha256";

// `algo` of the disk's bytes of a plain qcow2 read from `fd` by its map (`extents`).
std::string GuestDigest(int fd, const std::vector<convert::Extent>& extents,
                        const std::string& what, const std::string& algo);

// A Glance qcow2 checked before it is served: its header, then its tables (L1, L2,
// refcount table and blocks) fetched by Range reads into a sparse file of the image's
// size in a working dir of conversion.dir, on which the normal fill's checks run
// (convert::Inspect, CheckIntact, MapPlainQcow2). The data clusters are never read.
struct RelayedQcow2 {
  std::string why_not;        // "" when it qualifies
  uint64_t virtual_size = 0;  // the disk's bytes
};
// kRefused (with the image) for what a fill refuses too: a backing file, a data file, a
// disk over conversion.max_virtual_size_gb. A check that fails on the tables alone is a
// `why_not`: the normal miss checks the whole file and refuses it if it must.
RelayedQcow2 CheckRelayedQcow2(source::Source& source, const source::ImageMeta& meta,
                               const ConversionOptions& options,
                               const std::shared_ptr<spdlog::logger>& log);

// A relayed qcow2's file downloaded whole into a working dir of conversion.dir, hashed
// with `algos` as it comes, then read by its map (kGuestAlgo). `guest_md5` is "" when the file read
// cannot be mapped as a plain qcow2 (`map_error` says why). The file is gone on return.
// kCorrupt when the file is not `size` bytes long.
struct FetchedQcow2 {
  std::vector<std::string> digests;  // in the order of `algos`
  std::string guest_md5;             // kGuestAlgo of the disk's bytes
  std::string map_error;
};
FetchedQcow2 FetchRelayedQcow2(source::Source& source, const std::string& image_id, uint64_t size,
                               const std::vector<std::string>& algos,
                               const ConversionOptions& options,
                               const std::shared_ptr<spdlog::logger>& log,
                               const std::function<void(uint64_t, uint64_t)>& progress);

}  // namespace cachemgr::engine
