// The cache against a Glance that lies (tests/support/lying_glance.py, started here on a
// free loopback port and stopped by pid): sizes that cannot be true, bodies longer or
// shorter than declared, no digest, unknown digests, trickles, listings that never end,
// an active image with no data, and digests that change after the fill. Each one gives
// the right error, leaves nothing on the backend and evicts nothing; nothing aborts.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "cachemgr/cache.h"
#include "cachemgr/error.h"
#include "engine_env.h"
#include "storage/factory.h"
#include "support/test_util.h"
#include "util/hash.h"

using namespace cachemgr;
using namespace cachemgr::test;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMiB = 1 << 20;

template <typename Fn>
Error Thrown(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no cachemgr::Error was thrown");
  return Error(Errc::kInternal, "");
}

// lying_glance.py on 127.0.0.1, serving what the scenario file says.
class LyingGlance {
 public:
  explicit LyingGlance(const fs::path& dir)
      : scenario_(dir / "scenario.json"), port_file_(dir / "port") {
    Set(json::object());
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::execl("/usr/bin/python3", "python3", LYING_GLANCE, scenario_.c_str(), port_file_.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Until the server has written the port it listens on.
    WaitUntil([&] { return fs::exists(port_file_); }, std::chrono::seconds(10));
    REQUIRE_MESSAGE(fs::exists(port_file_), "lying_glance.py did not start");
    url_ = "http://127.0.0.1:" + ReadFile(port_file_);
  }
  ~LyingGlance() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  void Set(const json& scenario) {
    WriteFile(scenario_.string() + ".tmp", scenario.dump());
    fs::rename(scenario_.string() + ".tmp", scenario_);
  }
  const std::string& url() const { return url_; }
  int Requests() const {
    std::string out;
    RunCommand({"curl", "-s", url_ + "/_requests"}, &out);
    return json::parse(out).at("requests").get<int>();
  }

 private:
  fs::path scenario_, port_file_;
  pid_t pid_ = -1;
  std::string url_;
};

// A local-backend cache whose source is the lying Glance.
struct Env {
  TempDir dir{"lying"};
  LyingGlance glance{dir.path()};
  Options options;
  std::unique_ptr<storage::Backend> backend;
  json scenario = {{"images", json::object()}};

  Env() {
    options = EngineOptions(dir.path(), false, "");
    options.source.type = SourceType::kGlance;
    options.source.glance.endpoint = glance.url();
    options.source.glance.timeout_s = 3;
    options.source.glance.retries = 1;
    backend = storage::MakeBackend(options.backend, nullptr);
  }
  std::unique_ptr<Cache> Open() const { return Cache::Open(options); }

  // A raw image file of `size` bytes and its truthful Glance record.
  json Raw(const std::string& id, uint64_t size, uint32_t seed) {
    fs::path file = dir / ("body-" + id);
    WriteRawImage(file, size, size, seed);
    json meta = {{"id", id},
                 {"status", "active"},
                 {"disk_format", "raw"},
                 {"container_format", "bare"},
                 {"size", size},
                 {"virtual_size", size},
                 {"checksum", util::HashFile("md5", file.string())},
                 {"os_hash_algo", "sha512"},
                 {"os_hash_value", util::HashFile("sha512", file.string())},
                 {"updated_at", "2026-01-01T00:00:00Z"}};
    return {{"meta", meta}, {"file", file.string()}};
  }
  void Serve(const std::string& id, const json& image) {
    scenario["images"][id] = image;
    glance.Set(scenario);
  }
  std::vector<std::string> Objects() const { return backend->List(backend->entry_pool()); }
  std::vector<std::string> Volumes() const { return backend->List(backend->volume_pool()); }
};

// A truthful image filled first: whatever the lies do after, it must stay cached.
std::string Victim(Env& env, Cache& cache) {
  const std::string id = Unique("victim");
  env.Serve(id, env.Raw(id, 4 * kMiB, 7));
  cache.Prefill(id);
  REQUIRE(cache.Lookup(id));
  return id;
}

// The lie left nothing behind: only the victim's entry, no volume, the victim cached.
void NothingLeft(Env& env, Cache& cache, const std::string& victim, size_t objects_before) {
  CHECK(env.Objects().size() == objects_before);
  CHECK(env.Volumes().empty());
  CHECK(cache.Lookup(victim));
  CHECK(cache.List().size() == 1);
  CHECK(fs::is_empty(env.dir / "conversion"));
}

}  // namespace

