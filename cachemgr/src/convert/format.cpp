#include "convert/format.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "cachemgr/error.h"
#include "convert/layout.h"
#include "util/byte_order.h"
#include "util/process.h"
#include "util/unique_fd.h"

namespace cachemgr::convert {
namespace {

using json = nlohmann::json;

bool HasAt(std::span<const std::byte> b, size_t off, std::string_view magic) {
  if (b.size() < off + magic.size()) return false;
  return std::memcmp(b.data() + off, magic.data(), magic.size()) == 0;
}

util::UniqueFd OpenForRead(const std::filesystem::path& path) {
  util::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw Error(Errc::kIo, "cannot open " + path.string() + ": " + std::strerror(errno));
  return fd;
}

std::vector<std::byte> ReadAt(int fd, uint64_t offset, size_t len, const std::filesystem::path& p) {
  std::vector<std::byte> buf(len);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, buf.data() + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(Errc::kIo, "cannot read " + p.string() + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  buf.resize(got);
  return buf;
}

[[noreturn]] void Refuse(const std::string& image_id, const std::string& reason) {
  throw Error(Errc::kRefused, "image " + image_id + ": refused: " + reason);
}

const std::array<std::string_view, 2> kVmdkCreateTypes = {"monolithicSparse", "streamOptimized"};

bool AllowedVmdkCreateType(const std::string& t) {
  for (auto a : kVmdkCreateTypes) {
    if (t == a) return true;
  }
  return false;
}

// Value of key="value" (or key=value) in a vmdk descriptor; empty if absent.
std::string DescriptorValue(const std::string& desc, const std::string& key) {
  size_t pos = 0;
  while ((pos = desc.find(key, pos)) != std::string::npos) {
    bool line_start = pos == 0 || desc[pos - 1] == '\n';
    size_t p = pos + key.size();
    while (p < desc.size() && desc[p] == ' ') ++p;
    if (line_start && p < desc.size() && desc[p] == '=') {
      ++p;
      while (p < desc.size() && desc[p] == ' ') ++p;
      size_t end = desc.find('\n', p);
      std::string v = desc.substr(p, end == std::string::npos ? std::string::npos : end - p);
      while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
    pos = p;
  }
  return {};
}

// Header-level checks, before qemu ever opens the file.
void CheckHeader(const std::filesystem::path& file, const std::string& format,
                 const std::string& image_id) {
  const util::UniqueFd fd = OpenForRead(file);
  if (format == "qcow2") {
    auto h = ReadAt(fd.get(), 0, 104, file);
    if (h.size() < 72) Refuse(image_id, "qcow2 header is truncated");
    uint32_t version = util::LoadBe32(h.data() + 4);
    if (util::LoadBe64(h.data() + 8) != 0) Refuse(image_id, "qcow2 image has a backing file");
    if (version >= 3) {
      if (h.size() < 80) Refuse(image_id, "qcow2 v3 header is truncated");
      uint64_t incompatible = util::LoadBe64(h.data() + 72);
      if (incompatible & (1u << 2)) Refuse(image_id, "qcow2 image has an external data file");
    }
  } else if (format == "vmdk") {
    auto h = ReadAt(fd.get(), 0, 512, file);
    if (h.size() < 44) Refuse(image_id, "vmdk header is truncated");
    uint64_t desc_sector = util::LoadLe64(h.data() + 28);
    uint64_t desc_sectors = util::LoadLe64(h.data() + 36);
    if (desc_sector != 0 && desc_sectors != 0) {
      if (desc_sectors > 2048) Refuse(image_id, "vmdk embedded descriptor is implausibly large");
      auto d = ReadAt(fd.get(), desc_sector * 512, static_cast<size_t>(desc_sectors * 512), file);
      std::string desc(reinterpret_cast<const char*>(d.data()), d.size());
      desc = desc.substr(0, desc.find('\0'));
      std::string create_type = DescriptorValue(desc, "createType");
      if (!create_type.empty() && !AllowedVmdkCreateType(create_type)) {
        Refuse(image_id, "vmdk create type '" + create_type +
                             "' is not allowed (only monolithicSparse, streamOptimized)");
      }
      if (!DescriptorValue(desc, "parentFileNameHint").empty()) {
        Refuse(image_id, "vmdk image has a parent (backing) file");
      }
    }
  }
}

util::RunOptions Limits(const ConversionOptions& options) {
  util::RunOptions r;
  r.timeout = std::chrono::seconds(options.timeout_s == 0 ? 3600 : options.timeout_s);
  r.cpu_limit_s = options.cpu_limit_s;
  r.address_space_mb = options.address_space_mb;
  return r;
}

std::string Tail(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.size() > 500) s = "..." + s.substr(s.size() - 500);
  return s;
}

}  // namespace

std::string DetectFormat(std::span<const std::byte> head, std::span<const std::byte> tail) {
  if (HasAt(head, 0, "QFI\xfb")) return "qcow2";
  if (HasAt(head, 0, std::string_view("QED\0", 4))) return "qed";
  if (HasAt(head, 0, "KDMV")) return "vmdk";
  if (HasAt(head, 0, "COWD")) return "vmdk-cowd";
  if (HasAt(head, 0, "# Disk DescriptorFile")) return "vmdk-descriptor";
  if (HasAt(head, 0x40, "\x7f\x10\xda\xbe")) return "vdi";
  if (HasAt(head, 0, "conectix")) return "vpc";
  if (HasAt(head, 0, "vhdxfile")) return "vhdx";
  if (HasAt(head, 0, "LUKS\xba\xbe")) return "luks";
  // Formats qemu reads but the cache never takes: named, so that none passes for raw.
  if (HasAt(head, 0, "WithoutFreeSpace") || HasAt(head, 0, "WithouFreSpacExt")) return "parallels";
  if (HasAt(head, 0, "Bochs Virtual HD Image")) return "bochs";
  if (HasAt(head, 0, "#!/bin/sh\n#V2.0 Format")) return "cloop";
  if (tail.size() >= 512 && HasAt(tail, tail.size() - 512, "koly")) return "dmg";
  if (tail.size() >= 512 && HasAt(tail, tail.size() - 512, "conectix")) return "vpc";
  // A fixed VHD from before VirtualPC 2004 has a 511-byte footer.
  if (tail.size() >= 511 && HasAt(tail, tail.size() - 511, "conectix")) return "vpc";
  return "raw";
}

std::string DetectFileFormat(const std::filesystem::path& file) {
  const util::UniqueFd fd = OpenForRead(file);
  return DetectFdFormat(fd.get(), file.string());
}

std::string DetectFdFormat(int fd, const std::string& name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw Error(Errc::kIo, "cannot stat " + name + ": " + std::strerror(errno));
  }
  auto head = ReadAt(fd, 0, kHeaderBytes, name);
  std::vector<std::byte> tail;
  if (static_cast<uint64_t>(st.st_size) >= 1024) {
    tail = ReadAt(fd, static_cast<uint64_t>(st.st_size) - 512, 512, name);
  }
  return DetectFormat(head, tail);
}

std::string QemuFormat(const std::string& disk_format) {
  if (disk_format == "raw" || disk_format == "iso") return "raw";
  if (disk_format == "qcow2" || disk_format == "vmdk" || disk_format == "vdi" ||
      disk_format == "vhdx") {
    return disk_format;
  }
  if (disk_format == "vhd" || disk_format == "vpc") return "vpc";
  return {};
}

void RequireFormatMatches(const std::string& image_id, const std::string& disk_format,
                          const std::string& detected) {
  std::string expected = QemuFormat(disk_format);
  if (expected.empty()) {
    Refuse(image_id, "disk_format '" + disk_format +
                         "' is not supported (raw, qcow2, vmdk, vdi, vhd, vhdx, iso)");
  }
  if (detected == "qed") Refuse(image_id, "the file is a QED image, which is never let in");
  if (detected == "luks") Refuse(image_id, "the file is a LUKS volume, which is not supported");
  if (detected == "vmdk-descriptor") {
    Refuse(image_id, "the file is a VMDK text descriptor: its extents are external files");
  }
  if (detected == "vmdk-cowd") Refuse(image_id, "the file is a VMware COWD sparse extent");
  if (detected != expected) {
    Refuse(image_id, "disk_format is '" + disk_format + "' but the header says '" + detected + "'");
  }
}

InspectResult Inspect(const std::filesystem::path& file, const std::string& disk_format,
                      const std::string& image_id, const ConversionOptions& options,
                      std::shared_ptr<spdlog::logger> logger) {
  if (!logger) logger = std::make_shared<spdlog::logger>("cachemgr-null");
  const std::string detected = DetectFileFormat(file);
  RequireFormatMatches(image_id, disk_format, detected);
  const std::string format = QemuFormat(disk_format);
  CheckHeader(file, format, image_id);

  const std::string path = std::filesystem::absolute(file).string();
  auto started = std::chrono::steady_clock::now();
  util::RunResult r = util::Run(
      {options.qemu_img, "info", "--output=json", "-f", format, path}, Limits(options));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - started)
                .count();
  if (r.timed_out) {
    throw Error(Errc::kTimeout, "image " + image_id + ": qemu-img info did not finish within " +
                                    std::to_string(options.timeout_s) + " s");
  }
  if (r.signal != 0) {
    Refuse(image_id, "qemu-img info was killed by signal " + std::to_string(r.signal) +
                         " (CPU or memory limit reached)");
  }
  if (r.exit_code != 0) {
    const std::string err = Tail(r.err);
    if (err.find("truncated") != std::string::npos ||
        err.find("after end of file") != std::string::npos ||
        err.find("after the end of file") != std::string::npos) {
      throw Error(Errc::kCorrupt, "image " + image_id + ": refused: the " + format +
                                      " image is truncated: qemu-img info: " + err);
    }
    Refuse(image_id, "qemu-img info -f " + format + " cannot read it: " + err);
  }
  json info;
  try {
    info = json::parse(r.out);
  } catch (const json::exception& e) {
    throw Error(Errc::kInternal,
                "image " + image_id + ": qemu-img info printed invalid JSON: " + e.what());
  }
  InspectResult result;
  result.format = info.value("format", "");
  result.virtual_size = info.value("virtual-size", uint64_t{0});
  result.actual_size = info.value("actual-size", uint64_t{0});
  if (result.format != format) {
    Refuse(image_id, "qemu-img reads it as '" + result.format + "', not '" + format + "'");
  }
  if (info.contains("backing-filename") || info.contains("full-backing-filename")) {
    Refuse(image_id, "it has a backing file '" + info.value("backing-filename", std::string()) + "'");
  }
  const json* specific = nullptr;
  if (auto it = info.find("format-specific"); it != info.end() && it->is_object()) {
    if (auto d = it->find("data"); d != it->end() && d->is_object()) specific = &*d;
  }
  if (info.value("encrypted", false)) {
    Refuse(image_id, "the image is encrypted, which is not supported");
  }
  if (format == "qcow2" && specific && specific->contains("data-file")) {
    Refuse(image_id, "qcow2 image has an external data file '" +
                         specific->value("data-file", std::string()) + "'");
  }
  if (format == "vmdk") {
    std::string create_type = specific ? specific->value("create-type", "") : "";
    if (!AllowedVmdkCreateType(create_type)) {
      Refuse(image_id, "vmdk create type '" + create_type +
                           "' is not allowed (only monolithicSparse, streamOptimized)");
    }
    if (specific) {
      if (auto ex = specific->find("extents"); ex != specific->end() && ex->is_array()) {
        for (const auto& e : *ex) {
          std::string name = e.is_object() ? e.value("filename", "") : "";
          if (name != path) Refuse(image_id, "vmdk has an external extent '" + name + "'");
        }
      }
    }
  }
  const double limit = options.max_virtual_size_gb * 1024.0 * 1024.0 * 1024.0;
  if (options.max_virtual_size_gb > 0 && static_cast<double>(result.virtual_size) > limit) {
    Refuse(image_id, "virtual size " + std::to_string(result.virtual_size) +
                         " bytes is above conversion.max_virtual_size_gb (" +
                         std::to_string(options.max_virtual_size_gb) + " GiB)");
  }
  logger->debug("image inspected image={} format={} virtual_size={} ms={}", image_id, format,
                result.virtual_size, ms);
  return result;
}

