// What the pass keeps of the sweep's clean folders between passes (engine/sweep_looks.h).
#include "engine/sweep_looks.h"

#include <doctest/doctest.h>

namespace cachemgr::engine {
namespace {

TEST_CASE("a stamp found again keeps the time it was first recorded; a new one takes now") {
  const std::string first = LooksToStore("", {{"_base", "s1"}, {".state/uses", "t1"}}, 1000, kLookMaxAge);
  CHECK(LooksToTrust(first, 1000, kLookMaxAge) ==
        storage::SweepLooks{{"_base", "s1"}, {".state/uses", "t1"}});
  // 10 minutes on: _base changed (a new stamp, now), the table did not (still 1000).
  const std::string second = LooksToStore(first, {{"_base", "s2"}, {".state/uses", "t1"}}, 1600, kLookMaxAge);
  CHECK(LooksToTrust(second, 1600, kLookMaxAge) ==
        storage::SweepLooks{{"_base", "s2"}, {".state/uses", "t1"}});
  // 15 minutes after 1000 the table's stamp is no longer trusted, however often it was
  // passed over since; _base's (recorded at 1600) still is.
  const std::string third = LooksToStore(second, {{"_base", "s2"}, {".state/uses", "t1"}}, 1800, kLookMaxAge);
  CHECK(LooksToTrust(third, 1000 + kLookMaxAge, kLookMaxAge) ==
        storage::SweepLooks{{"_base", "s2"}});
  CHECK(LooksToTrust(third, 1000 + kLookMaxAge - 1, kLookMaxAge).size() == 2);
  // The sweep then lists the table's folder and finds it clean, at the same stamp: its
  // look is recorded afresh.
  const std::string fourth =
      LooksToStore(third, {{"_base", "s2"}, {".state/uses", "t1"}}, 1000 + kLookMaxAge, kLookMaxAge);
  CHECK(LooksToTrust(fourth, 1000 + 2 * kLookMaxAge - 1, kLookMaxAge) ==
        storage::SweepLooks{{".state/uses", "t1"}});
}

TEST_CASE("a folder name that is not UTF-8 is stored without failing, and matches no folder") {
  const std::string bad = ".tmp/caf\xe9";
  std::string stored;
  REQUIRE_NOTHROW(stored = LooksToStore("", {{bad, "s1"}, {"_base", "s2"}}, 1000, kLookMaxAge));
  const auto trusted = LooksToTrust(stored, 1000, kLookMaxAge);
  CHECK(trusted.count(bad) == 0);
  CHECK(trusted.at("_base") == "s2");
}

TEST_CASE("a folder the sweep no longer found clean is dropped") {
  const std::string first = LooksToStore("", {{"_base", "s1"}, {"volumes", "v1"}}, 1000, kLookMaxAge);
  const std::string second = LooksToStore(first, {{"_base", "s1"}}, 1010, kLookMaxAge);
  CHECK(LooksToTrust(second, 1010, kLookMaxAge) == storage::SweepLooks{{"_base", "s1"}});
  CHECK(LooksToTrust(LooksToStore(second, {}, 1020, kLookMaxAge), 1020, kLookMaxAge).empty());
}

TEST_CASE("a stored value that is not the pass's own, or from the future, is trusted in nothing") {
  for (const std::string bad : {"", "x", "[]", "{\"_base\": \"s1\"}", "{\"_base\": [\"s1\"]}",
                                "{\"_base\": [1, 2]}", "{\"_base\": [\"s1\", \"2\"]}",
                                "{\"_base\": [\"s1\", 1000], \"volumes\": 3}"}) {
    CAPTURE(bad);
    CHECK(LooksToTrust(bad, 1000, kLookMaxAge).empty());
  }
  // Times at the ends of the range: trusted in nothing, with no overflow.
  for (const std::string edge : {"{\"_base\": [\"s1\", -9223372036854775808]}",
                                 "{\"_base\": [\"s1\", 9223372036854775807]}"}) {
    CAPTURE(edge);
    CHECK(LooksToTrust(edge, 1000, kLookMaxAge).empty());
  }
  // Recorded after now (a clock set back): not trusted.
  CHECK(LooksToTrust(LooksToStore("", {{"_base", "s1"}}, 2000, kLookMaxAge), 1000, kLookMaxAge).empty());
}

}  // namespace
}  // namespace cachemgr::engine
