// The cache engine with the Glance source and the RBD backend, against the fixtures'
// real glance-api and Ceph cluster: direct clones of images in Glance's rbd store (same
// cluster), flatten past the clone-depth limit, downloads from the file store, and the
// failures that must leave nothing behind.
#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "cachemgr/cache.h"
#include "engine/naming.h"
#include "engine_env.h"
#include "storage/factory.h"
#include "support/cluster.h"
#include "support/glance_client.h"
#include "support/test_util.h"

using namespace cachemgr;
using namespace cachemgr::test;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// One cache on volumes/<unique namespace> whose source is the fixture's Glance.
struct GlanceEnv {
  TempDir dir{"engine-glance"};
  std::string ns = Unique("ns");
  std::string endpoint = GlanceEndpoint();
  Options options;
  std::unique_ptr<storage::Backend> backend;
  fs::path golden;
  std::vector<std::string> glance_ids;

  // The RBD backend in a namespace of its own, or (rbd false) the local one.
  explicit GlanceEnv(bool rbd = true) {
    if (rbd) CreateRbdNamespace(ns);
    options = EngineOptions(dir.path(), rbd, ns);
    options.source.type = SourceType::kGlance;
    options.source.glance.endpoint = endpoint;
    backend = storage::MakeBackend(options.backend, nullptr);
    golden = dir / "golden.raw";
    WriteRawImage(golden, 6 * kMiB, 2 * kMiB, 21);
  }
  ~GlanceEnv() {
    // Glance refuses to delete an rbd-store image whose snapshot still has our clones;
    // the fixture's cluster goes away with the run anyway.
    for (const auto& id : glance_ids) {
      try {
        glance::DeleteImage(endpoint, id);
      } catch (...) {
      }
    }
  }
  std::string Upload(const std::string& disk_format, const fs::path& file,
                     const std::string& store = "") {
    glance_ids.push_back(glance::CreateImage(endpoint, disk_format, file, store));
    return glance_ids.back();
  }
  fs::path Qcow2Of(const fs::path& raw) {
    fs::path out = dir / (raw.filename().string() + ".qcow2");
    REQUIRE(RunCommand({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.string(),
                        out.string()}) == 0);
    return out;
  }
  // The file Glance's fs store keeps for an image.
  fs::path Stored(const std::string& id) const { return RunDir() / "glance" / "images" / id; }
  std::unique_ptr<Cache> Open() const { return Cache::Open(options); }
  storage::ImageRef Vol(const std::string& name) const { return {backend->volume_pool(), name}; }
  // The volume's first bytes are the golden file's.
  bool SameData(const std::string& volume) const {
    auto size = fs::file_size(golden);
    return Md5OfImage(*backend, Vol(volume), size) == Md5OfFile(golden, size);
  }
  uint64_t CountRows(const std::string& sql) const {
    SQLite::Database db(options.index, SQLite::OPEN_READONLY);
    return static_cast<uint64_t>(db.execAndGet(sql).getInt64());
  }
  // Everything in this test's namespace: entries, staging images and volumes share it.
  std::vector<std::string> Objects() const { return backend->List(backend->entry_pool()); }
};

Error Thrown(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no cachemgr::Error thrown");
  return Error(Errc::kInternal, "unreachable");
}

// What an engine must never change on Glance's own RBD image.
struct GlanceImageState {
  uint64_t size = 0;
  std::string md5;
  std::map<std::string, std::string> metadata;
  std::set<std::pair<std::string, bool>> snaps;  // name, protected
  bool operator==(const GlanceImageState&) const = default;
};

GlanceImageState StateOf(storage::Backend& backend, const storage::ImageRef& ref) {
  GlanceImageState s;
  s.size = backend.Stat(ref).size;
  s.md5 = Md5OfImage(backend, ref, s.size);
  s.metadata = backend.GetMetadata(ref);
  for (const auto& snap : backend.ListSnapshots(ref))
    s.snaps.insert({snap.name, snap.is_protected});
  return s;
}

}  // namespace

