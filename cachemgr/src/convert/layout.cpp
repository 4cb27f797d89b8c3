#include "convert/layout.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "cachemgr/error.h"

namespace cachemgr::convert {
namespace {

std::vector<uint8_t> Read(int fd, uint64_t offset, size_t len, const std::filesystem::path& p) {
  std::vector<uint8_t> b(len, 0);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, b.data() + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(Errc::kIo, "cannot read " + p.string() + ": " + std::strerror(errno));
    if (n == 0) break;  // short: the rest stays zero; callers check magics
    got += static_cast<size_t>(n);
  }
  return b;
}

uint64_t Be(const std::vector<uint8_t>& b, size_t off, int n) {
  uint64_t v = 0;
  if (b.size() < off + n) return 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | b[off + i];
  return v;
}
uint64_t Le(const std::vector<uint8_t>& b, size_t off, int n) {
  uint64_t v = 0;
  if (b.size() < off + n) return 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}
bool Magic(const std::vector<uint8_t>& b, size_t off, const char* m, size_t n) {
  return b.size() >= off + n && std::memcmp(b.data() + off, m, n) == 0;
}

constexpr uint64_t kMiB = 1024 * 1024;

void Vhdx(int fd, const std::filesystem::path& file, std::vector<Region>* out) {
  out->push_back({0, kMiB, "header section"});
  // The two headers (64 and 128 KiB) name the log; the region tables (192 and 256 KiB)
  // name the BAT and the metadata region.
  for (uint64_t at : {64 * 1024ull, 128 * 1024ull}) {
    auto h = Read(fd, at, 80, file);
    if (!Magic(h, 0, "head", 4)) continue;
    const uint64_t len = Le(h, 68, 4), off = Le(h, 72, 8);
    if (len > 0) out->push_back({off, len, "log"});
  }
  for (uint64_t at : {192 * 1024ull, 256 * 1024ull}) {
    auto t = Read(fd, at, 64 * 1024, file);
    if (!Magic(t, 0, "regi", 4)) continue;
    const uint64_t n = std::min<uint64_t>(Le(t, 8, 4), 2047);
    for (uint64_t i = 0; i < n; ++i) {
      const size_t e = 16 + 32 * i;
      out->push_back(
          {Le(t, e + 16, 8), Le(t, e + 24, 4), "region table entry " + std::to_string(i)});
    }
  }
}

void Vpc(int fd, const std::filesystem::path& file, uint64_t file_size, std::vector<Region>* out) {
  auto footer = Read(fd, 0, 512, file);
  if (!Magic(footer, 0, "conectix", 8)) return;                  // fixed: no tables, data from 0
  if (Be(footer, 60, 4) != 3 && Be(footer, 60, 4) != 4) return;  // not dynamic/differencing
  out->push_back({0, 512, "footer copy"});
  if (file_size >= 512) out->push_back({file_size - 512, 512, "footer"});
  const uint64_t dyn = Be(footer, 16, 8);
  out->push_back({dyn, 1024, "dynamic header"});
  auto h = Read(fd, dyn, 1024, file);
  if (!Magic(h, 0, "cxsparse", 8)) return;
  const uint64_t bat = Be(h, 16, 8), entries = Be(h, 28, 4);
  out->push_back({bat, (entries * 4 + 511) / 512 * 512, "block allocation table"});
}

bool Guid(const std::vector<uint8_t>& b, size_t off, std::initializer_list<uint8_t> g) {
  return b.size() >= off + 16 && std::equal(g.begin(), g.end(), b.begin() + off);
}

// The file ranges a vhdx's BAT gives its payload blocks and sector bitmaps (qemu-img map
// reports no file offsets for vhdx, so the BAT is walked here).
std::vector<Region> VhdxBlocks(int fd, const std::filesystem::path& file) {
  std::vector<Region> out;
  auto t = Read(fd, 192 * 1024, 64 * 1024, file);
  if (!Magic(t, 0, "regi", 4)) return out;
  uint64_t bat = 0, bat_len = 0, meta = 0, meta_len = 0;
  const uint64_t n = std::min<uint64_t>(Le(t, 8, 4), 2047);
  for (uint64_t i = 0; i < n; ++i) {
    const size_t e = 16 + 32 * i;
    if (Guid(t, e, {0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B,
                    0xFD, 0x4A, 0x08})) {
      bat = Le(t, e + 16, 8), bat_len = Le(t, e + 24, 4);
    } else if (Guid(t, e, {0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57,
                           0x5F, 0x05, 0x0F, 0x88, 0x6E})) {
      meta = Le(t, e + 16, 8), meta_len = Le(t, e + 24, 4);
    }
  }
  if (bat_len == 0 || meta_len < 32 || meta_len > 64 * kMiB || bat_len > 256 * kMiB) return out;
  auto m = Read(fd, meta, meta_len, file);
  if (!Magic(m, 0, "metadata", 8)) return out;
  uint64_t block = 0, disk = 0, sector = 0;
  const uint64_t items = std::min<uint64_t>(Le(m, 10, 2), 2047);
  for (uint64_t i = 0; i < items; ++i) {
    const size_t e = 32 + 32 * i;
    const uint64_t off = Le(m, e + 16, 4);
    if (off + 8 > m.size()) continue;
    if (Guid(m, e, {0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, 0x33, 0xF0, 0xAA,
                    0x44, 0xE7, 0x6B})) {
      block = Le(m, off, 4);
    } else if (Guid(m, e, {0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2, 0x11, 0x5D,
                           0xBE, 0xD8, 0x3B, 0xF4, 0xB8})) {
      disk = Le(m, off, 8);
    } else if (Guid(m, e, {0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47, 0xBA, 0x47, 0xF2,
                           0x33, 0xA8, 0xFA, 0xAB, 0x5F})) {
      sector = Le(m, off, 4);
    }
  }
  if (block < kMiB || block > 256 * kMiB || (sector != 512 && sector != 4096) || disk == 0) {
    return out;  // qemu-img info refuses such parameters itself
  }
  const uint64_t chunk = (1ull << 23) * sector / block;
  const uint64_t payloads = (disk + block - 1) / block;
  const uint64_t entries = std::min(payloads + (payloads - 1) / chunk, bat_len / 8);
  auto b = Read(fd, bat, entries * 8, file);
  for (uint64_t i = 0; i < entries; ++i) {
    const uint64_t v = Le(b, i * 8, 8);
    const uint64_t state = v & 7, at = (v >> 20) << 20;
    const bool bitmap = (i + 1) % (chunk + 1) == 0;
    if (bitmap ? state != 6 : (state != 6 && state != 7)) continue;
    const uint64_t guest = (i - i / (chunk + 1)) * block;
    out.push_back({at, bitmap ? kMiB : block,
                   bitmap ? "sector bitmap (BAT entry " + std::to_string(i) + ")"
                          : "guest bytes at " + std::to_string(guest) + " (BAT entry " +
                                std::to_string(i) + ")"});
  }
  return out;
}

}  // namespace

