// The free-space floor (cache.min_free_percent / min_free_gb, cache.on_no_room) end to end:
// local on a small loop-mounted ext4 filesystem, RBD (ENGINE_RBD) on the fixture's pool.
// Floors are set relative to the free space measured in the test, so the same fills cross
// them on a 96 MiB filesystem and on a pool of any size. On RBD the pool's MAX AVAIL
// follows writes and removals only after a few seconds: the test waits for the figure to
// settle, and checks "never below the floor" once it has.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cachemgr/cache.h"
#include "engine_env.h"
#include "engine_fixture.h"
#include "loop_fs.h"
#include "storage/factory.h"
#include "support/test_util.h"
#ifdef ENGINE_RBD
#include "support/cluster.h"
#endif

using namespace cachemgr;
using namespace cachemgr::test;

namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
// One image's bytes (all data, no holes: what a fill writes is what its eviction frees).
// Larger on RBD, where other tests write to the same pool meanwhile.
constexpr uint64_t kImg = (kRbd ? 16 : 8) * kMiB;

#ifdef ENGINE_RBD
// A ceph-mgr for the fixture's cluster, which has none: `ceph df` (the pool's MAX AVAIL)
// is the mgr's. No Python modules (an empty module path: up in seconds, nothing else
// changed in the cluster), statistics every second. One for the test process, stopped by
// pid at its exit; its pid file is in the fixture's run dir, so ceph-stop.sh stops it too
// should this process die first.
class Mgr {
 public:
  explicit Mgr(const std::filesystem::path& dir)
      : dir_(dir),
        pid_file_(CephConf().parent_path() / "run" / (dir.filename().string() + ".pid")) {
    std::filesystem::create_directories(dir_ / "data");
    std::filesystem::create_directories(dir_ / "no-modules");
    std::string out;
    REQUIRE_MESSAGE(RunCommand({"ceph-mgr",
                                "--conf",
                                CephConf().string(),
                                "-i",
                                dir.filename().string(),
                                "--mgr_data",
                                (dir_ / "data").string(),
                                "--pid_file",
                                pid_file_.string(),
                                "--admin_socket",
                                (dir_ / "mgr.asok").string(),
                                "--log_file",
                                (dir_ / "mgr.log").string(),
                                "--mgr_stats_period",
                                "1",
                                "--mgr_tick_period",
                                "1",
                                "--mon_mgr_digest_period",
                                "1",
                                "--mgr_module_path",
                                (dir_ / "no-modules").string()},
                               &out) == 0,
                    "ceph-mgr did not start: " << out);
  }
  ~Mgr() {
    pid_t pid = 0;
    try {
      pid = static_cast<pid_t>(std::stol(ReadFile(pid_file_)));
    } catch (...) {
      return;  // never started
    }
    if (pid <= 1 || ::kill(pid, SIGTERM) != 0) return;
    WaitUntil([&] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(10));
    if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
    std::error_code ec;
    std::filesystem::remove(pid_file_, ec);
    std::filesystem::remove_all(dir_, ec);
  }
  Mgr(const Mgr&) = delete;
  Mgr& operator=(const Mgr&) = delete;

 private:
  std::filesystem::path dir_;
  std::filesystem::path pid_file_;
};

void StartMgrOnce() {
  static std::optional<Mgr> mgr;
  if (!mgr) mgr.emplace(RunDir() / "tmp" / Unique("floor-mgr"));
}
#endif

struct FloorEnv {
  Env env;
  std::optional<LoopFs> fs;

  FloorEnv() {
#ifdef ENGINE_RBD
    StartMgrOnce();
#endif
    if (kRbd) {
      // Until the mgr has the OSD's statistics, FreeSpace throws (no figures yet).
      REQUIRE_MESSAGE(Poll([&] {
                        try {
                          return env.backend->FreeSpace().avail_bytes > 0;
                        } catch (const Error&) {
                          return false;
                        }
                      }),
                      "the pool's free space never showed in `ceph df`");
    } else {
      fs.emplace(env.dir / "fs.img", env.dir / "mnt", 96 * kMiB);
      const auto root = fs->mnt() / "cache";
      std::filesystem::create_directories(root);
      env.options.backend.local.root = root.string();
      env.backend = storage::MakeBackend(env.options.backend, nullptr);
    }
  }
  ~FloorEnv() { env.backend.reset(); }  // nothing holds the filesystem when it unmounts