TEST_CASE("sizes that cannot be true are refused before anything is made") {
  Env env;
  auto cache = env.Open();
  const std::string victim = Victim(env, *cache);
  const size_t before = env.Objects().size();
  const std::vector<std::pair<std::string, json>> lies = {
      {"size", -1},
      {"size", 18446744073709551615ull},  // 2^64 - 1: the -1 of an unsigned parser
      {"size", 1ull << 62},
      {"size", 4.5},
      {"size", "4194304"},
      {"virtual_size", -4096},
  };
  for (const auto& lie : lies) {
    const std::string field = lie.first;  // named copies: lambdas below capture them
    const json value = lie.second;
    CAPTURE(field);
    CAPTURE(value.dump());
    const std::string id = Unique("liar");
    json image = env.Raw(id, 4 * kMiB, 3);
    image["meta"][field] = value;
    env.Serve(id, image);
    Error e = Thrown([&] { cache->Prefill(id); });
    CHECK(e.code() == Errc::kRefused);
    CHECK(std::string(e.what()).find(id) != std::string::npos);
    CHECK(std::string(e.what()).find(field + ": ") != std::string::npos);
    e = Thrown([&] { cache->CreateVolume({.image_id = id, .volume = "vol-" + id}); });
    CHECK(e.code() == Errc::kRefused);
    NothingLeft(env, *cache, victim, before);
  }
}

TEST_CASE("an image claiming more than it has evicts nothing and fails as corrupt") {
  Env env;
  env.options.cache.max_size_gb = 1;  // the victim and the claimed 1 GiB do not fit together
  auto cache = env.Open();
  const std::string victim = Victim(env, *cache);
  const size_t before = env.Objects().size();

  // The body is the 4 MiB the checksums are of; the record says 1 GiB less 1 MiB (so it
  // is admitted, but not next to the victim), and so does the Content-Length (the lie
  // carried through), or nothing does.
  const uint64_t claim = (1ull << 30) - kMiB;
  for (json length : {json(claim), json("none")}) {
    CAPTURE(length.dump());
    const std::string id = Unique("claims-1g");
    json image = env.Raw(id, 4 * kMiB, 4);
    image["meta"]["size"] = claim;
    image["meta"]["virtual_size"] = claim;
    image["length"] = length;
    env.Serve(id, image);
    Error e = Thrown([&] { cache->Prefill(id); });
    CHECK(e.code() == Errc::kCorrupt);
    CHECK(std::string(e.what()).find(id) != std::string::npos);
    NothingLeft(env, *cache, victim, before);
  }
  CHECK(cache->GetStats().evictions == 0);
}

TEST_CASE("a body longer than the declared size is corrupt; the sink never gets past it") {
  Env env;
  auto cache = env.Open();
  const std::string victim = Victim(env, *cache);
  const size_t before = env.Objects().size();
  // Honest about its length (longer than declared), or no length at all; 1 MiB extra,
  // or a body that never ends.
  const std::vector<json> lies = {{{"extra", kMiB}, {"length", 5 * kMiB}},
                                  {{"extra", kMiB}, {"length", "none"}},
                                  {{"endless", true}}};
  for (const auto& lie : lies) {
    CAPTURE(lie.dump());
    const std::string id = Unique("longer");
    json image = env.Raw(id, 4 * kMiB, 5);
    image.update(lie);
    env.Serve(id, image);
    auto started = std::chrono::steady_clock::now();
    Error e = Thrown([&] { cache->Prefill(id); });
    CHECK(e.code() == Errc::kCorrupt);
    CHECK(std::string(e.what()).find(id) != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(20));
    NothingLeft(env, *cache, victim, before);
  }
}

TEST_CASE("a body shorter than the declared size is corrupt") {
  Env env;
  auto cache = env.Open();
  const std::string victim = Victim(env, *cache);
  const size_t before = env.Objects().size();
  const std::string id = Unique("shorter");
  json image = env.Raw(id, 4 * kMiB, 6);
  image["meta"]["size"] = 5 * kMiB;
  image["meta"]["virtual_size"] = 5 * kMiB;
  image["length"] = "none";
  env.Serve(id, image);
  Error e = Thrown([&] { cache->Prefill(id); });
  CHECK(e.code() == Errc::kCorrupt);
  NothingLeft(env, *cache, victim, before);
}

