// Table tests of the order in which clones of pinned entries are flattened.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "policy/pinned_flatten.h"

using namespace cachemgr::policy;

namespace {
constexpr uint64_t kMiB = 1 << 20;

// "entry:volume" per step, '*' after a step that frees its entry.
std::string Render(const std::vector<FlattenStep>& plan) {
  std::string out;
  for (const auto& s : plan) {
    if (!out.empty()) out += ' ';
    out += std::to_string(s.entry_id) + ":" + std::to_string(s.volume_id) + (s.frees_entry ? "*" : "");
  }
  return out;
}
}  // namespace

TEST_CASE("pinned flatten: work is the parent's data a clone still reads") {
  PinnedEntry e{1, 8 * kMiB, 8 * kMiB, {}};
  CHECK(FlattenWork(e, {10, 8 * kMiB, 0}) == 8 * kMiB);
  CHECK(FlattenWork(e, {10, 8 * kMiB, 3 * kMiB}) == 5 * kMiB);
  CHECK(FlattenWork(e, {10, 8 * kMiB, 9 * kMiB}) == 0);   // rewrote it all (and grew)
  CHECK(FlattenWork(e, {10, 20 * kMiB, 4 * kMiB}) == 4 * kMiB);  // grown: the parent covers 8
  CHECK(FlattenWork(e, {10, 2 * kMiB, 0}) == 2 * kMiB);    // smaller than its parent
}

TEST_CASE("pinned flatten: entries by bytes freed per byte copied, whole, within max") {
  struct Case {
    const char* what;
    std::vector<PinnedEntry> entries;
    size_t max;
    std::string plan;
  };
  const std::vector<Case> cases = {
      {"nothing pinned", {}, 4, ""},
      {"max 0: nothing", {{1, 8 * kMiB, 8 * kMiB, {{10, 8 * kMiB, 0}}}}, 0, ""},
      {"an entry whose clones this cache did not make is skipped",
       {{1, 8 * kMiB, 8 * kMiB, {}}, {2, 4 * kMiB, 4 * kMiB, {{20, 4 * kMiB, 0}}}}, 4, "2:20*"},
      // 16 MiB for 16 copied (ratio 1) before 8 MiB for 2 x 8 copied (ratio 0.5).
      {"one clone of a big entry before two clones of a small one",
       {{2, 8 * kMiB, 8 * kMiB, {{20, 8 * kMiB, 0}, {21, 8 * kMiB, 0}}},
        {1, 16 * kMiB, 16 * kMiB, {{10, 16 * kMiB, 0}}}},
       1, "1:10*"},
      {"both when both fit", 
       {{2, 8 * kMiB, 8 * kMiB, {{20, 8 * kMiB, 0}, {21, 8 * kMiB, 0}}},
        {1, 16 * kMiB, 16 * kMiB, {{10, 16 * kMiB, 0}}}},
       3, "1:10* 2:20 2:21*"},
      // Clones that rewrote most of their parent make an entry cheap to free.
      {"a cheap entry before a big expensive one",
       {{1, 16 * kMiB, 16 * kMiB, {{10, 16 * kMiB, 0}}},
        {2, 8 * kMiB, 8 * kMiB, {{20, 8 * kMiB, 7 * kMiB}}}},
       1, "2:20*"},
      {"equal ratio: the larger entry first",
       {{1, 4 * kMiB, 4 * kMiB, {{10, 4 * kMiB, 0}}}, {2, 8 * kMiB, 8 * kMiB, {{20, 8 * kMiB, 0}}}},
       1, "2:20*"},
      {"equal in all: the lower entry id first",
       {{2, 4 * kMiB, 4 * kMiB, {{20, 4 * kMiB, 0}}}, {1, 4 * kMiB, 4 * kMiB, {{10, 4 * kMiB, 0}}}},
       1, "1:10*"},
      {"a clone that copies nothing ranks first",
       {{1, 16 * kMiB, 16 * kMiB, {{10, 16 * kMiB, 0}}},
        {2, 1 * kMiB, 8 * kMiB, {{20, 8 * kMiB, 8 * kMiB}}}},
       1, "2:20*"},
      // The best entry has 3 clones and max is 2: the next one that fits is freed whole
      // first, then what is left starts on the best one.
      {"an entry that does not fit yields to one that does, then is started",
       {{1, 64 * kMiB, 8 * kMiB, {{10, 8 * kMiB, 0}, {11, 8 * kMiB, 4 * kMiB}, {12, 8 * kMiB, 0}}},
        {2, 4 * kMiB, 8 * kMiB, {{20, 8 * kMiB, 0}}}},
       2, "2:20* 1:11"},
      {"more clones than max: started with the cheapest, freed over later passes",
       {{1, 8 * kMiB, 8 * kMiB, {{10, 8 * kMiB, 0}, {11, 8 * kMiB, 6 * kMiB}, {12, 8 * kMiB, 2 * kMiB}}}},
       2, "1:11 1:12"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    CHECK(Render(PlanPinnedFlatten(c.entries, c.max)) == c.plan);
  }
}