TEST_CASE("a raw image in Glance's rbd store is cloned directly; later volumes are hits") {
  GlanceEnv env;
  std::string id = env.Upload("raw", env.golden, "ceph");
  const storage::ImageRef glance_image{"images", id};
  REQUIRE(env.backend->Exists(glance_image));
  const auto before = StateOf(*env.backend, glance_image);
  REQUIRE(before.snaps.count({"snap", true}) == 1);

  auto cache = env.Open();
  std::vector<Progress> progress;
  auto first =
      cache->CreateVolume({.image_id = id, .volume = "vol-a", .progress = [&](const Progress& p) {
                             progress.push_back(p);
                           }});
  CHECK(first.plan == Plan::kDirect);
  CHECK(first.bytes_downloaded == 0);
  CHECK(first.size_bytes == 6 * kMiB);
  CHECK(first.depth == 2);  // volume -> entry -> Glance's image
  CHECK(progress.empty());  // nothing downloaded, converted or imported
  CHECK(env.SameData("vol-a"));

  auto entry = cache->Lookup(id);
  REQUIRE(entry);
  CHECK(entry->state == EntryState::kReady);
  CHECK(entry->depth == 1);
  CHECK(entry->disk_format == "raw");
  CHECK(entry->virtual_size == 6 * kMiB);
  CHECK(entry->checksum == glance::GetImage(env.endpoint, id)["checksum"].get<std::string>());
  // The entry is a clone of Glance's snapshot, in our namespace, not a copy.
  const storage::ImageRef entry_ref{env.backend->entry_pool(), entry->cache_name};
  auto parent = env.backend->Parent(entry_ref);
  REQUIRE(parent);
  CHECK(parent->image.pool == "images");
  CHECK(parent->image.name == id);
  CHECK(parent->snap == "snap");
  CHECK(env.backend->Depth(env.Vol("vol-a")) == 2);
  CHECK(cache->Verify(id).ok);

  auto second = cache->CreateVolume({.image_id = id, .volume = "vol-b"});
  CHECK(second.plan == Plan::kClone);
  CHECK(second.bytes_downloaded == 0);
  CHECK(second.depth == 2);
  CHECK(env.SameData("vol-b"));
  auto prefill = cache->Prefill(id);
  CHECK(prefill.outcome == PrefillOutcome::kFresh);
  CHECK(prefill.bytes_downloaded == 0);

  auto stats = cache->GetStats();
  CHECK(stats.direct == 1);
  CHECK(stats.misses == 0);
  CHECK(stats.hits == 1);
  CHECK(stats.bytes_downloaded == 0);
  CHECK(stats.entries == 1);
  CHECK(cache->Volumes(id).size() == 2);

  // Writes to a volume stay in the volume: the other volume, the entry and Glance's
  // image keep their bytes.
  REQUIRE(
      RunCommand({"rbd", "--conf", CephConf().string(), "bench", "--io-type", "write", "--io-size",
                  "4096", "--io-total", "65536", "volumes/" + env.ns + "/vol-a"}) == 0);
  CHECK_FALSE(env.SameData("vol-a"));
  CHECK(env.SameData("vol-b"));
  CHECK(cache->Verify(id).ok);
  CHECK(StateOf(*env.backend, glance_image) == before);

  // Once the volumes are gone and the entry is evicted, Glance's image is as it was,
  // with no clone of ours left on its snapshot.
  cache->DeleteVolume("vol-a");
  cache->DeleteVolume("vol-b");
  cache.reset();
  env.options.cache.max_size_gb = 1.0 / 1024;  // 1 MiB: the 6 MiB entry must go
  cache = env.Open();
  auto report = cache->RunEvictionPass({});
  CHECK(report.entries_after == 0);
  CHECK_FALSE(cache->Lookup(id));
  CHECK(env.Objects().empty());
  CHECK(env.backend->Children({glance_image, "snap"}).empty());
  CHECK(StateOf(*env.backend, glance_image) == before);
}

