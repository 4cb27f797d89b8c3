// Hashing, format detection, the image-directory source, and the fetch pipeline on the
// local backend, with a corpus of hostile images made here with qemu-img.
#include <doctest/doctest.h>

#include "support/test_util.h"
#include <fcntl.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "convert/format.h"
#include "fetch_util.h"
#include "source/source.h"
#include "storage/local/local_backend.h"
#include "util/hash.h"

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;

TEST_CASE("hashers give the standard digests, whole or in pieces") {
  const std::string abc = "abc";
  auto digest = [&](const std::string& algo) {
    util::Hasher h(algo);
    h.Update(abc.data(), abc.size());
    return h.HexDigest();
  };
  CHECK(digest("md5") == "900150983cd24fb0d6963f7d28e17f72");
  CHECK(digest("sha1") == "a9993e364706816aba3e25717850c26c9cd0d89d");
  CHECK(digest("sha256") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(digest("sha384").rfind("cb00753f45a35e8bb5a03d699ac65007", 0) == 0);
  CHECK(digest("sha512").rfind("ddaf35a193617abacc417349ae204131", 0) == 0);
  util::Hasher pieces("sha512");
  pieces.Update("a", 1);
  pieces.Update("bc", 2);
  CHECK(pieces.HexDigest() == digest("sha512"));
  CHECK(Thrown([] { util::Hasher h("crc32"); }).code() == Errc::kInvalidArgument);
}

TEST_CASE("the header tells the real format") {
  TempDir tmp("detect");
  struct Case {
    std::string qemu_fmt;
    std::vector<std::string> opts;
    std::string expected;
  };
  std::vector<Case> cases = {
      {"raw", {}, "raw"},
      {"qcow2", {}, "qcow2"},
      {"vmdk", {}, "vmdk"},
      {"vmdk", {"-o", "subformat=streamOptimized"}, "vmdk"},
      {"vmdk", {"-o", "subformat=monolithicFlat"}, "vmdk-descriptor"},
      {"vdi", {}, "vdi"},
      {"vpc", {}, "vpc"},
      {"vpc", {"-o", "subformat=fixed"}, "vpc"},
      {"vhdx", {}, "vhdx"},
      {"qed", {}, "qed"},
  };
  int i = 0;
  for (const auto& c : cases) {
    CAPTURE(c.qemu_fmt);
    CAPTURE(c.expected);
    auto path = tmp / ("img" + std::to_string(i++));
    std::vector<std::string> args = {"create", "-f", c.qemu_fmt};
    args.insert(args.end(), c.opts.begin(), c.opts.end());
    args.push_back(path.string());
    args.push_back("4M");
    QemuImg(args);
    CHECK(convert::DetectFileFormat(path) == c.expected);
  }
  CHECK(convert::QemuFormat("vhd") == "vpc");
  CHECK(convert::QemuFormat("ami").empty());
}

TEST_CASE("rbd locations and image ids") {
  auto loc = source::ParseRbdLocation("rbd://1f2e-fsid/images/abc-123/snap");
  REQUIRE(loc);
  CHECK(loc->fsid == "1f2e-fsid");
  CHECK(loc->pool == "images");
  CHECK(loc->image == "abc-123");
  CHECK(loc->snap == "snap");
  CHECK(!source::ParseRbdLocation("rbd://images/abc"));
  CHECK(!source::ParseRbdLocation("rbd://f//abc/snap"));
  CHECK(!source::ParseRbdLocation("file:///var/lib/glance/images/abc"));
  CHECK(!source::ParseRbdLocation("rbd://a/b/c/d/e"));
  source::ValidateImageId("3f2c1b8e-0a6d-4c1e-9d55-0b9f5c2e7a10");
  for (const std::string& bad : std::vector<std::string>{"", "../etc/passwd", "a/b", ".hidden", "-x", "a b", std::string(201, 'a')}) {
    CAPTURE(bad);
    CHECK(Thrown([&] { source::ValidateImageId(bad); }).code() == Errc::kInvalidArgument);
  }
}

TEST_CASE("file source: describe, list, checksums, not found") {
  DirBed bed;
  fs::copy_file(bed.golden, bed.images / "img-raw");
  bed.Add("img-qcow2", "qcow2");
  WriteSidecar(bed.images, "img-claimed",
               {{"disk_format", "vmdk"}, {"checksum", std::string(32, '0')}});
  fs::copy_file(bed.golden, bed.images / "img-claimed");

  auto raw = bed.source->Describe("img-raw");
  CHECK(raw.status == "active");
  CHECK(raw.disk_format == "raw");
  CHECK(raw.container_format == "bare");
  CHECK(raw.size == fs::file_size(bed.golden));
  CHECK(raw.virtual_size == raw.size);
  CHECK(raw.checksum == Md5(bed.golden));
  CHECK(raw.os_hash_algo == "sha512");
  CHECK(raw.os_hash_value == util::HashFile("sha512", bed.golden.string()));
  CHECK(raw.updated_at.size() == 20);  // 2026-01-02T03:04:05Z
  CHECK(raw.updated_at.back() == 'Z');
  {
    auto local = bed.source->OpenLocal("img-raw");
    REQUIRE(local.has_value());
    CHECK(local->size() == fs::file_size(bed.golden));
    CHECK(local->name() == (bed.images / "img-raw").string());
  }

  CHECK(bed.source->Describe("img-qcow2").disk_format == "qcow2");
  auto claimed = bed.source->Describe("img-claimed");
  CHECK(claimed.disk_format == "vmdk");
  CHECK(claimed.checksum == std::string(32, '0'));

  auto listed = bed.source->ListActive();
  std::set<std::string> ids;
  for (const auto& m : listed) ids.insert(m.id);
  CHECK(ids == std::set<std::string>{"img-raw", "img-qcow2", "img-claimed"});

  CHECK(Thrown([&] { bed.source->Describe("missing"); }).code() == Errc::kNotFound);
  CHECK(Thrown([&] { bed.source->Describe("../images/img-raw"); }).code() ==
        Errc::kInvalidArgument);
  bed.source->Ping();
}

// A DigestCache kept in memory, shared by several sources as the index is by processes.
struct MemoryDigests : source::DigestCache {
  std::map<std::string, source::FileDigests> rows;
  int puts = 0;
  std::optional<source::FileDigests> Find(const std::string& l, const std::string& id) override {
    auto it = rows.find(l + "/" + id);
    if (it == rows.end()) return std::nullopt;
    return it->second;
  }
  void Put(const std::string& l, const std::string& id, const source::FileDigests& d) override {
    rows[l + "/" + id] = d;
    ++puts;
  }
  void Forget(const std::string& l, const std::string& id) override { rows.erase(l + "/" + id); }
};

TEST_CASE("file source: digests are computed once per file version, kept in the DigestCache") {
  DirBed bed;
  const fs::path img = bed.images / "img";
  WriteRawImage(img, 32 << 20, 32 << 20, 5);
  auto kept = std::make_shared<MemoryDigests>();
  bed.source->SetDigestCache(kept);
  auto first = bed.source->Describe("img");
  CHECK(first.checksum == Md5(img));
  CHECK(kept->puts == 1);

  // Another source (the next process) with the same store asks a stat, not a hash.
  auto next = source::MakeFileSource({bed.images.string()}, nullptr);
  next->SetDigestCache(kept);
  uint64_t before = test::BytesReadSoFar();
  auto again = next->Describe("img");
  CHECK(test::BytesReadSoFar() - before < (1 << 20));
  CHECK(again.checksum == first.checksum);
  CHECK(again.os_hash_value == first.os_hash_value);
  CHECK(kept->puts == 1);

  // Same size, mtime put back (touch -d), one byte changed: ctime tells it.
  struct stat st {};
  REQUIRE(::stat(img.c_str(), &st) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  {
    std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1 << 20);
    f.put('\x5a');
  }
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, img.c_str(), times, 0) == 0);
  auto changed = next->Describe("img");
  CHECK(changed.updated_at == first.updated_at);
  CHECK(changed.size == first.size);
  CHECK(changed.checksum == Md5(img));
  CHECK(changed.checksum != first.checksum);
  CHECK(kept->puts == 2);

  // A removed image's row goes with it.
  fs::remove(img);
  CHECK(Thrown([&] { next->Describe("img"); }).code() == Errc::kNotFound);
  CHECK(kept->rows.empty());
}

