// The Glance source and the fetch pipeline against the fixture's real glance-api (file
// and rbd stores, no Keystone), into the local backend.
#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <set>

#include "fetch_util.h"
#include "source/source.h"
#include "support/cluster.h"
#include "support/glance_client.h"
#include "util/hash.h"

namespace cachemgr::test {
namespace {

namespace fs = std::filesystem;

std::string ClusterFsid() {
  std::ifstream in(CephConf());
  std::string line;
  std::regex re(R"(^\s*fsid\s*=\s*(\S+))");
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, re)) return m[1];
  }
  FAIL("no fsid in " << CephConf());
  return {};
}

struct GlanceBed : FetchBed {
  std::string endpoint = GlanceEndpoint();
  std::unique_ptr<source::Source> source;
  fs::path golden;
  std::vector<std::string> ids;
  GlanceBed() {
    GlanceSourceOptions o;
    o.endpoint = endpoint;
    source = source::MakeGlanceSource(o, nullptr);
    golden = tmp / "golden.raw";
    WriteRawImage(golden, 6 << 20, 2 << 20, 11);
  }
  ~GlanceBed() {
    for (const auto& id : ids) {
      try {
        glance::DeleteImage(endpoint, id);
      } catch (...) {
      }
    }
  }
  std::string Upload(const std::string& disk_format, const fs::path& file,
                     const std::string& store = "") {
    ids.push_back(glance::CreateImage(endpoint, disk_format, file, store));
    return ids.back();
  }
  // The file Glance's fs store keeps for an image.
  fs::path Stored(const std::string& id) const { return RunDir() / "glance" / "images" / id; }
  fetch::FetchResult Fetch(const std::string& id) {
    auto meta = source->Describe(id);
    return fetch::FetchInto(*source, meta, *backend, Ref("entry-" + id), options, nullptr);
  }
  Error FetchFails(const std::string& id) {
    Error e = Thrown([&] { Fetch(id); });
    CHECK_MESSAGE(std::string(e.what()).find(id) != std::string::npos, e.what());
    CHECK(!backend->Exists(Ref("entry-" + id)));
    CHECK(ConversionFiles() == 0);
    return e;
  }
};

TEST_CASE("raw image from Glance's file store streams into the backend") {
  GlanceBed bed;
  std::string id = bed.Upload("raw", bed.golden);
  auto meta = bed.source->Describe(id);
  CHECK(meta.status == "active");
  CHECK(meta.disk_format == "raw");
  CHECK(meta.container_format == "bare");
  CHECK(meta.size == fs::file_size(bed.golden));
  CHECK(meta.checksum == util::HashFile("md5", bed.golden.string()));
  CHECK(meta.os_hash_algo == "sha512");
  CHECK(meta.os_hash_value == util::HashFile("sha512", bed.golden.string()));
  CHECK(!meta.updated_at.empty());
  CHECK(meta.direct_url.rfind("file://", 0) == 0);
  CHECK(!source::ParseRbdLocation(meta.direct_url));

  uint64_t last_done = 0;
  bed.options.progress = [&](const std::string& stage, uint64_t done, uint64_t) {
    CHECK(stage == "download");
    last_done = done;
  };
  auto r = bed.Fetch(id);
  CHECK(!r.adopted);
  CHECK(r.detected_format == "raw");
  CHECK(r.bytes_downloaded == fs::file_size(bed.golden));
  CHECK(r.md5 == meta.checksum);
  CHECK(r.os_hash_value == meta.os_hash_value);
  CHECK(last_done == fs::file_size(bed.golden));
  CHECK(bed.ReadImage(bed.Ref("entry-" + id)) == ReadFile(bed.golden));
  CHECK(bed.ConversionFiles() == 0);

  bool listed = false;
  for (const auto& m : bed.source->ListActive()) listed |= m.id == id;
  CHECK(listed);
  bed.source->Ping();
}

TEST_CASE("qcow2 image from Glance is inspected, converted and imported") {
  GlanceBed bed;
  QemuImg({"convert", "-f", "raw", "-O", "qcow2", bed.golden.string(),
           (bed.tmp / "g.qcow2").string()});
  std::string id = bed.Upload("qcow2", bed.tmp / "g.qcow2");
  std::set<std::string> stages;
  bed.options.progress = [&](const std::string& stage, uint64_t, uint64_t) {
    stages.insert(stage);
  };
  auto r = bed.Fetch(id);
  CHECK(r.detected_format == "qcow2");
  CHECK(r.virtual_size == fs::file_size(bed.golden));
  CHECK(r.bytes_downloaded == fs::file_size(bed.tmp / "g.qcow2"));
  CHECK(stages.count("download") == 1);
  CHECK(stages.count("convert") == 1);
  CHECK(bed.ReadImage(bed.Ref("entry-" + id)) == ReadFile(bed.golden));
  CHECK(bed.ConversionFiles() == 0);
}

