// fetch/fetch.h: the fill pipeline of a cache miss, from a source into a new backend image.
//
// raw:    source bytes stream straight into Backend::Create's writer (no temporary file),
//         md5 and os_hash computed on the fly and checked before Finish().
// other:  downloaded (hashed) into a staging file in a private working dir of its own in
//         conversion.dir (fetch/workdir.h) after its free space is checked, inspected
//         (real format == disk_format, no backing file, no external data file, vmdk
//         extents and create type allowed, virtual size within limits), checked intact
//         (convert::CheckIntact: truncation is refused with or without a checksum),
//         converted with `qemu-img convert -O raw` (argv, explicit -f, limits), imported.
// file source + raw: the source's opened file is offered to Backend::AdoptShared (a
//         reflink, or a checked hard link when configured), else streamed from that same
//         descriptor; hashed from it either way, and refused if it changed meanwhile.
// On any failure nothing is left at `dest` or in conversion.dir.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cachemgr/options.h"
#include "source/source.h"
#include "storage/backend.h"

namespace spdlog {
class logger;
}

namespace cachemgr::fetch {

struct FetchOptions {
  ConversionOptions conversion;
  // Bytes a download with no declared size may bring (source.max_image_gb); a declared
  // size over it is refused too. 0 = conversion.max_virtual_size_gb.
  uint64_t max_image_bytes = 0;
  // Fetch images with no digest that can be checked (source.allow_unverified).
  bool allow_unverified = false;
  // stage: "download" | "convert" | "import"; total 0 when unknown.
  std::function<void(const std::string& stage, uint64_t done, uint64_t total)> progress;
  // Called once a converted image's virtual size is read from its header, before anything
  // is written to the backend (a compressed qcow2's can be many times its download); may
  // throw to refuse the image (the staging files go).
  std::function<void(uint64_t virtual_size)> before_import;
};

struct FetchResult {
  uint64_t bytes_downloaded = 0;  // bytes read from the source
  uint64_t virtual_size = 0;      // size of the raw image made at dest
  std::string detected_format;    // what the header said (raw, qcow2, ...)
  std::string md5;                // of the downloaded bytes
  std::string os_hash_algo, os_hash_value;
  bool adopted = false;  // dest shares the source file's extents or inode
  // How the disk's bytes were read: "raw" (the download itself), "map" (a plain qcow2 by
  // qemu-img map), "reader" (a qcow2 by convert/qcow2_reader) or "qemu-img" (converted to
  // a raw file first).
  std::string read_by;
  std::chrono::microseconds download{}, convert{}, import{};
};

// Fetches the image `meta` describes (status must be "active", container "bare", else
// kRefused / kNotFound) into a new image `dest`, which must not exist.
// Errors: kCorrupt (checksum mismatch, truncated), kRefused (format safety), kSource,
// kUnauthorized, kNotFound, kTimeout, kIo (conversion dir full), kBackend.
FetchResult FetchInto(source::Source& source, const source::ImageMeta& meta,
                      storage::Backend& backend, const storage::ImageRef& dest,
                      const FetchOptions& options, std::shared_ptr<spdlog::logger> logger);

}  // namespace cachemgr::fetch