TEST_CASE("a location on a disk Glance does not own is never cloned: the image's own bytes") {
  GlanceEnv env;
  const std::string conf = CephConf().string();
  const std::string fsid = env.backend->cluster_id();
  REQUIRE(!fsid.empty());
  // Another tenant's disk of the same size (Glance checks only the size of a location),
  // snapshotted and protected, in a pool that is not Glance's store...
  fs::path secret_file = env.dir / "secret.raw";
  WriteRawImage(secret_file, 6 * kMiB, 6 * kMiB, 99);
  const std::string secret = Unique("tenant-disk");
  REQUIRE(RunCommand(
              {"rbd", "--conf", conf, "import", secret_file.string(), "volumes/" + secret}) == 0);
  REQUIRE(RunCommand({"rbd", "--conf", conf, "snap", "create", "volumes/" + secret + "@snap"}) ==
          0);
  REQUIRE(RunCommand({"rbd", "--conf", conf, "snap", "protect", "volumes/" + secret + "@snap"}) ==
          0);
  // ... and another Glance image's RBD image in Glance's own pool (not named by our id).
  const std::string other = env.Upload("raw", secret_file, "ceph");

  const std::vector<std::string> lies = {"rbd://" + fsid + "/volumes/" + secret + "/snap",
                                         "rbd://" + fsid + "/images/" + other + "/snap"};
  auto cache = env.Open();
  uint64_t refused = 0;
  for (const auto& location : lies) {
    CAPTURE(location);
    std::string id = env.Upload("raw", env.golden);  // the fs store: its own bytes
    // Through the rbd store: Glance then takes a location in any pool of the cluster.
    glance::AddLocation(env.endpoint, id, location, "ceph");
    auto record = glance::GetImage(env.endpoint, id);
    REQUIRE(record["locations"].dump().find(location) != std::string::npos);

    const std::string volume = "vol-" + id.substr(0, 8);
    auto made = cache->CreateVolume({.image_id = id, .volume = volume});
    CHECK(made.plan == Plan::kMiss);
    CHECK(made.bytes_downloaded == 6 * kMiB);
    CHECK(env.SameData(volume));
    auto entry = cache->Lookup(id);
    REQUIRE(entry);
    CHECK(entry->depth == 0);
    CHECK(!env.backend->Parent({env.backend->entry_pool(), entry->cache_name}));
    auto stats = cache->GetStats();
    CHECK(stats.direct == 0);
    CHECK(stats.direct_refused == ++refused);
  }
  RunCommand({"rbd", "--conf", conf, "snap", "unprotect", "volumes/" + secret + "@snap"});
  RunCommand({"rbd", "--conf", conf, "snap", "purge", "volumes/" + secret});
  RunCommand({"rbd", "--conf", conf, "rm", "volumes/" + secret});
}

TEST_CASE("in Glance's own pool, only its protected snapshot \"snap\" of the image is cloned") {
  GlanceEnv env;
  const std::string conf = CephConf().string();
  const std::string fsid = env.backend->cluster_id();
  auto cache = env.Open();
  uint64_t refused = 0;
  // An RBD image in Glance's pool named by the image's own id and of its size, but whose
  // snapshot Glance did not make: unprotected, or another name.
  for (const std::string snap_case : {"unprotected", "other-name"}) {
    CAPTURE(snap_case);
    std::string id = env.Upload("raw", env.golden);  // the fs store: its own bytes
    fs::path other = env.dir / ("other-" + snap_case + ".raw");
    WriteRawImage(other, 6 * kMiB, 6 * kMiB, 77);
    REQUIRE(RunCommand({"rbd", "--conf", conf, "import", other.string(), "images/" + id}) == 0);
    const std::string snap = snap_case == "unprotected" ? "snap" : "s2";
    REQUIRE(RunCommand({"rbd", "--conf", conf, "snap", "create",
                        "images/" + id + "@" + snap}) == 0);
    if (snap_case == "other-name") {
      REQUIRE(RunCommand({"rbd", "--conf", conf, "snap", "protect",
                          "images/" + id + "@" + snap}) == 0);
    }
    const std::string location = "rbd://" + fsid + "/images/" + id + "/" + snap;
    glance::AddLocation(env.endpoint, id, location, "ceph");

    const std::string volume = "vol-" + id.substr(0, 8);
    auto made = cache->CreateVolume({.image_id = id, .volume = volume});
    CHECK(made.plan == Plan::kMiss);
    CHECK(env.SameData(volume));
    CHECK(cache->GetStats().direct_refused == ++refused);
    cache->DeleteVolume(volume);
  }
}

TEST_CASE("direct_pools: an empty list turns direct clones off") {
  GlanceEnv env;
  env.options.source.glance.direct_pools = std::vector<std::string>{};
  std::string id = env.Upload("raw", env.golden, "ceph");
  auto cache = env.Open();
  auto made = cache->CreateVolume({.image_id = id, .volume = "vol-a"});
  CHECK(made.plan == Plan::kMiss);
  CHECK(env.SameData("vol-a"));
  CHECK(cache->GetStats().direct_refused == 1);
}

