// convert/qcow2_reader: its bytes against qemu-img convert's for every cluster size, both
// qcow2 versions and every kind of cluster (compressed, plain over compressed, zero,
// discarded, unallocated, a partial last cluster, an internal snapshot); the images it
// leaves to qemu-img; and damaged images, which both refuse.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "convert/qcow2_reader.h"
#include "fetch_util.h"
#include "support/test_util.h"
#include "util/byte_order.h"
#include "util/process.h"

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;

struct Fd {
  int fd;
  explicit Fd(const fs::path& p) : fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC)) { REQUIRE(fd >= 0); }
  ~Fd() { ::close(fd); }
};

// The disk as the reader hands it over, with `threads` inflating.
std::string ReadDisk(const fs::path& file, uint64_t size, unsigned threads) {
  Fd f(file);
  REQUIRE(convert::Qcow2ReaderRefuses(f.fd, size) == "");
  std::string out;
  uint64_t calls = 0;
  convert::ReadQcow2Disk(
      f.fd, size, "img",
      {.zeros = [&](uint64_t n) { out.append(n, '\0'); ++calls; },
       .data = [&](std::span<const std::byte> d) {
         out.append(reinterpret_cast<const char*>(d.data()), d.size());
         ++calls;
       }},
      threads, std::chrono::seconds(60));
  CHECK(calls > 0);
  return out;
}

// The disk as qemu-img convert writes it.
std::string QemuRaw(const fs::path& file, const fs::path& dir) {
  const fs::path raw = dir / "qemu.raw";
  fs::remove(raw);
  QemuImg({"convert", "-f", "qcow2", "-O", "raw", file.string(), raw.string()});
  return ReadFile(raw);
}

void QemuIo(const fs::path& file, const std::string& cmd) {
  auto r = util::Run({"qemu-io", "-f", "qcow2", "-c", cmd, file.string()});
  REQUIRE_MESSAGE(r.exit_code == 0, "qemu-io " << cmd << ": " << r.out << r.err);
}

// Compressible text and random bytes in turns, a run of written zeros and a hole: the
// kinds of data a cloud image holds.
void MakeRaw(const fs::path& path, uint64_t size, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string body(size, '\0');
  const std::string line = "Dec  7 02:42:33 host kernel: eth0 link up, 1000 Mbps full duplex\n";
  for (uint64_t off = 0; off < size; off += 4096) {
    const uint64_t n = std::min<uint64_t>(4096, size - off);
    switch ((off / 4096) % 7) {
      case 0:
      case 1:
      case 2:
        for (uint64_t i = 0; i < n; ++i) body[off + i] = line[(off + i) % line.size()];
        break;
      case 3:
        for (uint64_t i = 0; i < n; ++i) body[off + i] = static_cast<char>(rng());
        break;
      default:
        break;  // zeros
    }
  }
  // A hole of its own in the middle third.
  std::fill(body.begin() + static_cast<std::ptrdiff_t>(size / 3),
            body.begin() + static_cast<std::ptrdiff_t>(size / 2), '\0');
  WriteFile(path, body);
}

}  // namespace

TEST_CASE("the qcow2 reader reads what qemu-img convert does, for every cluster size and kind") {
  TempDir tmp("qcow2-reader");
  struct Case {
    uint64_t cluster;
    const char* compat;
  };
  const Case cases[] = {{512, "1.1"},   {4096, "1.1"},   {65536, "1.1"},   {2u << 20, "1.1"},
                        {512, "0.10"},  {65536, "0.10"}, {1u << 20, "0.10"}};
  for (const auto& k : cases) {
    CAPTURE(k.cluster);
    const std::string compat = k.compat;
    CAPTURE(compat);
    // Not a whole number of clusters: the last one is partial.
    const uint64_t size = 6 * (1u << 20) + 12345 * 512 % (k.cluster * 3) + 512;
    CAPTURE(size);
    const fs::path raw = tmp / "src.raw", img = tmp / "img.qcow2";
    fs::remove(img);
    MakeRaw(raw, size, static_cast<uint32_t>(k.cluster));
    const std::string opts = "cluster_size=" + std::to_string(k.cluster) + ",compat=" + k.compat;
    QemuImg({"convert", "-c", "-f", "raw", "-O", "qcow2", "-o", opts, raw.string(), img.string()});

    SUBCASE("compressed only") {}
    SUBCASE("plain clusters written over compressed ones, zeros, discards") {
      // `op` of up to `len` bytes at `off`, within the disk.
      auto at = [&](const std::string& op, uint64_t off, uint64_t len) {
        len = std::min(len, size - off);
        QemuIo(img, op + " " + std::to_string(off) + " " + std::to_string(len));
      };
      at("write -P 0xab", 0, k.cluster * 2);  // the first two clusters, plain
      at("write -z", 0, k.cluster);  // zeros over the first one's stored bytes
      at("write -P 0x5c", std::min<uint64_t>(k.cluster * 3, size / 2) + 512, 70144);
      at("write -z", 2u << 20, k.cluster * 2);
      at("discard", 4u << 20, k.cluster * 4);
      at("write -P 0x11", size - 1024, 1024);  // the partial end
    }
    SUBCASE("an internal snapshot, then writes to the active disk") {
      QemuImg({"snapshot", "-c", "before", img.string()});
      QemuIo(img, "write -P 0x77 " + std::to_string(1u << 20) + " " + std::to_string(k.cluster));
      QemuIo(img, "write -z 0 " + std::to_string(k.cluster));
    }
    const std::string want = QemuRaw(img, tmp.path());
    REQUIRE(want.size() == size);
    for (unsigned threads : {1u, 2u, 5u}) {
      CAPTURE(threads);
      CHECK(ReadDisk(img, size, threads) == want);
    }
  }
}