TEST_CASE("an image with no digest that can be checked is refused unless allowed") {
  Env env;
  auto cache = env.Open();
  const std::string victim = Victim(env, *cache);
  const size_t before = env.Objects().size();

  // No md5; os_hash absent, or with an algorithm nobody knows, or sha1 (too weak alone).
  for (std::string algo : {"", "whirlpool", "sha1"}) {
    CAPTURE(algo);
    const std::string id = Unique("unverifiable");
    json image = env.Raw(id, 4 * kMiB, 8);
    image["meta"].erase("checksum");
    if (algo.empty()) {
      image["meta"].erase("os_hash_algo");
      image["meta"].erase("os_hash_value");
      image["meta"].erase("size");
    } else {
      image["meta"]["os_hash_algo"] = algo;
      image["meta"]["os_hash_value"] = "00";
    }
    env.Serve(id, image);
    Error e = Thrown([&] { cache->Prefill(id); });
    CHECK(e.code() == Errc::kRefused);
    CHECK(std::string(e.what()).find("source.allow_unverified") != std::string::npos);
    NothingLeft(env, *cache, victim, before);
  }

  // An unknown os_hash_algo next to an md5: the md5 is checked.
  const std::string good = Unique("md5-only");
  json image = env.Raw(good, 4 * kMiB, 9);
  image["meta"]["os_hash_algo"] = "whirlpool";
  image["meta"]["os_hash_value"] = "00";
  env.Serve(good, image);
  cache->Prefill(good);
  CHECK(cache->Lookup(good));
  const std::string bad = Unique("md5-wrong");
  image = env.Raw(bad, 4 * kMiB, 10);
  image["meta"]["os_hash_algo"] = "whirlpool";
  image["meta"]["checksum"] = std::string(32, '0');
  env.Serve(bad, image);
  CHECK(Thrown([&] { cache->Prefill(bad); }).code() == Errc::kCorrupt);
  CHECK(!cache->Lookup(bad));
}

TEST_CASE("allowed unverified images are still bounded: no size stops at max_image_gb") {
  Env env;
  env.options.source.allow_unverified = true;
  env.options.source.max_image_gb = 16.0 / 1024;  // 16 MiB
  auto cache = env.Open();
  const std::string victim = Victim(env, *cache);
  const size_t before = env.Objects().size();

  const std::string id = Unique("endless-qcow2");
  json image = env.Raw(id, 4 * kMiB, 11);
  image["meta"] = {
      {"id", id}, {"status", "active"}, {"disk_format", "qcow2"}, {"container_format", "bare"}};
  image["endless"] = true;
  env.Serve(id, image);
  auto started = std::chrono::steady_clock::now();
  Error e = Thrown([&] { cache->Prefill(id); });
  CHECK(e.code() == Errc::kRefused);
  CHECK(std::string(e.what()).find("source.max_image_gb") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(30));
  NothingLeft(env, *cache, victim, before);

  // A declared size over the maximum is refused before the download.
  const std::string big = Unique("too-big");
  image = env.Raw(big, 4 * kMiB, 12);
  image["meta"]["size"] = 17 * kMiB;
  env.Serve(big, image);
  e = Thrown([&] { cache->Prefill(big); });
  CHECK(e.code() == Errc::kRefused);
  CHECK(std::string(e.what()).find("source.max_image_gb") != std::string::npos);
  NothingLeft(env, *cache, victim, before);

  // Within the bound and allowed: cached, and verify says the source gave nothing to
  // check against.
  const std::string plain = Unique("plain");
  image = env.Raw(plain, 4 * kMiB, 13);
  image["meta"].erase("checksum");
  image["meta"].erase("os_hash_algo");
  image["meta"].erase("os_hash_value");
  env.Serve(plain, image);
  cache->Prefill(plain);
  auto v = cache->Verify(plain);
  CHECK(!v.ok);
  CHECK(v.detail.find("no digest") != std::string::npos);
}

TEST_CASE("a trickle under the minimum rate fails within timeout_s, whatever size is declared") {
  Env env;  // timeout_s 3, retries 1, min_rate_kib_s 1024 (the default)
  auto cache = env.Open();
  const std::string id = Unique("trickle-lie");
  json image = env.Raw(id, 8192, 15);
  // A declared 4 GiB would give the overall deadline over an hour at the minimum rate.
  image["meta"]["size"] = 4ull << 30;
  image["meta"]["virtual_size"] = 4ull << 30;
  image["trickle_bps"] = 200;
  env.Serve(id, image);
  auto started = std::chrono::steady_clock::now();
  Error e = Thrown([&] { cache->Prefill(id); });
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(e.code() == Errc::kTimeout);
  CHECK(std::string(e.what()).find(id) != std::string::npos);
  CHECK(std::string(e.what()).find("min_rate_kib_s 1024") != std::string::npos);
  CHECK(took < std::chrono::seconds(20));
  CHECK(env.Objects().empty());
  CHECK(cache->List().empty());
}

