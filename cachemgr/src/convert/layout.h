// convert/layout.h: where an image format keeps its own metadata in the file.
//
// CheckIntact walks `qemu-img map --output=json` itself: the guest data it reports must
// lie inside the file, must not overlap other guest data (two table entries naming the
// same place), and must not overlap the format's own structures. This file reads those
// structures' places from the header, per format.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cachemgr::convert {

// A byte range [offset, offset + length) of the file, named for messages.
struct Region {
  uint64_t offset = 0;
  uint64_t length = 0;
  std::string what;
};

// The ranges of `file` (open at `fd`, `file_size` bytes, read as `format`) that hold the
// format's own metadata and so can never hold guest data: for qcow2 the header cluster;
// vmdk (sparse) everything before the header's overHead; vpc (dynamic) the footer copy,
// the dynamic header, the BAT and the closing footer; vhdx the 1 MiB header section, the
// log and every region of the region table (BAT, metadata); vdi everything before the
// header's offData. Empty for a format with no such tables (raw, fixed vpc).
std::vector<Region> MetadataRegions(int fd, const std::filesystem::path& file,
                                    const std::string& format, uint64_t file_size);

// The file ranges holding guest data (and their bitmaps) that the format's own tables
// name, for a format whose offsets `qemu-img map` does not report: vhdx (its BAT's
// payload blocks and sector bitmaps). Empty for the others, whose map gives offsets.
std::vector<Region> StoredBlocks(int fd, const std::filesystem::path& file,
                                 const std::string& format);

}  // namespace cachemgr::convert