TEST_CASE("a disk larger than one batch, with every cluster compressed, reads in order") {
  TempDir tmp("qcow2-reader");
  const uint64_t size = 40u << 20;  // past the 16 MiB batch, in several batches
  const fs::path raw = tmp / "src.raw", img = tmp / "img.qcow2";
  MakeRaw(raw, size, 7);
  QemuImg({"convert", "-c", "-f", "raw", "-O", "qcow2", raw.string(), img.string()});
  CHECK(ReadDisk(img, size, 2) == ReadFile(raw));
}

TEST_CASE("images the reader leaves to qemu-img") {
  TempDir tmp("qcow2-reader");
  const fs::path base = tmp / "base.qcow2";
  QemuImg({"create", "-f", "qcow2", base.string(), "1M"});
  auto refuses = [&](const fs::path& p, uint64_t size) {
    Fd f(p);
    return convert::Qcow2ReaderRefuses(f.fd, size);
  };
  CHECK(refuses(base, 1u << 20) == "");
  CHECK(refuses(base, 2u << 20) != "");  // another disk size than inspected

  const fs::path zstd = tmp / "zstd.qcow2";
  QemuImg({"create", "-f", "qcow2", "-o", "compression_type=zstd", zstd.string(), "1M"});
  CHECK(refuses(zstd, 1u << 20).find("incompatible features") != std::string::npos);

  const fs::path overlay = tmp / "overlay.qcow2";
  QemuImg({"create", "-f", "qcow2", "-F", "qcow2", "-b", base.string(), overlay.string()});
  CHECK(refuses(overlay, 1u << 20) == "a backing file");

  const fs::path ext = tmp / "ext.qcow2";
  QemuImg({"create", "-f", "qcow2", "-o", "extended_l2=on", ext.string(), "1M"});
  CHECK(refuses(ext, 1u << 20).find("incompatible features") != std::string::npos);

  // Header fields qemu-img info refuses, which the reader must refuse by itself too.
  auto patched = [&](const char* name, size_t at, std::string bytes) {
    std::string b = ReadFile(base);
    b.replace(at, bytes.size(), bytes);
    WriteFile(tmp / name, b);
    return tmp / name;
  };
  // A disk of 2^64 - 512 bytes: the sum of its L1 span must not wrap to nothing.
  CHECK(refuses(patched("huge", 24, std::string("\xff\xff\xff\xff\xff\xff\xfe\x00", 8)),
                0xfffffffffffffe00ull) == "a disk over 2^62 bytes");
  // zstd named in the compression type without its incompatible bit.
  const std::string v3 = ReadFile(base);
  REQUIRE(v3.size() > 112);
  CHECK(refuses(patched("ztype", 100, std::string("\0\0\0\x70\x01", 5)), 1u << 20) ==
        "a compression type other than zlib");

  const fs::path raw = tmp / "raw";
  WriteFile(raw, std::string(4096, 'x'));
  CHECK(refuses(raw, 4096) == "not a qcow2 header");
  // And used anyway, it refuses rather than read.
  Fd f(overlay);
  CHECK(Thrown([&] {
          convert::ReadQcow2Disk(f.fd, 1u << 20, "img",
                                 {[](uint64_t) {}, [](std::span<const std::byte>) {}}, 1,
                                 std::chrono::seconds(60));
        }).code() == Errc::kInternal);
}

