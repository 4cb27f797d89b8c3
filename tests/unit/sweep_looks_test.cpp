// What the pass keeps of the sweep's clean folders between passes (engine/sweep_looks.h).
#include "engine/sweep_looks.h"

#include <doctest/doctest.h>

namespace cachemgr::engine {
namespace {

TEST_CASE("a stamp found again keeps the time it was first recorded; a new one takes now") {
  const std::string first = LooksToStore("", {{"_base", "s1"}, {".state/uses", "t1"}}, 1000);
  CHECK(LooksToTrust(first, 1000, kLookMaxAge) ==
        storage::SweepLooks{{"_base", "s1"}, {".state/uses", "t1"}});
  // 10 minutes on: _base changed (a new stamp, now), the table did not (still 1000).
  const std::string second = LooksToStore(first, {{"_base", "s2"}, {".state/uses", "t1"}}, 1600);
  CHECK(LooksToTrust(second, 1600, kLookMaxAge) ==
        storage::SweepLooks{{"_base", "s2"}, {".state/uses", "t1"}});
  // 15 minutes after 1000 the table's stamp is no longer trusted, however often it was
  // passed over since; _base's (recorded at 1600) still is.
  const std::string third = LooksToStore(second, {{"_base", "s2"}, {".state/uses", "t1"}}, 1900);
  CHECK(LooksToTrust(third, 1000 + kLookMaxAge, kLookMaxAge) ==
        storage::SweepLooks{{"_base", "s2"}});
  CHECK(LooksToTrust(third, 1000 + kLookMaxAge - 1, kLookMaxAge).size() == 2);
}

TEST_CASE("a folder the sweep no longer found clean is dropped") {
  const std::string first = LooksToStore("", {{"_base", "s1"}, {"volumes", "v1"}}, 1000);
  const std::string second = LooksToStore(first, {{"_base", "s1"}}, 1010);
  CHECK(LooksToTrust(second, 1010, kLookMaxAge) == storage::SweepLooks{{"_base", "s1"}});
  CHECK(LooksToTrust(LooksToStore(second, {}, 1020), 1020, kLookMaxAge).empty());
}

TEST_CASE("a stored value that is not the pass's own, or from the future, is trusted in nothing") {
  for (const std::string bad : {"", "x", "[]", "{\"_base\": \"s1\"}", "{\"_base\": [\"s1\"]}",
                                "{\"_base\": [1, 2]}", "{\"_base\": [\"s1\", \"2\"]}",
                                "{\"_base\": [\"s1\", 1000], \"volumes\": 3}"}) {
    CAPTURE(bad);
    CHECK(LooksToTrust(bad, 1000, kLookMaxAge).empty());
  }
  // Recorded after now (a clock set back): not trusted.
  CHECK(LooksToTrust(LooksToStore("", {{"_base", "s1"}}, 2000), 1000, kLookMaxAge).empty());
}

}  // namespace
}  // namespace cachemgr::engine