  std::string AddImage(uint32_t seed, uint64_t size = kImg) {
    return env.AddImage(size, seed, size);
  }
  uint64_t Avail() { return env.backend->FreeSpace().avail_bytes; }
  // Fills the cache with `ids` (no floor yet) and returns the free space after them. On
  // RBD, MAX AVAIL shows writes a few seconds late: it waits for the figure to take in
  // what was written.
  uint64_t Prefill(const std::vector<std::string>& ids) {
    const uint64_t before = Avail();
    {
      auto cache = env.Open();
      for (const auto& id : ids) cache->Prefill(id);
    }
    if (!kRbd) return Avail();
    const uint64_t written = ids.size() * kImg;
    uint64_t now = before;
    Poll([&] {
      now = Avail();
      return now + written - kImg / 4 <= before;  // all of it, give or take others' writes
    });
    return Settled();
  }
  // The free space once the figure has stopped moving for 2.5 s (the mgr reports every
  // second): what earlier steps wrote or freed is in it. Local: at once.
  uint64_t Settled() {
    if (!kRbd) return Avail();
    uint64_t last = Avail();
    auto since = std::chrono::steady_clock::now();
    Poll([&] {
      const uint64_t now = Avail();
      if (now != last) {
        last = now;
        since = std::chrono::steady_clock::now();
      }
      return std::chrono::steady_clock::now() - since >= std::chrono::milliseconds(2500);
    });
    return last;
  }
  // Asks again every 250 ms (each ask is a monitor command on RBD), for at most 30 s.
  static bool Poll(const std::function<bool()>& ready) {
    return WaitUntil(
        [&] {
          if (ready()) return true;
          std::this_thread::sleep_for(std::chrono::milliseconds(250));
          return false;
        },
        std::chrono::seconds(30));
  }
  void SetFloor(uint64_t floor_bytes, OnNoRoom on_no_room = OnNoRoom::kUncached) {
    env.options.cache.min_free_gb = static_cast<double>(floor_bytes) / kGiB;
    env.options.cache.on_no_room = on_no_room;
  }
  uint64_t FloorBytes() const {
    return static_cast<uint64_t>(std::llround(env.options.cache.min_free_gb * kGiB));
  }
  // Never below the floor: at once locally; on RBD once the figure has caught up.
  bool AboveFloor() {
    if (!kRbd) return Avail() >= FloorBytes();
    return Poll([&] { return Avail() >= FloorBytes(); });
  }
};

}  // namespace

TEST_CASE("a fill that would cross the free-space floor evicts the least recently used first") {
  FloorEnv f;
  const auto a = f.AddImage(1), b = f.AddImage(2), c = f.AddImage(3);
  const auto d = f.AddImage(4), e = f.AddImage(5);
  const uint64_t avail = f.Prefill({a, b, c});
  // Half an image of room above the floor: the next fill must evict one entry first.
  f.SetFloor(avail - kImg / 2);
  auto cache = f.env.Open();
  const auto p = cache->Prefill(d);
  CHECK(p.outcome == PrefillOutcome::kFilled);
  CHECK_FALSE(cache->Lookup(a));
  CHECK(cache->Lookup(b));
  CHECK(cache->Lookup(c));
  CHECK(cache->Lookup(d));
  CHECK(f.AboveFloor());

  // A miss that makes a volume does the same, and the volume reads back the image. (On
  // RBD once the figure shows the last fill and eviction: it lags them by seconds.)
  f.Settled();
  const auto r = cache->CreateVolume({.image_id = e, .volume = "vol-e"});
  CHECK(r.plan == Plan::kMiss);
  CHECK(f.env.SameData("vol-e", e));
  CHECK_FALSE(cache->Lookup(b));
  CHECK(cache->Lookup(c));
  CHECK(cache->Lookup(e));
  CHECK(f.AboveFloor());
}

