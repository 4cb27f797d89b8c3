// The local backend's qcow2 overlay writer against qemu itself: for each cluster size
// and virtual size, qemu-img check finds nothing, qemu-img info reads what qemu-img
// create would have made, the overlay reads as its base (qemu-img compare), and qemu-io
// can write to it and read the write back, after which it still checks clean.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "storage/local/local_qcow2_overlay.h"
#include "support/test_util.h"
#include "util/unique_fd.h"

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using storage::PlanQcow2Overlay;
using storage::WriteQcow2Overlay;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kTiB = 1024 * kGiB;

// A raw base of `size` bytes: 0xa5 in its first and last 4 KiB, a hole between.
void WriteBase(const fs::path& path, uint64_t size) {
  util::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  REQUIRE(fd.get() >= 0);
  REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
  const std::string data(std::min<uint64_t>(size, 4 * kKiB), '\xa5');
  REQUIRE(::pwrite(fd.get(), data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  const uint64_t tail = size - data.size();
  REQUIRE(::pwrite(fd.get(), data.data(), data.size(), static_cast<off_t>(tail)) ==
          static_cast<ssize_t>(data.size()));
}

void WriteOverlay(const fs::path& path, uint64_t size, const fs::path& base, uint32_t cluster_bits,
                  const std::string& format = "raw") {
  util::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  REQUIRE(fd.get() >= 0);
  WriteQcow2Overlay(fd.get(), path, size, base.string(), format, cluster_bits);
}

json Info(const fs::path& image) {
  std::string out;
  REQUIRE(RunCommand({"qemu-img", "info", "--output=json", image.string()}, &out) == 0);
  return json::parse(out);
}

int Check(const fs::path& image) {
  std::string out;
  return RunCommand({"qemu-img", "check", "-q", "-f", "qcow2", image.string()}, &out);
}

int Compare(const fs::path& a, const fs::path& b) {
  std::string out;
  return RunCommand({"qemu-img", "compare", "-q", a.string(), b.string()}, &out);
}

void ExpectSameAsQemu(const fs::path& ours, const fs::path& base, uint64_t size,
                      uint32_t cluster_bits, const std::string& format) {
  TempDir dir("qcow2-ref");
  const auto ref = dir / "ref.qcow2";
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-F", format, "-b", base.string(),
                      "-o", "cluster_size=" + std::to_string(uint64_t{1} << cluster_bits),
                      ref.string(), std::to_string(size)}) == 0);
  const json a = Info(ours);
  const json b = Info(ref);
  for (const char* key :
       {"format", "virtual-size", "cluster-size", "backing-filename", "backing-filename-format"}) {
    CHECK_MESSAGE(a.value(key, json()) == b.value(key, json()), key);
  }
  const json fa = a["format-specific"]["data"];
  const json fb = b["format-specific"]["data"];
  for (const char* key : {"compat", "refcount-bits", "lazy-refcounts", "corrupt", "extended-l2",
                          "compression-type"}) {
    CHECK_MESSAGE(fa.value(key, json()) == fb.value(key, json()), key);
  }
}

TEST_CASE("qcow2 overlay: qemu reads, checks, writes and compares it") {
  TempDir dir("qcow2-overlay");
  // 64 KiB (what the backend writes) and the smallest, a small and the largest cluster
  // size qemu takes; 1 GiB with 512-byte clusters needs three refcount blocks. Few cases,
  // each is eight qemu runs; qemu-img compare walks 5 TiB in steps of one L2 table, so
  // 5 TiB goes with the large clusters only.
  const std::vector<std::pair<uint64_t, std::vector<uint32_t>>> cases = {{1, {9, 16}},
                                                                         {3000, {16, 21}},
                                                                         {1 * kMiB + 7, {12, 16}},
                                                                         {1 * kGiB, {9}},
                                                                         {5 * kTiB, {16, 21}}};
  for (const auto& c : cases) {
    const uint64_t size = c.first;
    const auto base = dir / ("base-" + std::to_string(size) + ".raw");
    WriteBase(base, size);
    for (uint32_t bits : c.second) {
      CAPTURE(size);
      CAPTURE(bits);
      const auto overlay = dir / ("o-" + std::to_string(size) + "-" + std::to_string(bits));
      WriteOverlay(overlay, size, base, bits);
      CHECK(Check(overlay) == 0);
      ExpectSameAsQemu(overlay, base, size, bits, "raw");
      CHECK(Compare(base, overlay) == 0);

      // A write at the overlay's last 512 bytes (the base has 0xa5 there), read back.
      const uint64_t at = (size + 511) / 512 * 512 - 512;
      std::vector<std::string> io = {"qemu-io",
                                     "-f",
                                     "qcow2",
                                     "-c",
                                     "write -P 0x5a " + std::to_string(at) + " 512",
                                     "-c",
                                     "read -P 0x5a " + std::to_string(at) + " 512"};
      if (at >= 512) io.insert(io.end(), {"-c", "read -P 0xa5 0 512"});  // still the base's
      io.push_back(overlay.string());
      std::string out;
      CHECK(RunCommand(io, &out) == 0);
      CHECK(out.find("failed") == std::string::npos);
      CHECK(out.find("read 512/512") != std::string::npos);
      CHECK(Check(overlay) == 0);  // the clusters qemu added on our tables add up
      CHECK(Compare(base, overlay) == 1);
    }
  }
}