TEST_CASE("a trickle under the minimum rate fails with kTimeout naming the rate") {
  Env env;
  // Under the minimum rate (100 B/s against 1 KiB/s): each attempt is cut after timeout_s
  // (3 s), and the retry too; the overall deadline (3 s + 8 KiB at 1 KiB/s = 11 s) is the
  // backstop behind that.
  env.options.source.glance.min_rate_kib_s = 1;
  auto cache = env.Open();
  const std::string id = Unique("trickle");
  json image = env.Raw(id, 8192, 14);
  image["trickle_bps"] = 100;
  env.Serve(id, image);
  auto started = std::chrono::steady_clock::now();
  Error e = Thrown([&] { cache->Prefill(id); });
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(e.code() == Errc::kTimeout);
  CHECK(std::string(e.what()).find(id) != std::string::npos);
  CHECK(std::string(e.what()).find("min_rate_kib_s 1") != std::string::npos);
  CHECK(took >= std::chrono::seconds(3));
  CHECK(took < std::chrono::seconds(25));
  CHECK(env.Objects().empty());
  CHECK(cache->List().empty());
}

TEST_CASE("a listing whose next links repeat, loop, leave or never end stops with kSource") {
  Env env;
  env.options.source.glance.max_list_pages = 20;
  auto cache = env.Open();
  const std::string id = Unique("listed");
  env.Serve(id, env.Raw(id, kMiB, 15));
  CHECK(cache->SourceImages() == std::vector<std::string>{id});
  for (std::string mode : {"repeat", "loop", "elsewhere", "endless", "empty"}) {
    CAPTURE(mode);
    env.scenario["list"] = mode;
    env.glance.Set(env.scenario);
    const int before = env.glance.Requests();
    Error e = Thrown([&] { cache->SourceImages(); });
    CHECK(e.code() == Errc::kSource);
    CHECK(std::string(e.what()).find("image list") != std::string::npos);
    CHECK(env.glance.Requests() - before <= 21);
  }
}

TEST_CASE("an active image with no data fails without leaving anything") {
  Env env;
  auto cache = env.Open();
  const std::string victim = Victim(env, *cache);
  const size_t before = env.Objects().size();
  const std::string id = Unique("nodata");
  json image = env.Raw(id, 4 * kMiB, 16);
  image["status"] = 204;
  env.Serve(id, image);
  Error e = Thrown([&] { cache->CreateVolume({.image_id = id, .volume = "vol-nodata"}); });
  CHECK(e.code() == Errc::kNotFound);
  NothingLeft(env, *cache, victim, before);
}

TEST_CASE("verify asks the source: a digest that changed there is a failure") {
  Env env;
  auto cache = env.Open();
  const std::string id = Unique("verified");
  json image = env.Raw(id, 4 * kMiB, 17);
  env.Serve(id, image);
  cache->Prefill(id);
  auto v = cache->Verify(id);
  CHECK(v.ok);
  CHECK(v.detail.find("sha512") != std::string::npos);

  // The source now describes other bytes under the same id.
  image["meta"]["os_hash_value"] = std::string(128, 'a');
  env.Serve(id, image);
  v = cache->Verify(id);
  CHECK(!v.ok);
  CHECK(v.detail.find("changed") != std::string::npos);

  // Or no longer gives any digest.
  image["meta"].erase("os_hash_value");
  image["meta"].erase("checksum");
  env.Serve(id, image);
  CHECK(!cache->Verify(id).ok);

  // Or answers for no image at all: not ok either.
  image["meta"] = {{"broken", true}};
  env.Serve(id, image);
  CHECK(!cache->Verify(id).ok);

  // Gone from the source: the entry is checked against the digest it was verified with
  // at fill, and says so.
  env.scenario["images"].erase(id);
  env.glance.Set(env.scenario);
  v = cache->Verify(id);
  CHECK(v.ok);
  CHECK(v.detail.find("not in the source any more") != std::string::npos);
}

TEST_CASE("a pass whose listing fails never calls an entry gone on a 404") {
  Env env;
  env.options.source.glance.retries = 0;
  auto cache = env.Open();
  const std::string kept = Victim(env, *cache);
  // A mis-addressed Glance (every answer a 404), then one whose listing breaks while an
  // image's own record answers 404: neither may evict what is cached.
  for (std::string lie : {"everything", "list"}) {
    CAPTURE(lie);
    json scenario = env.scenario;
    if (lie == "everything") {
      scenario["everything"] = "404";
    } else {
      scenario["list"] = "fail";
      scenario["images"].erase(kept);
    }
    env.glance.Set(scenario);
    auto report = cache->RunEvictionPass({});
    for (const auto& a : report.actions) CHECK(a.kind != "gone");
    CHECK(cache->Lookup(kept));
  }
  // A listing that works and lacks the image: now it is gone.
  json scenario = env.scenario;
  scenario["images"].erase(kept);
  env.glance.Set(scenario);
  auto report = cache->RunEvictionPass({});
  CHECK(std::any_of(report.actions.begin(), report.actions.end(),
                    [&](const EvictAction& a) { return a.kind == "gone" && a.image_id == kept; }));
  CHECK(!cache->Lookup(kept));
}
