// convert/format.h: what an image file really is, whether it may be let in, and its
// conversion to raw.
//
// A disk image is a program for qemu's block layer: a qcow2 can name a backing file or
// an external data file, a vmdk can name extents anywhere on the host, so a hostile
// upload could make the converter read /etc/shadow into a volume. The header is read
// here first (no qemu), then `qemu-img info` runs with an explicit -f and limits, and
// only then `qemu-img convert`.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cachemgr/options.h"

namespace spdlog {
class logger;
}

namespace cachemgr::convert {

// Bytes of the header DetectFormat needs to see (it is fine to pass fewer at the end
// of a short file).
inline constexpr size_t kHeaderBytes = 512;

// Every name DetectFormat can return. Those the cache converts: "qcow2", "vmdk" (sparse,
// "KDMV"), "vdi", "vpc" (dynamic VHD, or a fixed one told by its footer), "vhdx", and
// "raw" when no known magic is there. Those it names only to refuse them, so that none
// passes for raw: "qed", "vmdk-cowd", "vmdk-descriptor" (its extents are other files),
// "luks", "parallels", "bochs", "cloop" and "dmg" (told by its "koly" trailer).
inline constexpr std::array<std::string_view, 14> kDetectedFormats = {
    "raw",       "qcow2",           "vdi",       "vmdk",  "vpc",   "vhdx", "qed",
    "vmdk-cowd", "vmdk-descriptor", "luks",      "parallels", "bochs", "cloop", "dmg"};

// The format the header bytes show: one of kDetectedFormats. `tail` is the file's last
// 512 bytes when known: a fixed VHD has its "conectix" footer only there, a DMG its
// "koly" trailer.
std::string DetectFormat(std::span<const std::byte> head, std::span<const std::byte> tail = {});
// Reads the head and tail of `file` and detects its format (kIo if unreadable).
std::string DetectFileFormat(const std::filesystem::path& file);
// The same from an open descriptor (pread only: its offset is left alone); `name` is for
// messages.
std::string DetectFdFormat(int fd, const std::string& name);

// The qemu format name for a Glance disk_format (vhd -> vpc, iso -> raw), or empty when
// the disk_format is not one this project converts (ami, aki, ari, ploop, ...).
std::string QemuFormat(const std::string& disk_format);

// kRefused unless the detected format is what disk_format claims. A fixed VHD is raw
// data with a footer, so it passes as "vpc"; "raw" claimed for a file with any image
// magic is refused (the classic way to smuggle a qcow2 with a backing file).
void RequireFormatMatches(const std::string& image_id, const std::string& disk_format,
                          const std::string& detected);

struct InspectResult {
  std::string format;         // qemu's format name
  uint64_t virtual_size = 0;  // bytes
  uint64_t actual_size = 0;   // bytes allocated by the file
};

// Checks `file` (claimed `disk_format`) before conversion: header format matches, no
// backing file, no external data file, vmdk create type in {monolithicSparse,
// streamOptimized} with no extent outside the file, virtual size within
// max_virtual_size_gb. Runs `qemu-img info` with the options' limits. kRefused (with
// the image id and the reason) for anything unsafe; kIo/kTimeout if qemu-img fails.
InspectResult Inspect(const std::filesystem::path& file, const std::string& disk_format,
                      const std::string& image_id, const ConversionOptions& options,
                      std::shared_ptr<spdlog::logger> logger);

// Refuses (kCorrupt, naming the image and the cause) an inspected image that is truncated
// or inconsistent, whether or not the source gave a checksum. What catches what (files cut
// in the header, in the tables and in the data, tests/source/file_source_test.cpp):
//   header cut         every format: `qemu-img info` fails (Inspect refuses it).
//   vhdx, vpc dynamic  qemu refuses to open a file whose BAT or free-block pointer lies
//                      past the end (Inspect; kCorrupt when qemu says so).
//   vpc                our check: the footer copy must end the file (a cut in the last
//                      sector leaves qemu reading the header copy alone).
//   qcow2, vmdk tables `qemu-img check` (run for qcow2, vmdk, vdi, vhdx; vpc has none):
//                      references past the end of the file are corruptions (exit 2) or a
//                      failed check (exit 1). (A qcow2's image-end-offset is no measure:
//                      a whole compressed image ends before it.)
//   data (all)         our check on `qemu-img map --output=json`: every allocated extent
//                      stored plainly must lie inside the file (compressed ones must start
//                      inside it). This alone catches a vdi cut anywhere after its header:
//                      `qemu-img check` on vdi reports no error and the convert reads zeros.
//   vmdk stream tail   a streamOptimized vmdk cut in its end-of-stream marker passes both;
//                      its conversion fails reading, which ConvertToRaw reports as kCorrupt.
// Runs qemu-img with the options' limits.
void CheckIntact(const std::filesystem::path& file, const std::string& format,
                 const std::string& image_id, const ConversionOptions& options,
                 std::shared_ptr<spdlog::logger> logger);

// A run of guest bytes of a qcow2 image: `data` ones are stored as they are in the
// image file at `offset`; the others read as zeros.
struct Extent {
  uint64_t start = 0;
  uint64_t length = 0;
  bool data = false;
  uint64_t offset = 0;
  // Reads as zeros (the cluster's zero flag) although the cluster still points at stored
  // bytes: qemu honours the flag, some other readers (librbd 16's qcow) return the bytes.
  bool zero_over_data = false;
};

// Where an inspected qcow2 image (no backing file, no data file, not encrypted) keeps
// its guest bytes in its own file, from `qemu-img map` run with the options' limits:
// extents in guest order covering [0, virtual_size). nullopt when the image cannot be
// read that way: compressed clusters, an offset outside the file, a map that does not
// cover the disk, or qemu-img failing; such an image goes through ConvertToRaw. Reading
// the plain extents straight from the downloaded file is the conversion, without
// writing and reading a raw copy.
std::optional<std::vector<Extent>> MapPlainQcow2(const std::filesystem::path& file,
                                                 uint64_t virtual_size,
                                                 const std::string& image_id,
                                                 const ConversionOptions& options,
                                                 std::shared_ptr<spdlog::logger> logger);

// `qemu-img convert -f <format> -O raw src dst` with the options' limits. dst must not
// exist; on failure it is removed.
void ConvertToRaw(const std::filesystem::path& src, const std::string& format,
                  const std::filesystem::path& dst, const std::string& image_id,
                  const ConversionOptions& options, std::shared_ptr<spdlog::logger> logger);

}  // namespace cachemgr::convert