TEST_CASE("file source + raw: the file is reflinked (or copied) into the backend and checked") {
  DirBed bed;
  fs::copy_file(bed.golden, bed.images / "raw1");
  std::vector<std::string> stages;
  bed.options.progress = [&](const std::string& stage, uint64_t, uint64_t) {
    if (stages.empty() || stages.back() != stage) stages.push_back(stage);
  };
  auto r = bed.Fetch("raw1", "entry-raw1");
  // A reflink where the filesystem has them; a copy elsewhere, never a hard link.
  CHECK(r.adopted == storage::LocalBackend::ReflinkWorks(bed.tmp.path()));
  CHECK(r.detected_format == "raw");
  CHECK(r.md5 == Md5(bed.golden));
  CHECK(r.bytes_downloaded == fs::file_size(bed.golden));
  CHECK(r.virtual_size == fs::file_size(bed.golden));
  CHECK(bed.ReadImage(bed.Ref("entry-raw1")) == ReadFile(bed.golden));
  CHECK(stages == std::vector<std::string>{"download"});
  CHECK(bed.ConversionFiles() == 0);
  // The target must be new.
  CHECK(Thrown([&] { bed.Fetch("raw1", "entry-raw1"); }).code() == Errc::kAlreadyExists);
}

TEST_CASE("file source: every convertible format becomes the same raw bytes") {
  DirBed bed;
  const std::string golden = ReadFile(bed.golden);
  struct Case {
    std::string id, qemu_fmt, disk_format;
    std::vector<std::string> opts;
  };
  std::vector<Case> cases = {
      {"q2", "qcow2", "qcow2", {}},
      {"q2c", "qcow2", "qcow2", {"-c"}},
      {"vm", "vmdk", "vmdk", {}},
      {"vms", "vmdk", "vmdk", {"-o", "subformat=streamOptimized"}},
      {"vd", "vdi", "vdi", {}},
      {"vh", "vpc", "vhd", {"-o", "subformat=dynamic,force_size=on"}},
      {"vx", "vhdx", "vhdx", {}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.id);
    bed.Add(c.id, c.qemu_fmt, c.opts);
    WriteSidecar(bed.images, c.id, {{"disk_format", c.disk_format}});
    auto r = bed.Fetch(c.id, "entry-" + c.id);
    CHECK(!r.adopted);
    CHECK(r.detected_format == convert::QemuFormat(c.disk_format));
    CHECK(r.virtual_size == golden.size());
    CHECK(r.md5 == Md5(bed.images / c.id));
    CHECK(r.convert.count() > 0);
    CHECK(bed.ReadImage(bed.Ref("entry-" + c.id)) == golden);
    CHECK(bed.ConversionFiles() == 0);
  }
}

