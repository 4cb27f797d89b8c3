// storage/rbd/rbd_ctx_lock.h: the process's image-context lock. Shared takers (clones)
// hold it together; an exclusive taker (every other open, close or make) holds it alone;
// one waiting holds off new shared takers; a take that runs out of time fails and holds
// nothing. Its name puts it in the TSan suite (tests/run-all.sh picks "concurren").
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "storage/rbd/rbd_ctx_lock.h"

using cachemgr::storage::rbd::ImageCtxLock;
using namespace std::chrono_literals;

namespace {

ImageCtxLock::Deadline In(std::chrono::milliseconds d) {
  return std::chrono::steady_clock::now() + d;
}

}  // namespace

TEST_CASE("shared takers hold the lock together; an exclusive one waits for all of them") {
  ImageCtxLock lock;
  REQUIRE(lock.LockShared(std::nullopt));
  REQUIRE(lock.LockShared(In(10ms)));  // a second clone beside the first
  CHECK_FALSE(lock.Lock(In(20ms)));    // no open beside a clone
  lock.UnlockShared();
  CHECK_FALSE(lock.Lock(In(20ms)));  // one clone still runs
  lock.UnlockShared();
  REQUIRE(lock.Lock(In(10ms)));
  CHECK_FALSE(lock.LockShared(In(20ms)));  // no clone beside an open
  CHECK_FALSE(lock.Lock(In(20ms)));        // nor a second open
  lock.Unlock();
  REQUIRE(lock.LockShared(In(10ms)));
  lock.UnlockShared();
}

TEST_CASE("an exclusive taker waiting holds off new shared takers, and gets the lock") {
  ImageCtxLock lock;
  REQUIRE(lock.LockShared(std::nullopt));
  std::atomic<bool> had{false};
  std::thread writer([&] {
    REQUIRE(lock.Lock(std::nullopt));
    had = true;
    lock.Unlock();
  });
  // Until the writer waits, a new shared take succeeds (and is given back at once); once it
  // waits, one fails: the stream of clones does not hold off the open.
  for (;;) {
    if (!lock.LockShared(In(1ms))) break;
    lock.UnlockShared();
    std::this_thread::yield();
  }
  CHECK_FALSE(had.load());
  lock.UnlockShared();  // the first clone ends: the writer goes
  writer.join();
  CHECK(had.load());
  REQUIRE(lock.LockShared(In(10ms)));
  lock.UnlockShared();
}

TEST_CASE("an exclusive take that runs out of time lets the shared takers it held off go") {
  ImageCtxLock lock;
  REQUIRE(lock.LockShared(std::nullopt));
  std::atomic<bool> gave_up{false};
  std::thread writer([&] {
    CHECK_FALSE(lock.Lock(In(200ms)));
    gave_up = true;
  });
  // A shared taker without a bound, held off while the writer waits, goes when it gives up.
  std::thread reader([&] {
    while (!gave_up.load()) {
      if (!lock.LockShared(In(1ms))) break;  // the writer is waiting now
      lock.UnlockShared();
      std::this_thread::yield();
    }
    REQUIRE(lock.LockShared(std::nullopt));
    lock.UnlockShared();
  });
  writer.join();
  reader.join();
  CHECK(gave_up.load());
  lock.UnlockShared();
  REQUIRE(lock.Lock(In(10ms)));
  lock.Unlock();
}

TEST_CASE("many shared and exclusive takers: never an exclusive holder beside another holder") {
  ImageCtxLock lock;
  std::atomic<int> shared{0}, exclusive{0}, violations{0};
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        if ((t + i) % 5 == 0) {
          REQUIRE(lock.Lock(std::nullopt));
          if (exclusive.fetch_add(1) != 0 || shared.load() != 0) ++violations;
          exclusive.fetch_sub(1);
          lock.Unlock();
        } else {
          REQUIRE(lock.LockShared(std::nullopt));
          shared.fetch_add(1);
          if (exclusive.load() != 0) ++violations;
          shared.fetch_sub(1);
          lock.UnlockShared();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(violations.load() == 0);
}