TEST_CASE("flatten_clone: a direct entry past max_clone_depth is flattened, then cloned") {
  for (int max_depth : {1, 2}) {
    CAPTURE(max_depth);
    GlanceEnv env;
    env.options.cache.max_clone_depth = max_depth;
    std::string id = env.Upload("raw", env.golden, "ceph");
    const storage::ImageRef glance_image{"images", id};
    const auto before = StateOf(*env.backend, glance_image);
    auto cache = env.Open();

    auto prefill = cache->Prefill(id);
    CHECK(prefill.outcome == PrefillOutcome::kDirect);
    CHECK(prefill.bytes_downloaded == 0);
    REQUIRE(cache->Lookup(id));
    CHECK(cache->Lookup(id)->depth == 1);
    const storage::ImageRef entry_ref{env.backend->entry_pool(), cache->Lookup(id)->cache_name};

    auto v1 = cache->CreateVolume({.image_id = id, .volume = "v1"});
    auto v2 = cache->CreateVolume({.image_id = id, .volume = "v2"});
    CHECK(v1.bytes_downloaded == 0);
    CHECK(v2.bytes_downloaded == 0);
    CHECK(env.SameData("v1"));
    CHECK(env.SameData("v2"));
    if (max_depth == 1) {
      // Depth 1 + 1 > 1: the entry is flattened (detached from Glance) before the clone.
      CHECK(v1.plan == Plan::kFlattenClone);
      CHECK(v1.depth == 1);
      CHECK(v2.plan == Plan::kClone);
      CHECK(v2.depth == 1);
      CHECK(cache->Lookup(id)->depth == 0);
      CHECK_FALSE(env.backend->Parent(entry_ref));
      CHECK(env.backend->Depth(env.Vol("v1")) == 1);
      CHECK(env.backend->Depth(env.Vol("v2")) == 1);
      CHECK(env.backend->GetMetadata(entry_ref).at("cachemgr.depth") == "0");
      CHECK(env.backend->Children({glance_image, "snap"}).empty());
      // The flattened entry holds the bytes by itself: Glance can now delete its image.
      glance::DeleteImage(env.endpoint, id);
      CHECK_FALSE(env.backend->Exists(glance_image));
      CHECK(env.SameData("v1"));
      CHECK(env.SameData("v2"));
      CHECK(cache->Verify(id).ok);
    } else {
      // Depth 1 + 1 <= 2: plain clones of the direct entry.
      CHECK(v1.plan == Plan::kClone);
      CHECK(v1.depth == 2);
      CHECK(v2.plan == Plan::kClone);
      CHECK(cache->Lookup(id)->depth == 1);
      CHECK(env.backend->Parent(entry_ref));
      CHECK(env.backend->Depth(env.Vol("v1")) == 2);
    }
    if (max_depth == 2) CHECK(StateOf(*env.backend, glance_image) == before);
  }
}

TEST_CASE("a qcow2 image from Glance's file store is a miss with a download, then hits") {
  GlanceEnv env;
  auto qcow2 = env.Qcow2Of(env.golden);
  std::string id = env.Upload("qcow2", qcow2);
  auto cache = env.Open();
  std::set<std::string> stages;
  auto first =
      cache->CreateVolume({.image_id = id, .volume = "q1", .progress = [&](const Progress& p) {
                             stages.insert(p.stage);
                           }});
  CHECK(first.plan == Plan::kMiss);
  CHECK(first.bytes_downloaded == fs::file_size(qcow2));
  CHECK(first.size_bytes == 6 * kMiB);
  CHECK(first.depth == 1);
  CHECK(stages.count("download") == 1);
  CHECK(stages.count("convert") == 1);
  CHECK(env.SameData("q1"));
  auto entry = cache->Lookup(id);
  REQUIRE(entry);
  CHECK(entry->depth == 0);
  CHECK(entry->disk_format == "qcow2");
  CHECK(entry->virtual_size == 6 * kMiB);
  CHECK_FALSE(env.backend->Parent({env.backend->entry_pool(), entry->cache_name}));

  for (const char* name : {"q2", "q3"}) {
    auto hit = cache->CreateVolume({.image_id = id, .volume = name});
    CHECK(hit.plan == Plan::kClone);
    CHECK(hit.bytes_downloaded == 0);
    CHECK(hit.depth == 1);
    CHECK(env.SameData(name));
  }
  auto stats = cache->GetStats();
  CHECK(stats.misses == 1);
  CHECK(stats.hits == 2);
  CHECK(stats.direct == 0);
  CHECK(stats.bytes_downloaded == fs::file_size(qcow2));
  // No staging file left in the conversion dir.
  CHECK(fs::is_empty(env.options.conversion.dir));
}