TEST_CASE("a plain qcow2 is read through its map; a compressed one by the qcow2 reader") {
  DirBed bed;
  const uint64_t size = 8 << 20;

  // Plain clusters: the map names where each data run lies in the file.
  bed.Add("plain", "qcow2");
  auto map = convert::MapPlainQcow2(bed.images / "plain", size, "plain", bed.options.conversion,
                                    nullptr);
  REQUIRE(map.has_value());
  uint64_t covered = 0, data = 0;
  const uint64_t file_size = fs::file_size(bed.images / "plain");
  for (const auto& e : *map) {
    CHECK(e.start == covered);
    covered += e.length;
    if (e.data) {
      data += e.length;
      CHECK(e.offset + e.length <= file_size);
    }
  }
  CHECK(covered == size);
  CHECK(data >= (3u << 20));  // the golden image's data run, maybe in whole clusters
  CHECK(data < size);         // and its hole is not data
  // The size a caller expects must be what the map covers.
  CHECK_FALSE(convert::MapPlainQcow2(bed.images / "plain", size + 65536, "plain",
                                     bed.options.conversion, nullptr));

  // Compressible data written with -c: compressed clusters have no plain place in the
  // file, so the image is read by the qcow2 reader (no raw copy), to the same bytes.
  const fs::path text = bed.tmp / "text.raw";
  {
    std::string line = "the same line of text, again and again\n";
    std::string body;
    while (body.size() < (2u << 20)) body += line;
    WriteFile(text, body);
    fs::resize_file(text, size);
  }
  QemuImg({"convert", "-c", "-f", "raw", "-O", "qcow2", text.string(),
           (bed.images / "packed").string()});
  CHECK_FALSE(convert::MapPlainQcow2(bed.images / "packed", size, "packed",
                                     bed.options.conversion, nullptr));
  WriteSidecar(bed.images, "packed", {{"disk_format", "qcow2"}});
  auto r = bed.Fetch("packed", "entry-packed");
  CHECK(r.virtual_size == size);
  CHECK(r.read_by == "reader");
  CHECK(bed.ReadImage(bed.Ref("entry-packed")) == ReadFile(text));

  // And the mapped one reads back the same as its source.
  WriteSidecar(bed.images, "plain", {{"disk_format", "qcow2"}});
  CHECK(bed.Fetch("plain", "entry-plain").read_by == "map");
  CHECK(bed.ReadImage(bed.Ref("entry-plain")) == ReadFile(bed.golden));
  CHECK(bed.ConversionFiles() == 0);
}

