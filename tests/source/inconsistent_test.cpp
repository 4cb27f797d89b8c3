// Images that are whole but inconsistent: table entries pointing into the format's own
// header or tables, or two entries naming the same file bytes. qemu-img accepts some of
// these without a word (vmdk, vpc, vhdx); the cache must refuse them all (kCorrupt), with
// no checksum in the source to help.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <functional>

#include "fetch_util.h"
#include "source/source.h"

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> Bytes(const fs::path& p, uint64_t off, size_t len) {
  std::ifstream in(p, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(off));
  std::vector<uint8_t> b(len, 0);
  in.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(len));
  REQUIRE(in.gcount() == static_cast<std::streamsize>(len));
  return b;
}
void Patch(const fs::path& p, uint64_t off, const std::vector<uint8_t>& b) {
  std::fstream f(p, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(off));
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(f.good());
}
uint64_t Le(const std::vector<uint8_t>& b, size_t off, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}
uint64_t Be(const std::vector<uint8_t>& b, size_t off, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | b[off + i];
  return v;
}
std::vector<uint8_t> ToLe(uint64_t v, int n) {
  std::vector<uint8_t> b(n);
  for (int i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  return b;
}
std::vector<uint8_t> ToBe(uint64_t v, int n) {
  std::vector<uint8_t> b(n);
  for (int i = 0; i < n; ++i) b[n - 1 - i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
  return b;
}

// A table of `count` entries of `width` bytes at `table` in `file`; the indexes of the
// entries that are `allocated`.
template <typename Pred>
std::vector<uint64_t> Allocated(const fs::path& file, uint64_t table, uint64_t count, int width,
                                bool big_endian, Pred allocated) {
  auto t = Bytes(file, table, count * width);
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t v = big_endian ? Be(t, i * width, width) : Le(t, i * width, width);
    if (allocated(v)) out.push_back(i);
  }
  return out;
}

// Where the table sits in each format's file, and its entries.
struct Table {
  uint64_t offset, count;
  int width;
  bool big_endian;
};
Table VmdkGrainTable(const fs::path& f) {
  auto h = Bytes(f, 0, 80);
  const uint64_t gd = Le(h, 56, 8) * 512;
  const uint64_t gt = Le(Bytes(f, gd, 4), 0, 4) * 512;
  return {gt, Le(h, 44, 4), 4, false};
}
Table VpcBat(const fs::path& f) {
  auto footer = Bytes(f, 0, 512);
  auto dyn = Bytes(f, Be(footer, 16, 8), 1024);
  return {Be(dyn, 16, 8), Be(dyn, 28, 4), 4, true};
}
Table VhdxBat(const fs::path& f) {
  auto t = Bytes(f, 192 * 1024, 4096);
  const std::vector<uint8_t> bat_guid = {0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42,
                                         0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08};
  for (uint64_t i = 0; i < Le(t, 8, 4); ++i) {
    const size_t e = 16 + 32 * i;
    if (std::equal(bat_guid.begin(), bat_guid.end(), t.begin() + e)) {
      return {Le(t, e + 16, 8), 8, 8, false};  // the first payload blocks
    }
  }
  FAIL("no BAT region in the vhdx region table");
  return {};
}

TEST_CASE("inconsistent images of every format are refused with no checksum in the source") {
  DirBed bed;
  struct Case {
    std::string name, qemu_fmt, disk_format;
    std::vector<std::string> opts;
    std::function<Table(const fs::path&)> table;
    std::function<bool(uint64_t)> allocated;
    std::function<std::vector<uint8_t>(uint64_t)> encode;
    uint64_t into_header;  // an entry value that points into the header
  };
  auto le4 = [](uint64_t v) { return ToLe(v, 4); };
  const std::vector<Case> cases = {
      {"vm",
       "vmdk",
       "vmdk",
       {},
       VmdkGrainTable,
       [](uint64_t v) { return v != 0 && v != 1; },
       le4,
       1},
      {"vh",
       "vpc",
       "vhd",
       {"-o", "subformat=dynamic"},
       VpcBat,
       [](uint64_t v) { return v != 0xFFFFFFFF; },
       [](uint64_t v) { return ToBe(v, 4); },
       0},
      {"vx",
       "vhdx",
       "vhdx",
       {"-o", "block_size=1M"},
       VhdxBat,
       [](uint64_t v) { return (v & 7) == 6 || (v & 7) == 7; },
       [](uint64_t v) { return ToLe(v, 8); },
       6 | (0ull << 20)},  // fully present, at file MiB 0 (the header section)
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    bed.Add(c.name, c.qemu_fmt, c.opts);
    const fs::path whole = bed.images / c.name;
    const Table t = c.table(whole);
    auto used = Allocated(whole, t.offset, t.count, t.width, t.big_endian, c.allocated);
    REQUIRE(used.size() >= 2);
    auto entry = [&](uint64_t i) {
      auto b = Bytes(whole, t.offset + i * t.width, t.width);
      return t.big_endian ? Be(b, 0, t.width) : Le(b, 0, t.width);
    };
    WriteSidecar(bed.images, c.name, {{"disk_format", c.disk_format}});

    // Two entries naming the same block.
    const std::string dup = c.name + "-dup";
    fs::copy_file(whole, bed.images / dup);
    Patch(bed.images / dup, t.offset + used[1] * t.width, c.encode(entry(used[0])));
    WriteSidecar(bed.images, dup, {{"disk_format", c.disk_format}});
    Error e = bed.FetchFails(dup);
    CHECK_MESSAGE(e.code() == Errc::kCorrupt, e.what());

    // An entry pointing into the format's own header.
    const std::string head = c.name + "-head";
    fs::copy_file(whole, bed.images / head);
    Patch(bed.images / head, t.offset + used[0] * t.width, c.encode(c.into_header));
    WriteSidecar(bed.images, head, {{"disk_format", c.disk_format}});
    e = bed.FetchFails(head);
    CHECK_MESSAGE(e.code() == Errc::kCorrupt, e.what());

    // An entry pointing into its table.
    if (c.name == "vm" || c.name == "vh") {
      const std::string tab = c.name + "-table";
      fs::copy_file(whole, bed.images / tab);
      // vmdk: the grain at the grain table's sector; vpc: the block whose bitmap sector
      // precedes the BAT, so that its data starts on the BAT.
      const uint64_t sector = t.offset / 512 - (c.name == "vh" ? 1 : 0);
      Patch(bed.images / tab, t.offset + used[0] * t.width, c.encode(sector));
      WriteSidecar(bed.images, tab, {{"disk_format", c.disk_format}});
      e = bed.FetchFails(tab);
      CHECK_MESSAGE(e.code() == Errc::kCorrupt, e.what());
    }

    // The untouched image still passes.
    bed.Fetch(c.name, "entry-" + c.name);
    // The golden bytes, then zeros: vpc rounds the virtual size up to its disk geometry.
    const std::string got = bed.ReadImage(bed.Ref("entry-" + c.name));
    const std::string golden = ReadFile(bed.golden);
    REQUIRE(got.size() >= golden.size());
    CHECK(got.compare(0, golden.size(), golden) == 0);
    CHECK(got.find_first_not_of('\0', golden.size()) == std::string::npos);
    bed.backend->Remove(bed.Ref("entry-" + c.name));
  }
}

}  // namespace
}  // namespace cachemgr::test