void CheckIntact(const std::filesystem::path& file, const std::string& format,
                 const std::string& image_id, const ConversionOptions& options,
                 std::shared_ptr<spdlog::logger> logger) {
  if (!logger) logger = std::make_shared<spdlog::logger>("cachemgr-null");
  auto corrupt = [&](const std::string& why) {
    throw Error(Errc::kCorrupt, "image " + image_id + ": refused: the " + format +
                                    " image is truncated or inconsistent: " + why);
  };
  const util::UniqueFd fd = OpenForRead(file);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    throw Error(Errc::kIo, "cannot stat " + file.string() + ": " + std::strerror(errno));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  const std::string path = std::filesystem::absolute(file).string();
  auto started = std::chrono::steady_clock::now();

  if (format == "vpc") {
    // A dynamic VHD begins with a copy of its footer and ends with the footer itself.
    auto head = ReadAt(fd.get(), 0, 8, file);
    if (HasAt(head, 0, "conectix")) {
      auto tail = file_size >= 512 ? ReadAt(fd.get(), file_size - 512, 512, file)
                                   : std::vector<std::byte>{};
      if (!HasAt(tail, 0, "conectix") && !HasAt(tail, 1, "conectix")) {
        corrupt("the footer that must end a dynamic VHD is missing");
      }
    }
  }

  auto qemu_failed = [&](const util::RunResult& r, const std::string& what) {
    if (r.timed_out) {
      throw Error(Errc::kTimeout, "image " + image_id + ": qemu-img " + what +
                                      " did not finish within " +
                                      std::to_string(options.timeout_s) + " s");
    }
    if (r.signal != 0) {
      Refuse(image_id, "qemu-img " + what + " was killed by signal " + std::to_string(r.signal) +
                           " (CPU or memory limit reached)");
    }
  };

  if (format == "qcow2" || format == "vmdk" || format == "vdi" || format == "vhdx") {
    util::RunResult r = util::Run({options.qemu_img, "check", "--output=json", "-f", format, path},
                                  Limits(options));
    qemu_failed(r, "check");
    // 0 clean, 3 leaked clusters only (harmless), 63 no check for this format; 2 is
    // corruption and 1 a check that could not finish (tables it could not read).
    if (r.exit_code == 1 || r.exit_code == 2) {
      std::string detail = Tail(r.err);
      if (detail.empty()) detail = Tail(r.out);
      corrupt("qemu-img check: " + detail);
    }
  }

  util::RunResult r =
      util::Run({options.qemu_img, "map", "--output=json", "-f", format, path}, Limits(options));
  qemu_failed(r, "map");
  if (r.exit_code != 0) corrupt("qemu-img map cannot read its tables: " + Tail(r.err));
  try {
    const json map = json::parse(r.out);
    if (!map.is_array())
      throw Error(Errc::kInternal, "image " + image_id + ": qemu-img map printed no list");
    struct Stored {
      uint64_t offset, length, start;
      bool compressed;
      std::string what;  // set when read from the format's table, not from the map
    };
    std::vector<Stored> stored;
    for (const auto& e : map) {
      if (!e.value("data", false) || !e.contains("offset")) continue;
      const uint64_t offset = e.at("offset").get<uint64_t>();
      const uint64_t length = e.at("length").get<uint64_t>();
      const bool compressed = e.value("compressed", false);
      const bool inside =
          compressed ? offset < file_size : offset <= file_size && length <= file_size - offset;
      if (!inside) {
        corrupt("guest bytes at " + std::to_string(e.at("start").get<uint64_t>()) +
                " are stored at file offset " + std::to_string(offset) + "+" +
                std::to_string(length) + ", past the end of the file (" +
                std::to_string(file_size) + " bytes)");
      }
      stored.push_back({offset, length, e.at("start").get<uint64_t>(), compressed, ""});
    }
    if (auto blocks = StoredBlocks(fd.get(), file, format); !blocks.empty()) {
      stored.clear();  // the format's own table is the one that names file offsets
      for (const auto& b : blocks) {
        if (b.offset > file_size || b.length > file_size - b.offset) {
          corrupt(b.what + " stored at file offset " + std::to_string(b.offset) + "+" +
                  std::to_string(b.length) + ", past the end of the file (" +
                  std::to_string(file_size) + " bytes)");
        }
        stored.push_back({b.offset, b.length, 0, false, b.what});
      }
    }
    auto where = [](const Stored& x) {
      const std::string what =
          x.what.empty() ? "guest bytes at " + std::to_string(x.start) : x.what;
      return what + " (file offset " + std::to_string(x.offset) + ")";
    };
    // No guest data inside the format's own header and tables.
    for (const auto& region : MetadataRegions(fd.get(), file, format, file_size)) {
      for (const auto& x : stored) {
        const uint64_t len = x.compressed ? 1 : x.length;
        if (x.offset < region.offset + region.length && region.offset < x.offset + len) {
          corrupt(where(x) + " lie in the " + format + " " + region.what + " (file bytes " +
                  std::to_string(region.offset) + "+" + std::to_string(region.length) + ")");
        }
      }
    }
    // No two guest ranges stored in the same file bytes (compressed ones are sized by
    // their guest length, so only their start is compared).
    std::sort(stored.begin(), stored.end(),
              [](const Stored& a, const Stored& b) { return a.offset < b.offset; });
    for (size_t i = 1; i < stored.size(); ++i) {
      const Stored& a = stored[i - 1];
      const Stored& b = stored[i];
      const bool overlap =
          (a.compressed || b.compressed) ? a.offset == b.offset : b.offset < a.offset + a.length;
      if (overlap) {
        corrupt(where(a) + " and " + where(b) + " share the same file bytes");
      }
    }
  } catch (const json::exception& e) {
    throw Error(Errc::kInternal,
                "image " + image_id + ": qemu-img map printed invalid JSON: " + e.what());
  }
  logger->debug("image checked intact image={} format={} ms={}", image_id, format,
                std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count());
}