TEST_CASE("a checksum mismatch is kCorrupt and leaves nothing behind") {
  DirBed bed;
  fs::copy_file(bed.golden, bed.images / "bad-raw");
  WriteSidecar(bed.images, "bad-raw", {{"disk_format", "raw"}, {"checksum", std::string(32, '0')}});
  Error e = bed.FetchFails("bad-raw");
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find("checksum mismatch") != std::string::npos);
  // The source's own file is untouched by the failed adoption.
  CHECK(Md5(bed.images / "bad-raw") == Md5(bed.golden));

  bed.Add("bad-q2", "qcow2");
  WriteSidecar(bed.images, "bad-q2",
               {{"disk_format", "qcow2"},
                {"os_hash_algo", "sha512"},
                {"os_hash_value", std::string(128, 'f')}});
  e = bed.FetchFails("bad-q2");
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find("sha512 mismatch") != std::string::npos);
}

TEST_CASE("hostile and broken images are refused; nothing is left on the backend or in the "
          "conversion dir") {
  DirBed bed;
  auto img = [&](const std::string& id) { return (bed.images / id).string(); };
  auto expect = [&](const std::string& id, const std::string& disk_format, Errc code,
                    const std::string& reason) {
    CAPTURE(id);
    WriteSidecar(bed.images, id, {{"disk_format", disk_format}});
    Error e = bed.FetchFails(id);
    CHECK_MESSAGE(e.code() == code, e.what());
    CHECK_MESSAGE(std::string(e.what()).find(reason) != std::string::npos, e.what());
  };

  // qcow2 whose backing file is a host file: converting it would read that file.
  WriteFile(bed.tmp / "secret", std::string(65536, 's'));
  QemuImg({"create", "-f", "qcow2", "-b", (bed.tmp / "secret").string(), "-F", "raw",
           img("backing"), "8M"});
  expect("backing", "qcow2", Errc::kRefused, "backing file");

  // qcow2 whose data lives in an external data file.
  QemuImg({"create", "-f", "qcow2", "-o", "data_file=" + (bed.tmp / "secret-data").string(),
           img("datafile"), "8M"});
  expect("datafile", "qcow2", Errc::kRefused, "external data file");

  // Claims raw, is qcow2 (would pass through as "raw" bytes, or worse, be probed).
  bed.Add("q2-as-raw", "qcow2");
  expect("q2-as-raw", "raw", Errc::kRefused, "header says 'qcow2'");
  // Claims qcow2, is raw.
  fs::copy_file(bed.golden, bed.images / "raw-as-q2");
  expect("raw-as-q2", "qcow2", Errc::kRefused, "header says 'raw'");
  // Claims vmdk, is vdi.
  bed.Add("vdi-as-vmdk", "vdi");
  expect("vdi-as-vmdk", "vmdk", Errc::kRefused, "header says 'vdi'");

  // vmdk descriptors whose extents are other files.
  QemuImg({"create", "-f", "vmdk", "-o", "subformat=monolithicFlat", img("vmdk-flat"), "8M"});
  expect("vmdk-flat", "vmdk", Errc::kRefused, "external");
  WriteFile(bed.images / "vmdk-etc",
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
            "createType=\"monolithicFlat\"\n\nRW 16 FLAT \"/etc/passwd\" 0\n");
  expect("vmdk-etc", "vmdk", Errc::kRefused, "external");
  QemuImg({"create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", img("vmdk-2gb"), "8M"});
  expect("vmdk-2gb", "vmdk", Errc::kRefused, "external");
  QemuImg({"create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", img("vmdk-2gbs"), "8M"});
  expect("vmdk-2gbs", "vmdk", Errc::kRefused, "external");

  // An encrypted qcow2: its stored clusters are ciphertext. The header's crypt_method is
  // set by hand (1, AES): making a LUKS one has qemu-img time its key derivation, which
  // fails on a loaded machine ("Unable to get accurate CPU usage").
  QemuImg({"create", "-f", "qcow2", img("encrypted"), "8M"});
  {
    std::string header = ReadFile(img("encrypted"));
    REQUIRE(header.size() > 36);
    header.replace(32, 4, std::string("\0\0\0\1", 4));
    WriteFile(img("encrypted"), header);
  }
  expect("encrypted", "qcow2", Errc::kRefused, "image is encrypted");

  // QED is never let in, whatever it claims.
  QemuImg({"create", "-f", "qed", img("qed"), "8M"});
  expect("qed", "qcow2", Errc::kRefused, "QED");

  // Larger than the configured limit.
  QemuImg({"create", "-f", "qcow2", img("huge"), "3G"});
  bed.options.conversion.max_virtual_size_gb = 2;
  expect("huge", "qcow2", Errc::kRefused, "max_virtual_size_gb");
  bed.options.conversion.max_virtual_size_gb = 1024;

  // A qcow2 cut short: qemu-img cannot read it.
  bed.Add("whole", "qcow2");
  std::string whole = ReadFile(bed.images / "whole");
  WriteFile(bed.images / "cut", whole.substr(0, 100));
  expect("cut", "qcow2", Errc::kRefused, "qcow2");

  // A disk_format this project does not convert.
  fs::copy_file(bed.golden, bed.images / "ami");
  expect("ami", "ami", Errc::kRefused, "not supported");

  // Fewer bytes than the source says: truncated (digests cleared, so allowed unverified:
  // the size alone must catch it).
  bed.options.allow_unverified = true;
  fs::copy_file(bed.golden, bed.images / "short");
  auto meta = bed.source->Describe("short");
  *meta.size += 4096;
  meta.checksum.clear();
  meta.os_hash_value.clear();
  Error e = bed.FetchFails("short", meta);
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find("truncated") != std::string::npos);
  meta.disk_format = "qcow2";
  bed.Add("short-q2", "qcow2");
  meta = bed.source->Describe("short-q2");
  *meta.size += 1;
  meta.checksum.clear();
  meta.os_hash_value.clear();
  e = bed.FetchFails("short-q2", meta);
  CHECK(e.code() == Errc::kCorrupt);

  // The host file named by the hostile images was never read into an image.
  CHECK(EntryImages(bed).empty());
}