TEST_CASE("a damaged compressed image: qemu-img and the reader both refuse it") {
  TempDir tmp("qcow2-reader");
  const uint64_t size = 4u << 20;
  const fs::path raw = tmp / "src.raw", img = tmp / "img.qcow2";
  MakeRaw(raw, size, 3);
  QemuImg({"convert", "-c", "-f", "raw", "-O", "qcow2", raw.string(), img.string()});
  const std::string whole = ReadFile(img);
  auto both_refuse = [&](const std::string& bytes, const std::string& why) {
    CAPTURE(why);
    const fs::path bad = tmp / "bad.qcow2";
    WriteFile(bad, bytes);
    auto r = util::Run({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", bad.string(),
                        (tmp / "bad.raw").string()});
    CHECK(r.exit_code != 0);
    Fd f(bad);
    std::string got;
    Error e = Thrown([&] {
      convert::ReadQcow2Disk(f.fd, size, "img-bad",
                             {[&](uint64_t n) { got.append(n, '\0'); },
                              [&](std::span<const std::byte> d) { got.append(d.size(), 'd'); }},
                             2, std::chrono::seconds(60));
    });
    CHECK(e.code() == Errc::kCorrupt);
    CHECK(std::string(e.what()).find("img-bad") != std::string::npos);
    CHECK(got.size() < size);
  };
  // The compressed data begins after the header, the tables and refcounts: the last
  // quarter of the file is compressed data for sure.
  std::string flipped = whole;
  for (size_t i = whole.size() * 3 / 4; i < whole.size() * 3 / 4 + 4096; ++i) flipped[i] ^= 0x5a;
  both_refuse(flipped, "deflate bytes changed");
  both_refuse(whole.substr(0, whole.size() * 3 / 4), "cut in the compressed data");
}

}  // namespace cachemgr::test

namespace cachemgr::test {

TEST_CASE("the qcow2 reader stops at its time limit, as a qemu-img run does") {
  TempDir tmp("qcow2-reader");
  const uint64_t size = 40u << 20;  // several batches
  const fs::path raw = tmp / "src.raw", img = tmp / "img.qcow2";
  MakeRaw(raw, size, 11);
  QemuImg({"convert", "-c", "-f", "raw", "-O", "qcow2", raw.string(), img.string()});
  Fd f(img);
  uint64_t handed = 0;
  Error e = Thrown([&] {
    convert::ReadQcow2Disk(f.fd, size, "img-slow",
                           {[&](uint64_t n) { handed += n; },
                            [&](std::span<const std::byte> d) { handed += d.size(); }},
                           2, std::chrono::seconds(-1));
  });
  CHECK(e.code() == Errc::kTimeout);
  CHECK(std::string(e.what()).find("conversion.timeout_s") != std::string::npos);
  CHECK(handed < size);
}

TEST_CASE("an L2 table that ends past the end of the file reads as zeros there, as qemu reads") {
  TempDir tmp("qcow2-reader");
  // 512-byte clusters: one L2 table maps 32 KiB. The last table's half past the end of the
  // file maps the disk's last 16 KiB, which read as zeros.
  const uint64_t size = 64u << 10;
  const fs::path img = tmp / "img.qcow2";
  QemuImg({"create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img.string(),
           std::to_string(size)});
  QemuIo(img, "write -P 0x42 0 " + std::to_string(size));
  // The second L2 table copied to the end of the file, the L1 entry pointed at the copy,
  // and the file cut in the copy's middle.
  std::string b = ReadFile(img);
  REQUIRE(b.size() % 512 == 0);
  const uint64_t l1 = util::LoadBe64(b.data() + 40);
  const uint64_t entry = util::LoadBe64(b.data() + l1 + 8);
  const uint64_t l2 = entry & 0x00fffffffffffe00ull;
  REQUIRE(l2 != 0);
  const uint64_t moved = b.size();
  b += b.substr(l2, 512);
  const uint64_t new_entry = (entry & ~0x00fffffffffffe00ull) | moved;
  for (int i = 0; i < 8; ++i) b[l1 + 8 + i] = static_cast<char>(new_entry >> (56 - 8 * i));
  WriteFile(img, b.substr(0, moved + 256));
  Fd cut(img);
  std::string got;
  convert::ReadQcow2Disk(cut.fd, size, "img",
                         {[&](uint64_t n) { got.append(n, '\0'); },
                          [&](std::span<const std::byte> d) {
                            got.append(reinterpret_cast<const char*>(d.data()), d.size());
                          }},
                         1, std::chrono::seconds(60));
  CHECK(got == QemuRaw(img, tmp.path()));
}

}  // namespace cachemgr::test