TEST_CASE("a fill that cannot fit is refused or served uncached, never crossing the floor") {
  FloorEnv f;
  const auto img = f.AddImage(7);
  const uint64_t avail = f.Settled();

  SUBCASE("refuse: an error naming the figures and the keys, nothing made") {
    f.SetFloor(avail - kImg / 2, OnNoRoom::kRefuse);
    auto cache = f.env.Open();
    try {
      cache->CreateVolume({.image_id = img, .volume = "vol-refused"});
      FAIL("the fill was not refused");
    } catch (const Error& err) {
      CHECK(err.code() == Errc::kBackend);
      const std::string what = err.what();
      CHECK(what.find("no room") != std::string::npos);
      CHECK(what.find("floor") != std::string::npos);
      CHECK(what.find("cache.min_free_percent") != std::string::npos);
      CHECK(what.find("cache.on_no_room") != std::string::npos);
    }
    CHECK_FALSE(cache->Lookup(img));
    CHECK_FALSE(f.env.backend->Exists(f.env.Vol("vol-refused")));
    CHECK_THROWS_AS(cache->Prefill(img), Error);
    CHECK(f.env.EntryObjects().empty());
    CHECK(f.AboveFloor());
  }
  SUBCASE("uncached: the volume alone fits where the entry and its copy would not") {
    // Volumes are full copies (depth 0): caching would take the image twice.
    f.env.options.cache.max_clone_depth = 0;
    f.SetFloor(avail - kImg - kImg / 2, OnNoRoom::kUncached);
    auto cache = f.env.Open();
    const auto r = cache->CreateVolume({.image_id = img, .volume = "vol-uncached"});
    CHECK(r.plan == Plan::kUncached);
    CHECK(f.env.SameData("vol-uncached", img));
    CHECK_FALSE(cache->Lookup(img));
    CHECK(f.AboveFloor());
  }
  SUBCASE("uncached: refused still when even the volume alone would cross the floor") {
    f.SetFloor(avail - kImg / 2, OnNoRoom::kUncached);
    auto cache = f.env.Open();
    try {
      cache->CreateVolume({.image_id = img, .volume = "vol-none"});
      FAIL("the fill was not refused");
    } catch (const Error& err) {
      CHECK(err.code() == Errc::kBackend);
      CHECK(std::string(err.what()).find("neither cached nor as an uncached volume") !=
            std::string::npos);
    }
    CHECK_FALSE(f.env.backend->Exists(f.env.Vol("vol-none")));
    CHECK(f.AboveFloor());
  }
}

TEST_CASE("the eviction pass restores the free-space floor, least recently used first") {
  FloorEnv f;
  const auto a = f.AddImage(1), b = f.AddImage(2), c = f.AddImage(3);
  f.Prefill({a, b, c});
  if (!kRbd) {
    // Something else fills the filesystem: one and a half images' worth.
    const auto other = f.fs->mnt() / "other";
    std::filesystem::create_directories(other);
    WriteRawImage(other / "filler", kImg + kImg / 2, kImg + kImg / 2, 9);
    ::sync();
  }
  // The floor half an image above what is free now (on RBD: as if others filled the pool).
  f.SetFloor(f.Settled() + kImg / 2);
  auto cache = f.env.Open();

  auto dry = cache->RunEvictionPass({.dry_run = true});
  int planned = 0;
  for (const auto& act : dry.actions) {
    if (act.kind == "evict" && act.reason.find("free-space floor") != std::string::npos) {
      ++planned;
      CHECK(act.image_id == a);
      CHECK_FALSE(act.done);
    }
  }
  CHECK(planned == 1);
  CHECK(cache->Lookup(a));

  auto report = cache->RunEvictionPass({});
  std::vector<std::string> evicted;
  for (const auto& act : report.actions) {
    if (act.kind == "evict" && act.done) evicted.push_back(act.image_id);
  }
  CHECK(evicted == std::vector<std::string>{a});
  CHECK_FALSE(cache->Lookup(a));
  CHECK(cache->Lookup(b));
  CHECK(cache->Lookup(c));
  CHECK(f.AboveFloor());
}

TEST_CASE("misses at once each count the others' fills: the floor holds under concurrency") {
  if (kRbd) return;  // the pool's figure lags; the local filesystem shows each write at once
  FloorEnv f;
  std::vector<std::string> ids;
  for (uint32_t i = 0; i < 4; ++i) ids.push_back(f.AddImage(20 + i));
  const uint64_t avail = f.Settled();
  // Room for one image and a half: one of four misses at once can be cached, no more.
  f.SetFloor(avail - kImg - kImg / 2, OnNoRoom::kRefuse);
  auto cache = f.env.Open();
  std::vector<std::thread> threads;
  std::vector<int> made(ids.size(), 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      try {
        cache->CreateVolume({.image_id = ids[i], .volume = "vol-c" + std::to_string(i)});
        made[i] = 1;
      } catch (const Error& e) {
        made[i] = e.code() == Errc::kBackend ? 0 : -1;  // refused: no room
      }
    });
  }
  for (auto& t : threads) t.join();
  int cached = 0;
  for (int m : made) {
    CHECK(m >= 0);
    cached += m;
  }
  CHECK(cached == 1);
  CHECK(f.AboveFloor());
}

