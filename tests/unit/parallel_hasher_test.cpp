// util::ParallelHasher: the digests of its worker threads equal the one-thread digests,
// through the smallest ring, dropped mid-stream and with many hashers at once. Run under
// ASan and TSan by the sanitizer suites (tests/run-all.sh), which see a worker outliving
// the hasher or a block refilled while it is read.
#include <doctest/doctest.h>

#include <cstddef>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "util/hash.h"

using cachemgr::util::Hasher;
using cachemgr::util::ParallelHasher;

namespace {

std::vector<std::byte> RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

std::string OneThreadDigest(const std::string& algo, std::span<const std::byte> data) {
  Hasher h(algo);
  h.Update(data);
  return h.HexDigest();
}

// Feeds `data` in chunks of uneven sizes (1 byte up to a few blocks).
void FeedUneven(ParallelHasher& hasher, std::span<const std::byte> data, unsigned seed) {
  std::mt19937 rng(seed);
  while (!data.empty()) {
    const size_t n = std::min<size_t>(data.size(), 1 + rng() % 20000);
    hasher.Update(data.first(n));
    data = data.subspan(n);
  }
}

}  // namespace

TEST_CASE("parallel digests equal the one-thread digests through the smallest ring") {
  const auto data = RandomBytes(3 * 1024 * 1024 + 77, 1);
  // 4 KiB blocks, 2 of them: the feeder waits for the workers at almost every block.
  ParallelHasher hasher({"md5", "sha512", "sha256"}, 4096, 2);
  FeedUneven(hasher, data, 2);
  CHECK(hasher.bytes() == data.size());
  const auto digests = hasher.Finish();
  REQUIRE(digests.size() == 3);
  CHECK(digests[0] == OneThreadDigest("md5", data));
  CHECK(digests[1] == OneThreadDigest("sha512", data));
  CHECK(digests[2] == OneThreadDigest("sha256", data));
}

TEST_CASE("a parallel hasher dropped mid-stream stops its threads") {
  // A failed download drops the hasher without Finish: its workers must be joined before
  // the ring is freed, whatever block they are on.
  const auto data = RandomBytes(256 * 1024, 3);
  for (int i = 0; i < 50; ++i) {
    ParallelHasher hasher({"md5", "sha512"}, 4096, 2);
    hasher.Update(
        std::span<const std::byte>(data).first(static_cast<size_t>(i) * 4099 % data.size()));
  }
  ParallelHasher unused({"md5"});
  CHECK(unused.bytes() == 0);
}

TEST_CASE("parallel hashers on many threads at once") {
  // As 16 volume creates of one process may each fill (or verify) at once.
  constexpr int kThreads = 8;
  const auto data = RandomBytes(1024 * 1024 + 5, 4);
  const std::string md5 = OneThreadDigest("md5", data);
  const std::string sha512 = OneThreadDigest("sha512", data);
  std::vector<std::string> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        ParallelHasher hasher({"md5", "sha512"}, 8192, 3);
        FeedUneven(hasher, data, 10 + static_cast<unsigned>(t));
        const auto d = hasher.Finish();
        got[t] = d.at(0) + ":" + d.at(1);
      } catch (const std::exception& e) {
        got[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) CHECK(got[t] == md5 + ":" + sha512);
}