std::optional<std::vector<Extent>> MapPlainQcow2(const std::filesystem::path& file,
                                                 uint64_t virtual_size,
                                                 const std::string& image_id,
                                                 const ConversionOptions& options,
                                                 std::shared_ptr<spdlog::logger> logger) {
  if (!logger) logger = std::make_shared<spdlog::logger>("cachemgr-null");
  auto fallback = [&](const std::string& why) -> std::optional<std::vector<Extent>> {
    logger->debug("qcow2 image is converted, not mapped image={} reason=\"{}\"", image_id, why);
    return std::nullopt;
  };
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(file, ec);
  if (ec) return fallback("cannot stat the file: " + ec.message());
  util::RunResult r =
      util::Run({options.qemu_img, "map", "--output=json", "-f", "qcow2",
                 std::filesystem::absolute(file).string()},
                Limits(options));
  if (r.timed_out || r.signal != 0 || r.exit_code != 0) {
    return fallback("qemu-img map failed: " + Tail(r.err));
  }
  std::vector<Extent> extents;
  try {
    const json map = json::parse(r.out);
    if (!map.is_array()) return fallback("qemu-img map printed no list");
    uint64_t next = 0;
    for (const auto& e : map) {
      Extent x;
      x.start = e.at("start").get<uint64_t>();
      x.length = e.at("length").get<uint64_t>();
      // zero: reads as zeros whatever is stored; neither data nor zero: unallocated,
      // which with no backing file reads as zeros too.
      x.data = e.value("data", false) && !e.value("zero", false);
      x.zero_over_data = e.value("zero", false) && e.contains("offset");
      if (e.value("depth", 0) != 0) return fallback("an extent comes from a backing file");
      if (x.start != next || x.length == 0) return fallback("the map has a gap or an overlap");
      if (x.data) {
        if (!e.contains("offset")) return fallback("compressed or otherwise encoded clusters");
        x.offset = e.at("offset").get<uint64_t>();
        if (x.offset > file_size || x.length > file_size - x.offset) {
          return fallback("an extent lies outside the file");
        }
      }
      next = x.start + x.length;
      // Neighbours of one kind that lie end to end in the file are one read.
      if (!extents.empty()) {
        Extent& last = extents.back();
        if (last.data == x.data &&
            (!x.data || last.offset + last.length == x.offset)) {
          last.length += x.length;
          last.zero_over_data = last.zero_over_data || x.zero_over_data;
          continue;
        }
      }
      extents.push_back(x);
    }
    if (next != virtual_size) return fallback("the map does not cover the virtual size");
  } catch (const json::exception& e) {
    return fallback(std::string("unreadable qemu-img map output: ") + e.what());
  }
  return extents;
}

