// Table tests of the pure decisions in policy/.
#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "policy/clone_plan.h"
#include "policy/eviction.h"
#include "policy/staleness.h"

using namespace cachemgr::policy;

TEST_CASE("clone plan by max_clone_depth and entry depth") {
  struct Case {
    int max_depth;
    uint32_t entry_depth;
    ClonePlan plan;
    uint32_t volume_depth;
    uint32_t entry_after;
  };
  const std::vector<Case> cases = {
      {5, 0, ClonePlan::kClone, 1, 0},
      {5, 4, ClonePlan::kClone, 5, 4},
      {5, 5, ClonePlan::kFlattenClone, 1, 0},
      {1, 0, ClonePlan::kClone, 1, 0},
      {1, 1, ClonePlan::kFlattenClone, 1, 0},  // direct entry (depth 1), limit 1
      {2, 1, ClonePlan::kClone, 2, 1},
      {0, 0, ClonePlan::kCopy, 0, 0},
      {0, 3, ClonePlan::kCopy, 0, 3},
      {-1, 1, ClonePlan::kCopy, 0, 1},
  };
  for (const auto& c : cases) {
    CAPTURE(c.max_depth);
    CAPTURE(c.entry_depth);
    auto d = PlanClone(c.max_depth, c.entry_depth);
    CHECK(d.plan == c.plan);
    CHECK(d.volume_depth == c.volume_depth);
    CHECK(d.entry_depth == c.entry_after);
  }
}

namespace {
constexpr uint64_t kGiB = 1ull << 30;

EvictionCandidate E(int64_t id, uint64_t gib, int64_t last_used, bool evictable = true,
                    uint64_t allocated = 0) {
  return {id, gib * kGiB, allocated, last_used, evictable};
}
}  // namespace

TEST_CASE("eviction victims, LRU order, limits and admission") {
  struct Case {
    std::string name;
    std::vector<EvictionCandidate> entries;
    EvictionLimits limits;
    std::optional<uint64_t> incoming;
    bool admit;
    std::vector<int64_t> victims;
    bool limits_hold;
  };
  const std::vector<Case> cases = {
      {"unlimited", {E(1, 10, 1), E(2, 10, 2)}, {0, 0}, 5 * kGiB, true, {}, true},
      {"count: oldest goes", {E(1, 1, 30), E(2, 1, 10), E(3, 1, 20)}, {0, 3}, kGiB, true, {2},
       true},
      {"count: two go", {E(1, 1, 30), E(2, 1, 10), E(3, 1, 20)}, {0, 2}, kGiB, true, {2, 3},
       true},
      {"size: enough bytes go", {E(1, 4, 1), E(2, 4, 2), E(3, 4, 3)}, {10, 0}, 3 * kGiB, true,
       {1, 2}, true},
      {"size fits exactly", {E(1, 4, 1), E(2, 4, 2)}, {10, 0}, 2 * kGiB, true, {}, true},
      {"too large: served, not cached", {E(1, 1, 1)}, {10, 0}, 11 * kGiB, false, {}, true},
      {"not ready is never a victim", {E(1, 1, 1, false), E(2, 1, 2)}, {0, 2}, kGiB, true, {2},
       true},
      {"cannot hold: everything busy", {E(1, 5, 1, false), E(2, 5, 2, false)}, {8, 0}, kGiB,
       true, {}, false},
      {"ties broken by id", {E(7, 1, 5), E(3, 1, 5)}, {0, 2}, kGiB, true, {3}, true},
      {"pass without incoming", {E(1, 1, 1), E(2, 1, 2), E(3, 1, 3)}, {0, 2}, std::nullopt,
       true, {1}, true},
      {"allocated accounting",
       {E(1, 10, 1, true, 1 * kGiB), E(2, 10, 2, true, 1 * kGiB)},
       {3, 0, true},
       kGiB,
       true,
       {},
       true},
      {"provisioned accounting of the same",
       {E(1, 10, 1, true, 1 * kGiB), E(2, 10, 2, true, 1 * kGiB)},
       {3, 0, false},
       kGiB,
       true,
       {1, 2},
       true},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto plan = PlanEviction(c.entries, c.limits, c.incoming);
    CHECK(plan.admit == c.admit);
    CHECK(plan.victims == c.victims);
    CHECK(plan.limits_hold == c.limits_hold);
  }
}

TEST_CASE("eviction keeps the limits after every admission") {
  // Admit 20 entries of 1..4 GiB into a 10 GiB / 4-entry cache: after each, the
  // survivors plus the newcomer stay within both limits.
  EvictionLimits limits{10, 4};
  std::vector<EvictionCandidate> cache;
  for (int i = 0; i < 20; ++i) {
    uint64_t size = (1 + i % 4) * kGiB;
    auto plan = PlanEviction(cache, limits, size);
    REQUIRE(plan.admit);
    std::erase_if(cache, [&](const EvictionCandidate& c) {
      return std::find(plan.victims.begin(), plan.victims.end(), c.id) != plan.victims.end();
    });
    cache.push_back({i + 1, size, 0, i, true});
    uint64_t total = 0;
    for (auto& c : cache) total += c.provisioned_bytes;
    CHECK(total <= 10 * kGiB);
    CHECK(cache.size() <= 4);
    CHECK(plan.bytes_after == total);
  }
}

TEST_CASE("staleness") {
  struct Case {
    ImageVersion cached, source;
    bool on_updated_at;
    Staleness want;
  };
  const std::vector<Case> cases = {
      {{"a", "sha512:x", "t1"}, {"a", "sha512:x", "t1"}, false, Staleness::kFresh},
      {{"a", "", "t1"}, {"b", "", "t1"}, false, Staleness::kChecksumChanged},
      {{"a", "sha512:x", "t1"}, {"a", "sha512:y", "t1"}, false, Staleness::kChecksumChanged},
      {{"a", "", "t1"}, {"a", "", "t2"}, false, Staleness::kFresh},
      {{"a", "", "t1"}, {"a", "", "t2"}, true, Staleness::kUpdatedAtChanged},
      {{"a", "", "t1"}, {"b", "", "t2"}, true, Staleness::kChecksumChanged},
      {{"", "", ""}, {"a", "sha512:x", "t2"}, false, Staleness::kFresh},  // unknown: no verdict
      {{"a", "", "t1"}, {"", "", "t1"}, true, Staleness::kFresh},
  };
  int i = 0;
  for (const auto& c : cases) {
    CAPTURE(i++);
    CHECK(CheckStaleness(c.cached, c.source, c.on_updated_at) == c.want);
  }
}

TEST_CASE("the LRU plan reads candidates only while the limits are exceeded") {
  // 10 entries of 1 GiB, max_count 8: two victims, and the third candidate is never read.
  std::vector<cachemgr::policy::EvictionCandidate> lru;
  for (int64_t i = 1; i <= 10; ++i) lru.push_back({i, 1ull << 30, 1, i, i != 2});
  size_t reads = 0;
  auto plan = cachemgr::policy::PlanEvictionLru(
      {10, 10ull << 30},
      [&]() -> std::optional<cachemgr::policy::EvictionCandidate> {
        if (reads == lru.size()) return std::nullopt;
        return lru[reads++];
      },
      {0, 8, false});
  CHECK(plan.victims == std::vector<int64_t>{1, 3});  // 2 is busy: skipped
  CHECK(reads == 3);
  CHECK(plan.limits_hold);
  CHECK(plan.count_after == 8);
  CHECK(plan.bytes_after == 8ull << 30);
}
