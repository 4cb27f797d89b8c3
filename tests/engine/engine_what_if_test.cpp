// The what-if of other cache sizes, checked against the real cache: a skewed trace
// (Zipf, s = 1, over 50 images, 1,000 requests, fixed seed) replayed through the engine
// at max_count C predicts the hit ratio at 2C; the same trace replayed through a fresh
// cache at 2C measures it. Local backend, 64 KiB images, the engine in-process.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <future>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cachemgr/cache.h"
#include "engine_env.h"
#include "support/engine_harness.h"
#include "support/test_util.h"

namespace cachemgr::test {
namespace {

constexpr int kImages = 50;
constexpr int kRequests = 1000;
constexpr uint64_t kImageBytes = 64 * 1024;
constexpr uint64_t kC = 5;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::vector<int> ZipfTrace() {
  std::vector<double> weights;
  for (int i = 1; i <= kImages; ++i) weights.push_back(1.0 / i);  // s = 1
  std::discrete_distribution<int> zipf(weights.begin(), weights.end());
  std::mt19937_64 rng(20261201);
  std::vector<int> trace;
  for (int i = 0; i < kRequests; ++i) trace.push_back(zipf(rng));
  return trace;
}

struct Replay {
  int hits = 0;
  WhatIfReport what_if;
};

// A fresh cache at max_count `count` (and the bytes of `count` images), the trace
// replayed through it, one request a second (the LRU order is by last use in seconds),
// each volume deleted once made so the cache holds only its entries. The index's tree is
// renumbered every ~80 accesses (50 images, 64 positions to start).
Replay RunTrace(const std::filesystem::path& dir, const std::vector<int>& trace, uint64_t count) {
  Options options = EngineOptions(dir, false, "");
  options.cache.max_count = count;
  options.cache.max_size_gb = static_cast<double>(count * kImageBytes) / kGiB;
  for (int i = 0; i < kImages; ++i) {
    WriteRawImage(dir / "images" / ("zipf-" + std::to_string(i)), kImageBytes, kImageBytes,
                  static_cast<uint32_t>(i + 1));
  }
  auto clock = std::make_shared<FakeClock>();
  auto engine = OpenDrivenEngine(options, clock);
  Replay out;
  for (size_t i = 0; i < trace.size(); ++i) {
    // Half way, the cache is opened again: the histograms and the tree live in the index,
    // as they do across the processes of the tool.
    if (i == trace.size() / 2) {
      engine.cache.reset();
      engine = OpenDrivenEngine(options, clock);
    }
    engine.clock->Advance(std::chrono::seconds(1));
    const std::string volume = "v-" + std::to_string(i);
    auto made = engine.cache->CreateVolume(
        {.image_id = "zipf-" + std::to_string(trace[i]), .volume = volume});
    if (made.plan != Plan::kMiss && made.plan != Plan::kDirect) out.hits += 1;
    engine.cache->DeleteVolume(volume);
  }
  out.what_if = engine.cache->WhatIf(0.9);
  return out;
}

}  // namespace

TEST_CASE("a Zipf trace replayed at 2C hits within 5 points of the prediction made at C") {
  const std::vector<int> trace = ZipfTrace();
  TempDir dir("what-if");
  // The two replays share nothing (each its own directory, index and clock): the one at
  // 2C runs on a thread of its own meanwhile. Each miss waits for qemu-img, so the two
  // together take little more than one.
  const auto start = std::chrono::steady_clock::now();
  auto replay_2c = std::async(std::launch::async, [&] {
    Replay out = RunTrace(dir / "2c", trace, 2 * kC);
    return std::make_pair(out, std::chrono::steady_clock::now());
  });
  const Replay at_c = RunTrace(dir / "c", trace, kC);
  const auto mid = std::chrono::steady_clock::now();

  const WhatIfReport& r = at_c.what_if;
  REQUIRE(r.accesses == kRequests);
  CHECK(r.measured_hits == static_cast<uint64_t>(at_c.hits));
  REQUIRE(r.rows.size() == 4);
  REQUIRE(r.rows[1].factor == 1.0);
  REQUIRE(r.rows[2].factor == 2.0);
  CHECK(r.rows[2].max_count == 2 * kC);
  const double measured_c = static_cast<double>(at_c.hits) / kRequests;
  // Today's size, predicted from the same accesses, agrees with what was measured.
  CHECK(std::fabs(r.rows[1].hit_ratio_by_count - measured_c) <= 0.05);
  CHECK(std::fabs(r.rows[1].hit_ratio_by_size - measured_c) <= 0.05);
  // A bigger cache hits more, never more than the cold accesses allow.
  CHECK(r.rows[0].hit_ratio <= r.rows[1].hit_ratio);
  CHECK(r.rows[1].hit_ratio < r.rows[2].hit_ratio);
  CHECK(r.rows[2].hit_ratio <= r.rows[3].hit_ratio);
  CHECK(r.rows[3].hit_ratio <= r.max_hit_ratio + 1e-9);
  // Each image's first request is cold.
  CHECK(r.cold == std::set<int>(trace.begin(), trace.end()).size());

  const auto [at_2c, end] = replay_2c.get();
  const double measured_2c = static_cast<double>(at_2c.hits) / kRequests;
  MESSAGE("at C=" << kC << ": measured " << measured_c << ", predicted "
                  << r.rows[1].hit_ratio_by_count << "; at 2C: predicted "
                  << r.rows[2].hit_ratio_by_count << " (by size " << r.rows[2].hit_ratio_by_size
                  << "), measured " << measured_2c << "; the replays, side by side, took "
                  << std::chrono::duration<double>(mid - start).count() << " s and "
                  << std::chrono::duration<double>(end - start).count() << " s");
  CHECK(std::fabs(r.rows[2].hit_ratio_by_count - measured_2c) <= 0.05);
  CHECK(std::fabs(r.rows[2].hit_ratio_by_size - measured_2c) <= 0.05);
  // The second run's own histogram predicts the first's size from the other side.
  CHECK(std::fabs(at_2c.what_if.rows[0].hit_ratio_by_count - measured_c) <= 0.05);
  // Sizes for the target: one a cache of that many entries reaches.
  if (r.count_for_target) CHECK(*r.count_for_target > 2 * kC);
}

}  // namespace cachemgr::test