TEST_CASE("an image in Glance's rbd store has a direct_url on this cluster") {
  GlanceBed bed;
  std::string id = bed.Upload("raw", bed.golden, "ceph");
  auto meta = bed.source->Describe(id);
  auto loc = source::ParseRbdLocation(meta.direct_url);
  REQUIRE_MESSAGE(loc, meta.direct_url);
  CHECK(loc->fsid == ClusterFsid());
  CHECK(loc->pool == "images");
  CHECK(loc->image == id);
  CHECK(loc->snap == "snap");
  CHECK(std::find(meta.locations.begin(), meta.locations.end(), meta.direct_url) !=
        meta.locations.end());
  // Downloading through Glance works too (the path when the cluster differs).
  auto r = bed.Fetch(id);
  CHECK(r.md5 == meta.checksum);
  CHECK(bed.ReadImage(bed.Ref("entry-" + id)) == ReadFile(bed.golden));
}

TEST_CASE("a stored file that no longer matches its checksum is kCorrupt, nothing kept") {
  GlanceBed bed;
  std::string id = bed.Upload("raw", bed.golden);
  {
    std::fstream f(bed.Stored(id), std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    f.seekp(4096);
    f.put('\x5a');
  }
  Error e = bed.FetchFails(id);
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find("mismatch") != std::string::npos);

  // The same through the conversion path.
  QemuImg({"convert", "-f", "raw", "-O", "qcow2", bed.golden.string(),
           (bed.tmp / "g.qcow2").string()});
  std::string q = bed.Upload("qcow2", bed.tmp / "g.qcow2");
  {
    std::fstream f(bed.Stored(q), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(bed.Stored(q)) - 10));
    f.put('\x01');
  }
  CHECK(bed.FetchFails(q).code() == Errc::kCorrupt);
}

TEST_CASE("a stored file cut short stalls the download: kTimeout after the retries, nothing kept") {
  // Glance promises the recorded size in Content-Length and then stops sending: the
  // low-speed limit ends each attempt (the Range retries stall the same way).
  GlanceBed bed;
  GlanceSourceOptions o;
  o.endpoint = bed.endpoint;
  o.timeout_s = 2;
  o.retries = 1;
  // The whole-download deadline (2 s + 6 MiB at this rate) is not what ends it here; curl's
  // speed window keeps the first burst for seconds, so an attempt takes up to ~8 s.
  o.min_rate_kib_s = 64;
  bed.source = source::MakeGlanceSource(o, nullptr);
  std::string id = bed.Upload("raw", bed.golden);
  fs::resize_file(bed.Stored(id), fs::file_size(bed.golden) / 2);
  Error e = bed.FetchFails(id);
  INFO(std::string(e.what()));
  CHECK(e.code() == Errc::kTimeout);
  CHECK(std::string(e.what()).find("2 attempt") != std::string::npos);
}

TEST_CASE("qcow2 uploaded as raw is refused before a byte reaches the backend") {
  GlanceBed bed;
  WriteFile(bed.tmp / "secret", std::string(4096, 's'));
  QemuImg({"create", "-f", "qcow2", "-b", (bed.tmp / "secret").string(), "-F", "raw",
           (bed.tmp / "evil.qcow2").string(), "4M"});
  std::string id = bed.Upload("raw", bed.tmp / "evil.qcow2");
  Error e = bed.FetchFails(id);
  CHECK(e.code() == Errc::kRefused);
  CHECK(std::string(e.what()).find("qcow2") != std::string::npos);
  // And uploaded honestly as qcow2, its backing file still refuses it.
  std::string q = bed.Upload("qcow2", bed.tmp / "evil.qcow2");
  e = bed.FetchFails(q);
  CHECK(e.code() == Errc::kRefused);
  CHECK(std::string(e.what()).find("backing file") != std::string::npos);
}

TEST_CASE("a missing image is kNotFound; a queued one is refused") {
  GlanceBed bed;
  const std::string missing = "00000000-0000-4000-8000-000000000000";
  Error e = Thrown([&] { bed.source->Describe(missing); });
  CHECK(e.code() == Errc::kNotFound);
  CHECK(std::string(e.what()).find(missing) != std::string::npos);
  CHECK(std::string(e.what()).find("404") != std::string::npos);
  CHECK(Thrown([&] { bed.source->Download(missing, [](auto) {}); }).code() == Errc::kNotFound);

  std::string queued = glance::CreateQueuedImage(bed.endpoint, "raw");
  bed.ids.push_back(queued);
  auto meta = bed.source->Describe(queued);
  CHECK(meta.status == "queued");
  CHECK(!meta.size);
  e = bed.FetchFails(queued);
  CHECK(e.code() == Errc::kRefused);
  CHECK(std::string(e.what()).find("queued") != std::string::npos);
  CHECK(Thrown([&] { bed.source->Download(queued, [](auto) {}); }).code() == Errc::kNotFound);
}

}  // namespace
}  // namespace cachemgr::test
