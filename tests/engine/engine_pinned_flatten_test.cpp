// The pass's pinned flatten end to end on one backend: local (no fixture) or RBD (built
// with ENGINE_RBD, FIXTURES ceph). Two evicted entries are kept for the clones a VM
// wrote into; the pass flattens those clones, the entry that frees most first, within
// cache.flatten_pinned_max and flatten_pinned_budget_s, and purges each entry whose last
// clone it flattened; the clones keep reading what they held.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "cachemgr/cache.h"
#include "engine_env.h"
#include "engine_fixture.h"
#include "support/engine_harness.h"
#include "support/test_util.h"
#ifdef ENGINE_RBD
#include "contract/rbd/rbd_target.h"
#else
#include "contract/local/local_write.h"
#endif

using namespace cachemgr;
using namespace cachemgr::test;

namespace {

// Writes 1 MiB of `byte` at the start of volume `name`, the way a VM writes its disk, and
// keeps in `expect` (a copy of the image's file) what the volume must read from now on.
void WriteVolume(Env& env, const std::string& name, const std::string& image_id, uint8_t byte,
                 const std::filesystem::path& expect) {
#ifdef ENGINE_RBD
  RbdWriteBytes(env.options.backend.rbd, env.Vol(name), 0, kMiB, byte);
#else
  WriteLocalBytes(dynamic_cast<storage::LocalBackend&>(*env.backend), env.Vol(name), 0, kMiB,
                  byte);
#endif
  std::filesystem::copy_file(env.Image(image_id), expect);
  const int fd = ::open(expect.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  const std::string data(kMiB, static_cast<char>(byte));
  const bool written = ::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(kMiB);
  ::close(fd);
  REQUIRE(written);
}

bool ReadsBack(const Env& env, const std::string& name, const std::filesystem::path& expect) {
  const auto size = std::filesystem::file_size(expect);
  return Md5OfImage(*env.backend, env.Vol(name), size) == Md5OfFile(expect, size);
}

struct Pass {
  size_t flattened = 0, skipped = 0, purged = 0;
  uint64_t pinned_bytes = 0;
  std::string first;  // the first volume flattened
};

Pass RunPass(Cache& cache, std::optional<uint32_t> max) {
  EvictOptions options;
  options.flatten_pinned_max = max;
  const auto report = cache.RunEvictionPass(options);
  Pass p;
  p.pinned_bytes = report.pinned_bytes;
  for (const auto& a : report.actions) {
    if (a.kind == "flatten" && a.done && p.first.empty()) p.first = a.name;
    if (a.kind == "flatten") (a.done ? p.flattened : p.skipped) += 1;
    if (a.kind == "flatten" && !a.done) CHECK(a.reason.find("skipped:") != std::string::npos);
    if (a.kind == "purge" && a.done) p.purged += 1;
  }
  return p;
}

}  // namespace

TEST_CASE("the pass flattens the clones that pin most first and purges what they freed") {
  Env env;
  const auto big = env.AddImage(16 * kMiB, 1, 16 * kMiB);   // one clone: frees 16 MiB
  const auto small = env.AddImage(8 * kMiB, 2, 8 * kMiB);   // two clones: frees 8 MiB
  const auto other = env.AddImage(4 * kMiB, 3);
  auto clock = std::make_shared<FakeClock>();
  const std::filesystem::path expect = env.dir / "expect";
  std::filesystem::create_directories(expect);
  {
    auto cache = OpenDrivenEngine(env.options, clock).cache;
    cache->CreateVolume({.image_id = big, .volume = "big1"});
    cache->CreateVolume({.image_id = small, .volume = "small1"});
    cache->CreateVolume({.image_id = small, .volume = "small2"});
  }
  WriteVolume(env, "big1", big, 0x11, expect / "big1");
  WriteVolume(env, "small1", small, 0x22, expect / "small1");
  WriteVolume(env, "small2", small, 0x33, expect / "small2");
  auto all_read_back = [&] {
    return ReadsBack(env, "big1", expect / "big1") && ReadsBack(env, "small1", expect / "small1") &&
           ReadsBack(env, "small2", expect / "small2");
  };

  // Both entries evicted (deferred: pinned by their clones) to make room for a third.
  clock->Advance(std::chrono::seconds(1));
  env.options.cache.max_count = 1;
  auto cache = OpenDrivenEngine(env.options, clock).cache;
  cache->CreateVolume({.image_id = other, .volume = "other1"});
  CHECK(cache->GetStats().pinned_bytes == 24 * kMiB);
  CHECK(env.backend->ListTrash().size() == 2);

  // Off by default: nothing flattened.
  auto pass = RunPass(*cache, std::nullopt);
  CHECK(pass.flattened + pass.skipped == 0);
  CHECK(pass.pinned_bytes == 24 * kMiB);

  CHECK(env.backend->FlattensInPlace() == kRbd);
  if (!kRbd) {
    // The local backend's flatten swaps the file: never run under a volume a VM may use.
    // Reported for as many clones as the pass would flatten (2 of the 3), not every one.
    pass = RunPass(*cache, 2);
    CHECK(pass.flattened == 0);
    CHECK(pass.skipped == 2);
    CHECK(pass.pinned_bytes == 24 * kMiB);
    CHECK(env.backend->ListTrash().size() == 2);
    CHECK(all_read_back());
    return;
  }

  // One clone per pass: the big entry's (16 MiB back for one flatten) before the small
  // one's two; it is purged in the same pass.
  pass = RunPass(*cache, 1);
  CHECK(pass.flattened == 1);
  CHECK(pass.first == "big1");
  CHECK(pass.purged == 1);
  CHECK(pass.pinned_bytes == 8 * kMiB);
  CHECK(env.backend->ListTrash().size() == 1);
  CHECK_FALSE(env.backend->Parent(env.Vol("big1")));
  CHECK(all_read_back());

  // A spent budget (0 s: only the first flatten starts) stops the pass after one clone:
  // the small entry stays pinned by the other.
  env.options.cache.flatten_pinned_budget_s = 0;
  cache = OpenDrivenEngine(env.options, clock).cache;
  pass = RunPass(*cache, 2);
  CHECK(pass.flattened == 1);
  CHECK(pass.skipped == 1);
  CHECK(pass.purged == 0);
  CHECK(pass.pinned_bytes == 8 * kMiB);

  // The config's max, with a budget: the last clone, and the entry is purged.
  env.options.cache.flatten_pinned_budget_s = 300;
  env.options.cache.flatten_pinned_max = 2;
  cache = OpenDrivenEngine(env.options, clock).cache;
  pass = RunPass(*cache, std::nullopt);
  CHECK(pass.flattened == 1);
  CHECK(pass.purged == 1);
  CHECK(pass.pinned_bytes == 0);
  CHECK(env.backend->ListTrash().empty());
  CHECK(cache->GetStats().pinned_bytes == 0);
  CHECK(all_read_back());
  for (const auto& v : cache->Volumes(small)) CHECK(v.depth == 0);
  // The purged entries can be cached again.
  CHECK(cache->CreateVolume({.image_id = big, .volume = "big2"}).plan == Plan::kMiss);
}