std::vector<Region> StoredBlocks(int fd, const std::filesystem::path& file,
                                 const std::string& format) {
  if (format == "vhdx") return VhdxBlocks(fd, file);
  return {};
}

std::vector<Region> MetadataRegions(int fd, const std::filesystem::path& file,
                                    const std::string& format, uint64_t file_size) {
  std::vector<Region> out;
  if (format == "qcow2") {
    auto h = Read(fd, 0, 32, file);
    const uint64_t bits = Be(h, 20, 4);
    if (Magic(h, 0, "QFI\xfb", 4) && bits >= 9 && bits <= 21) {
      out.push_back({0, 1ull << bits, "header cluster"});
    }
  } else if (format == "vmdk") {
    auto h = Read(fd, 0, 80, file);
    if (Magic(h, 0, "KDMV", 4)) out.push_back({0, Le(h, 64, 8) * 512, "header and grain tables"});
  } else if (format == "vdi") {
    auto h = Read(fd, 0, 0x160, file);
    if (Magic(h, 0x40, "\x7f\x10\xda\xbe", 4)) {
      out.push_back({0, Le(h, 0x158, 4), "header and block map"});
    }
  } else if (format == "vpc") {
    Vpc(fd, file, file_size, &out);
  } else if (format == "vhdx") {
    Vhdx(fd, file, &out);
  }
  return out;
}

}  // namespace cachemgr::convert
