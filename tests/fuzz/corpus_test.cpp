// Replays every seed of tests/fuzz/corpus/<target>/ through the fuzz targets' entry
// functions, so the normal build checks the corpus (and any crash input added to it).
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "fuzz_entry.h"
#include "support/test_util.h"

namespace {

namespace fs = std::filesystem;

size_t Replay(const std::string& target, void (*one)(const uint8_t*, size_t)) {
  fs::path dir = fs::path(CACHEMGR_SOURCE_DIR) / "tests" / "fuzz" / "corpus" / target;
  REQUIRE_MESSAGE(fs::is_directory(dir), "no seed corpus at " << dir);
  size_t n = 0;
  for (const auto& f : fs::directory_iterator(dir)) {
    if (!f.is_regular_file()) continue;
    std::string bytes = cachemgr::test::ReadFile(f.path());
    INFO("seed " << f.path().filename().string());
    CHECK_NOTHROW(one(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("config loader: every seed is parsed or refused with cachemgr::Error") {
  CHECK(Replay("config", &cachemgr::fuzz::ConfigOne) >= 10);
}

TEST_CASE("format detector: every seed is detected, and claims are checked") {
  CHECK(Replay("format", &cachemgr::fuzz::FormatOne) >= 8);
}

TEST_CASE("qcow2 reader: every seed is read whole or refused as corrupt") {
  CHECK(Replay("qcow2", &cachemgr::fuzz::Qcow2One) >= 6);
}