TEST_CASE("a compressed image is held to its real size, not its download's") {
  if (kRbd) return;  // the check is the engine's, the same on both backends
  FloorEnv f;
  // 40 MiB of one repeated line, compressed into a qcow2 of a few hundred KiB, with no
  // declared virtual size: only its header tells how much the fill will write.
  const std::string id = Unique("img");
  const auto raw = f.env.dir / "compressible.raw";
  {
    std::ofstream out(raw, std::ios::binary);
    const std::string line = "cachemgr free-space floor test line\n";
    for (uint64_t n = 0; n < 40 * kMiB; n += line.size()) out << line;
  }
  std::string out;
  REQUIRE(RunCommand({"qemu-img", "convert", "-c", "-O", "qcow2", raw.string(),
                      f.env.Image(id).string()},
                     &out) == 0);
  std::filesystem::remove(raw);
  REQUIRE(std::filesystem::file_size(f.env.Image(id)) < 4 * kMiB);
  const uint64_t avail = f.Settled();
  f.SetFloor(avail - 20 * kMiB, OnNoRoom::kRefuse);  // room for 20 MiB: not for 40
  auto cache = f.env.Open();
  try {
    cache->CreateVolume({.image_id = id, .volume = "vol-cq"});
    FAIL("a 40 MiB image was let in above a floor with room for 20 MiB");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kBackend);
    CHECK(std::string(e.what()).find("no room") != std::string::npos);
  }
  CHECK_FALSE(cache->Lookup(id));
  CHECK_FALSE(f.env.backend->Exists(f.env.Vol("vol-cq")));
  CHECK(f.AboveFloor());
}

TEST_CASE("served uncached for want of room: the miss keeps its reason, not too_big") {
  if (kRbd) return;
  FloorEnv f;
  const auto img = f.AddImage(31);
  const uint64_t avail = f.Settled();
  f.env.options.cache.max_clone_depth = 0;  // caching would take the image twice
  f.SetFloor(avail - kImg - kImg / 2, OnNoRoom::kUncached);
  auto cache = f.env.Open();
  CHECK(cache->CreateVolume({.image_id = img, .volume = "vol-u"}).plan == Plan::kUncached);
  std::map<std::string, uint64_t> reasons;
  for (const auto& [reason, s] : cache->GetStats().misses_by_reason) reasons[reason] = s.count;
  CHECK(reasons["cold"] == 1);
  CHECK(reasons["too_big"] == 0);
}

TEST_CASE("a hit that copies the image makes room first, keeping the entry it copies") {
  if (kRbd) return;  // the check is the engine's, the same on both backends
  FloorEnv f;
  const auto a = f.AddImage(41), b = f.AddImage(42);
  const uint64_t avail = f.Prefill({a, b});
  f.env.options.cache.max_clone_depth = 0;  // every volume a full copy
  f.SetFloor(avail - kImg / 2, OnNoRoom::kRefuse);
  auto cache = f.env.Open();
  const auto r = cache->CreateVolume({.image_id = b, .volume = "vol-copy"});
  CHECK(r.plan == Plan::kCopy);
  CHECK(f.env.SameData("vol-copy", b));
  CHECK_FALSE(cache->Lookup(a));  // least recently used, evicted for the copy
  CHECK(cache->Lookup(b));        // the entry copied stays
  CHECK(f.AboveFloor());
  // No other entry left to evict: the next copy is refused, naming the figures.
  try {
    cache->CreateVolume({.image_id = b, .volume = "vol-copy2"});
    FAIL("a copy was made below the floor");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kBackend);
    CHECK(std::string(e.what()).find("full copy") != std::string::npos);
  }
  CHECK_FALSE(f.env.backend->Exists(f.env.Vol("vol-copy2")));
  CHECK(f.AboveFloor());
}
