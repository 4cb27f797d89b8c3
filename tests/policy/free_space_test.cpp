// policy/free_space: the free-space floor, as a table of cases.
#include "policy/free_space.h"

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

using namespace cachemgr::policy;

namespace {
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMiB = 1ull << 20;

FloorPlan Plan(const FreeSpace& space, const FloorLimits& limits, uint64_t incoming,
               const std::vector<FloorCandidate>& lru, bool partial, size_t* read = nullptr) {
  size_t pos = 0;
  auto plan = PlanFloor(
      space, limits, incoming,
      [&]() -> std::optional<FloorCandidate> {
        if (pos == lru.size()) return std::nullopt;
        return lru[pos++];
      },
      partial);
  if (read) *read = pos;
  return plan;
}
}  // namespace

TEST_CASE("the floor is the larger of percent and GiB") {
  const FreeSpace space{100 * kGiB, 50 * kGiB};
  CHECK(FloorBytes(space, {}) == 0);
  CHECK(FloorBytes(space, {10, 0}) == 10 * kGiB);
  CHECK(FloorBytes(space, {0, 3}) == 3 * kGiB);
  CHECK(FloorBytes(space, {10, 20}) == 20 * kGiB);
  CHECK(FloorBytes(space, {25, 20}) == 25 * kGiB);
  CHECK(FloorBytes({1000, 0}, {0.5, 0}) == 5);  // rounded up: never below the share
  CHECK(FloorBytes({1001, 0}, {0.5, 0}) == 6);
}

TEST_CASE("floor victims, LRU order, what frees nothing, and what cannot hold") {
  struct Case {
    std::string name;
    FreeSpace space;
    FloorLimits limits;
    uint64_t incoming;
    std::vector<FloorCandidate> lru;
    bool partial;
    bool holds;
    std::vector<int64_t> victims;
    uint64_t avail_after, shortfall;
  };
  // total 100 MiB; floor 20 MiB (20%)
  const FreeSpace s{100 * kMiB, 30 * kMiB};
  const FloorLimits f{20, 0};
  const std::vector<FloorCandidate> three = {{1, 5 * kMiB}, {2, 10 * kMiB}, {3, 10 * kMiB}};
  const std::vector<Case> cases = {
      {"off: nothing to do", s, {}, 90 * kMiB, three, false, true, {}, 0, 0},
      {"fits as it is", s, f, 10 * kMiB, three, false, true, {}, 20 * kMiB, 0},
      {"one victim makes room", s, f, 15 * kMiB, three, false, true, {1}, 20 * kMiB, 0},
      {"LRU order until it holds", s, f, 22 * kMiB, three, false, true, {1, 2}, 23 * kMiB, 0},
      {"kept for clones frees nothing: skipped",
       s,
       f,
       15 * kMiB,
       {{1, 0}, {2, 10 * kMiB}},
       false,
       true,
       {2},
       25 * kMiB,
       0},
      {"not evictable: skipped",
       s,
       f,
       15 * kMiB,
       {{1, 5 * kMiB, false}, {2, 10 * kMiB}},
       false,
       true,
       {2},
       25 * kMiB,
       0},
      {"cannot hold: a fill evicts nothing", s, f, 40 * kMiB, three, false, false, {}, 0, 5 * kMiB},
      {"cannot hold: the pass evicts all it can",
       s,
       f,
       0,
       {{1, 0}, {2, 1 * kMiB}},
       true,
       true,
       {},
       30 * kMiB,
       0},
      {"pass below the floor restores it",
       {100 * kMiB, 12 * kMiB},
       f,
       0,
       three,
       true,
       true,
       {1, 2},
       27 * kMiB,
       0},
      {"pass short of the floor evicts everything",
       {100 * kMiB, 1 * kMiB},
       {30, 0},
       0,
       three,
       true,
       false,
       {1, 2, 3},
       26 * kMiB,
       0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto plan = Plan(c.space, c.limits, c.incoming, c.lru, c.partial);
    CHECK(plan.holds == c.holds);
    CHECK(plan.victims == c.victims);
    if (c.holds) CHECK(plan.avail_after == c.avail_after);
    if (!c.holds && !c.partial) CHECK(plan.shortfall == c.shortfall);
  }
}

TEST_CASE("the floor plan reads candidates only while the floor does not hold") {
  std::vector<FloorCandidate> lru;
  for (int i = 1; i <= 100; ++i) lru.push_back({i, kMiB});
  size_t read = 0;
  auto plan = Plan({1000 * kMiB, 100 * kMiB}, {0, 0.1}, 3 * kMiB, lru, false, &read);
  // floor 102.4 MiB + 3 MiB incoming: 6 entries of 1 MiB make it hold
  CHECK(plan.holds);
  CHECK(plan.victims.size() == 6);
  CHECK(read == 6);
  CHECK(plan.avail_after >= plan.floor_bytes);
}

TEST_CASE("after any admission the floor holds or nothing was evicted") {
  // Fill 30 entries of 1..4 MiB into 40 MiB with a 25% floor: every accepted fill leaves
  // avail >= floor; every refused one evicted nothing.
  FreeSpace space{40 * kMiB, 40 * kMiB};
  const FloorLimits limits{25, 0};
  std::vector<FloorCandidate> cache;
  int refused = 0;
  for (int i = 0; i < 30; ++i) {
    const uint64_t size = i == 17 ? 40 * kMiB : (1 + i % 4) * kMiB;
    auto plan = Plan(space, limits, size, cache, false);
    if (!plan.holds) {
      CHECK(plan.victims.empty());
      CHECK(plan.shortfall > 0);
      ++refused;
      continue;
    }
    for (int64_t v : plan.victims) {
      std::erase_if(cache, [&](const FloorCandidate& c) {
        if (c.id != v) return false;
        space.avail_bytes += c.freed_bytes;
        return true;
      });
    }
    space.avail_bytes -= size;
    cache.push_back({i + 1, size});
    CHECK(space.avail_bytes >= plan.floor_bytes);
    CHECK(space.avail_bytes == plan.avail_after);
  }
  CHECK(refused == 1);  // the one 40 MiB image
}
