#include "convert/layout.h"

#include <unistd.h>

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

}  // namespace

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