TEST_CASE("a qcow2 image in Glance's rbd store is downloaded and converted, not cloned") {
  // Only raw bytes can be cloned: a qcow2 in RBD would give the guest the qcow2 file.
  GlanceEnv env;
  auto qcow2 = env.Qcow2Of(env.golden);
  std::string id = env.Upload("qcow2", qcow2, "ceph");
  auto cache = env.Open();
  auto r = cache->CreateVolume({.image_id = id, .volume = "q1"});
  CHECK(r.plan == Plan::kMiss);
  CHECK(r.bytes_downloaded == fs::file_size(qcow2));
  CHECK(env.SameData("q1"));
  REQUIRE(cache->Lookup(id));
  CHECK(cache->Lookup(id)->depth == 0);
}

TEST_CASE("a raw image whose stored file no longer matches its checksum is refused") {
  GlanceEnv env;
  std::string id = env.Upload("raw", env.golden);
  {
    std::fstream f(env.Stored(id), std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    f.seekp(4096);
    f.put('\x5a');
  }
  auto cache = env.Open();
  Error e = Thrown([&] { cache->CreateVolume({.image_id = id, .volume = "bad"}); });
  CHECK_MESSAGE(e.code() == Errc::kCorrupt, e.what());
  CHECK(std::string(e.what()).find(id) != std::string::npos);
  CHECK(env.Objects().empty());  // no entry, no staging image, no volume
  CHECK_FALSE(cache->Lookup(id));
  CHECK(env.CountRows("SELECT count(*) FROM entries") == 0);
  CHECK(env.CountRows("SELECT count(*) FROM volumes") == 0);
  CHECK(fs::is_empty(env.options.conversion.dir));
  CHECK(cache->GetStats().errors == 1);

  // Prefill refuses it the same way; asking again does not leave anything either.
  CHECK(Thrown([&] { cache->Prefill(id); }).code() == Errc::kCorrupt);
  CHECK(env.Objects().empty());
  CHECK(env.CountRows("SELECT count(*) FROM entries") == 0);
}

TEST_CASE("a missing or queued image is kNotFound and creates nothing") {
  GlanceEnv env;
  auto cache = env.Open();
  const std::string missing = "00000000-0000-4000-8000-000000000000";
  Error e = Thrown([&] { cache->CreateVolume({.image_id = missing, .volume = "m"}); });
  CHECK_MESSAGE(e.code() == Errc::kNotFound, e.what());
  CHECK(std::string(e.what()).find(missing) != std::string::npos);
  CHECK(Thrown([&] { cache->Prefill(missing); }).code() == Errc::kNotFound);

  std::string queued = glance::CreateQueuedImage(env.endpoint, "raw");
  env.glance_ids.push_back(queued);
  e = Thrown([&] { cache->CreateVolume({.image_id = queued, .volume = "q"}); });
  CHECK_MESSAGE(e.code() == Errc::kNotFound, e.what());
  CHECK(std::string(e.what()).find(queued) != std::string::npos);
  CHECK(std::string(e.what()).find("queued") != std::string::npos);
  CHECK(Thrown([&] { cache->Prefill(queued); }).code() == Errc::kNotFound);

  CHECK(env.Objects().empty());
  CHECK_FALSE(env.backend->Exists(env.Vol("m")));
  CHECK_FALSE(env.backend->Exists(env.Vol("q")));
  CHECK(env.CountRows("SELECT count(*) FROM entries") == 0);
  CHECK(env.CountRows("SELECT count(*) FROM volumes") == 0);
  CHECK(cache->List().empty());
}

TEST_CASE("the eviction pass asks Glance with its paged list, not a GET per entry") {
  GlanceEnv env;
  constexpr int kImages = 6;
  std::vector<std::string> ids;
  for (int i = 0; i < kImages; ++i) ids.push_back(env.Upload("raw", env.golden));  // the fs store
  auto cache = env.Open();
  for (const auto& id : ids) cache->Prefill(id);
  auto report = cache->RunEvictionPass({});
  CHECK(report.actions.empty());
  // One page of up to 1000 images (two if other tests left many): never one per entry.
  CHECK(report.source_requests >= 1);
  CHECK(report.source_requests <= 2);
  CHECK(report.entries_after == kImages);

  // An entry whose image is gone is missing from the listing: asked about alone.
  glance::DeleteImage(env.endpoint, ids[0]);
  auto gone = cache->RunEvictionPass({});
  REQUIRE(gone.actions.size() == 1);
  CHECK(gone.actions[0].kind == "gone");
  CHECK(gone.actions[0].image_id == ids[0]);
  CHECK(gone.source_requests <= 3);
}

// A hit asks the source on a thread of its own while it clones (volume.cpp): whatever
// the answer, the volume at the name is the one that answer allows, and no clone of a
// condemned entry is left behind.
namespace {

// Run on both backends: the local one makes its clone at the name in one step, the
// answer awaited inside it (Backend::CloneInPlace); RBD makes it under a staging name.
void HitAsksWhileCloning(bool rbd) {
  GlanceEnv env(rbd);
  env.options.cache.source_check_interval_s = 0;  // every hit asks
  env.options.cache.stale_on_updated_at = true;
  std::string id = env.Upload("raw", env.golden);  // the fs store: a download, never direct
  auto cache = env.Open();
  REQUIRE(cache->CreateVolume({.image_id = id, .volume = "v1"}).plan == Plan::kMiss);
  const auto first = cache->Lookup(id);
  REQUIRE(first);
  auto staging_left = [&] {
    auto objects = env.Objects();
    if (env.backend->volume_pool() != env.backend->entry_pool()) {
      for (auto& n : env.backend->List(env.backend->volume_pool())) objects.push_back(n);
    }
    auto left = std::count_if(objects.begin(), objects.end(),
                              [](const std::string& n) { return engine::IsVolumeStagingName(n); });
    // The local backend's temporaries (a clone in place undone): its root is this test's.
    if (!rbd) left += static_cast<decltype(left)>(env.backend->SweepTemporaries(true).size());
    return left;
  };

  // Unchanged: a clone, the entry's check recorded.
  CHECK(cache->CreateVolume({.image_id = id, .volume = "v2"}).plan == Plan::kClone);
  CHECK(env.SameData("v2"));
  CHECK(env.CountRows("SELECT count(*) FROM entries WHERE source_checked_at > 0") == 1);

  // Updated since the entry was made: the clone made meanwhile never takes the name; the
  // entry is filled again and the volume is made from the new one. Glance's updated_at
  // counts whole seconds: an edit in the upload's second would not change it.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  glance::SetProperty(env.endpoint, id, "cachemgr_test", "changed");
  auto updated = cache->CreateVolume({.image_id = id, .volume = "v3"});
  CHECK(updated.plan == Plan::kMiss);
  CHECK(env.SameData("v3"));
  const auto second = cache->Lookup(id);
  REQUIRE(second);
  CHECK(second->image_updated_at != first->image_updated_at);
  CHECK(staging_left() == 0);
  CHECK(cache->GetStats().hits == 1);

  // Unreachable: the cached entry serves, and no check is recorded as made.
  {
    SQLite::Database db(env.options.index, SQLite::OPEN_READWRITE);
    db.exec("UPDATE entries SET source_checked_at = 1");
  }
  auto offline_options = env.options;
  offline_options.source.glance.endpoint = "http://127.0.0.1:1";  // nothing listens
  auto served = Cache::Open(offline_options)->CreateVolume({.image_id = id, .volume = "v5"});
  CHECK(served.plan == Plan::kClone);
  CHECK(env.SameData("v5"));
  CHECK(env.CountRows("SELECT max(source_checked_at) FROM entries") == 1);
  CHECK(staging_left() == 0);

  // No longer active: refused, and nothing is made under the name or left staged.
  glance::Deactivate(env.endpoint, id);
  const auto before = env.Objects();
  auto refused = Thrown([&] { cache->CreateVolume({.image_id = id, .volume = "v4"}); });
  CHECK(refused.code() == Errc::kNotFound);
  CHECK_FALSE(env.backend->Exists(env.Vol("v4")));
  CHECK(env.Objects() == before);
  CHECK(env.CountRows("SELECT count(*) FROM volumes WHERE name = 'v4'") == 0);
  CHECK(staging_left() == 0);
}

}  // namespace

TEST_CASE("a hit asks Glance while it clones: fresh, updated, deactivated, unreachable") {
  SUBCASE("rbd") { HitAsksWhileCloning(/*rbd=*/true); }
  SUBCASE("local") { HitAsksWhileCloning(/*rbd=*/false); }
}