TEST_CASE("a non-active or non-bare image is refused before any byte moves") {
  DirBed bed;
  fs::copy_file(bed.golden, bed.images / "img");
  auto meta = bed.source->Describe("img");
  meta.status = "queued";
  CHECK(bed.FetchFails("img", meta).code() == Errc::kRefused);
  meta.status = "deleted";
  CHECK(bed.FetchFails("img", meta).code() == Errc::kNotFound);
  meta.status = "active";
  meta.container_format = "ova";
  CHECK(bed.FetchFails("img", meta).code() == Errc::kRefused);
}

TEST_CASE("the conversion dir must have room for the download and the raw image") {
  DirBed bed;
  bed.Add("q2", "qcow2");
  WriteSidecar(bed.images, "q2", {{"disk_format", "qcow2"}, {"virtual_size", uint64_t{1} << 60}});
  bed.options.conversion.max_virtual_size_gb = double(uint64_t{1} << 31);  // admits 1 EiB
  Error e = bed.FetchFails("q2");
  CHECK(e.code() == Errc::kIo);
  CHECK(std::string(e.what()).find(bed.options.conversion.dir) != std::string::npos);
  CHECK(std::string(e.what()).find("bytes free") != std::string::npos);
}

}  // namespace
}  // namespace cachemgr::test