void ConvertToRaw(const std::filesystem::path& src, const std::string& format,
                  const std::filesystem::path& dst, const std::string& image_id,
                  const ConversionOptions& options, std::shared_ptr<spdlog::logger> logger) {
  if (!logger) logger = std::make_shared<spdlog::logger>("cachemgr-null");
  auto started = std::chrono::steady_clock::now();
  // -n is not used: qemu-img creates dst itself, sparse. -W is not used either: the
  // conversion runs on one core, shared with the service that embeds us.
  util::RunResult r = util::Run({options.qemu_img, "convert", "-f", format, "-O", "raw",
                                 std::filesystem::absolute(src).string(),
                                 std::filesystem::absolute(dst).string()},
                                Limits(options));
  if (r.timed_out || r.signal != 0 || r.exit_code != 0) {
    std::error_code ec;
    std::filesystem::remove(dst, ec);
    if (r.timed_out) {
      throw Error(Errc::kTimeout, "image " + image_id + ": qemu-img convert did not finish within " +
                                      std::to_string(options.timeout_s) + " s");
    }
    if (r.signal != 0) {
      throw Error(Errc::kRefused, "image " + image_id + ": qemu-img convert was killed by signal " +
                                      std::to_string(r.signal) + " (CPU or memory limit reached)");
    }
    // A read error is the image's (a stream cut short); anything else may be ours (the
    // conversion dir, for one).
    const Errc code =
        r.err.find("error while reading") != std::string::npos ? Errc::kCorrupt : Errc::kIo;
    throw Error(code, "image " + image_id + ": qemu-img convert -f " + format +
                          " -O raw failed: " + Tail(r.err));
  }
  logger->info("image converted image={} format={} ms={}", image_id, format,
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count());
}

}  // namespace cachemgr::convert