TEST_CASE("qcow2 overlay: of a qcow2 base") {
  TempDir dir("qcow2-overlay-chain");
  const auto raw = dir / "base.raw";
  WriteBase(raw, 64 * kMiB);
  const auto base = dir / "base.qcow2";
  REQUIRE(RunCommand({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.string(),
                      base.string()}) == 0);
  const auto overlay = dir / "overlay.qcow2";
  WriteOverlay(overlay, 64 * kMiB, base, 16, "qcow2");
  CHECK(Check(overlay) == 0);
  ExpectSameAsQemu(overlay, base, 64 * kMiB, 16, "qcow2");
  CHECK(Compare(raw, overlay) == 0);
}

TEST_CASE("qcow2 overlay: qemu-img resize moves its L1 table and it still checks clean") {
  // A clone the engine grows to the requested size: qemu allocates a larger L1 table
  // from the refcounts written here.
  TempDir dir("qcow2-overlay-resize");
  const auto base = dir / "base.raw";
  WriteBase(base, kMiB + 7);
  const auto overlay = dir / "overlay.qcow2";
  WriteOverlay(overlay, kMiB + 7, base, 12);
  REQUIRE(RunCommand({"qemu-img", "resize", "-q", "-f", "qcow2", overlay.string(), "10G"}) == 0);
  CHECK(Check(overlay) == 0);
  CHECK(Info(overlay)["virtual-size"] == 10 * kGiB);
  std::string out;
  CHECK(RunCommand({"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 9G 64k", "-c",
                    "read -P 0x5a 9G 64k", "-c", "read -P 0xa5 0 4k", overlay.string()},
                   &out) == 0);
  CHECK(out.find("failed") == std::string::npos);
  CHECK(Check(overlay) == 0);
}

TEST_CASE("qcow2 overlay: the layout grows its refcount blocks to cover its L1 table") {
  // 5 TiB with 4 KiB clusters: a 20 MiB L1 table, 5,120 clusters, three refcount blocks.
  const auto l = PlanQcow2Overlay(5 * kTiB, 12);
  CHECK(l.l1_size == 5 * kTiB / (4 * kKiB * 512));
  CHECK(l.refcount_blocks == 3);
  CHECK(l.metadata_clusters == 1 + 1 + 3 + 5120);
  CHECK(l.file_size == l.l1_table_offset + uint64_t{l.l1_size} * 8);
  // 1 GiB with 512-byte clusters (checked by qemu above): 512 L1 clusters, 3 blocks.
  const auto s = PlanQcow2Overlay(kGiB, 9);
  CHECK(s.refcount_blocks == 3);
  CHECK(s.metadata_clusters == 1 + 1 + 3 + 512);
  // qemu-img create's own layout for 64 KiB clusters: header, table, block, L1.
  const auto d = PlanQcow2Overlay(1, 16);
  CHECK(d.size == 512);
  CHECK(d.refcount_table_offset == 64 * kKiB);
  CHECK(d.l1_table_offset == 3 * 64 * kKiB);
  CHECK(d.file_size == 3 * 64 * kKiB + 8);
}

TEST_CASE("qcow2 overlay: what qemu could not open is refused") {
  TempDir dir("qcow2-overlay-bad");
  const auto base = dir / "base.raw";
  WriteBase(base, kMiB);
  auto refused = [&](uint64_t size, const std::string& backing, const std::string& format,
                     uint32_t bits) {
    const auto path = dir / "bad.qcow2";
    util::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    REQUIRE(fd.get() >= 0);
    try {
      WriteQcow2Overlay(fd.get(), path, size, backing, format, bits);
    } catch (const Error& e) {
      return e.code() == Errc::kInvalidArgument;
    }
    return false;
  };
  CHECK(refused(5 * kTiB, base.string(), "raw", 9));  // a 1.25 GiB L1 table
  // qemu-img create's own limit, to the sector: 128 GiB with 512-byte clusters.
  CHECK_FALSE(refused(128 * kGiB, base.string(), "raw", 9));
  CHECK(refused(128 * kGiB + 1, base.string(), "raw", 9));
  CHECK(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512",
                    (dir / "q.qcow2").string(), std::to_string(128 * kGiB + 1)}) != 0);
  CHECK(refused(kMiB, base.string(), "raw", 8));
  CHECK(refused(kMiB, base.string(), "raw", 22));
  CHECK(refused(kMiB, base.string(), "vmdk", 16));
  CHECK(refused(kMiB, "", "raw", 16));
  CHECK(refused(kMiB, "/" + std::string(1023, 'a'), "raw", 16));
  CHECK(refused(kMiB, "/" + std::string(400, 'a'), "raw", 9));  // past the first cluster
  CHECK_FALSE(refused(kMiB, "/" + std::string(1022, 'a'), "raw", 16));
}

}  // namespace
}  // namespace cachemgr::test
