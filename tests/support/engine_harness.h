// tests/support/engine_harness.h: an engine a test drives: the cache's own parts, with
// its backend wrapped in a FaultyBackend and its time from a FakeClock the test holds.
#pragma once

#include <memory>

#include "cachemgr/cache.h"
#include "support/fake_clock.h"
#include "support/faulty_backend.h"

namespace cachemgr::test {

struct DrivenEngine {
  std::unique_ptr<Cache> cache;
  FaultyBackend* faults = nullptr;  // owned by `cache`
  std::shared_ptr<FakeClock> clock;
};

// Opens the cache `options` describe (validated as Cache::Open does) over a FaultyBackend
// wrapping the configured backend, and a FakeClock (a new one unless `clock` is given:
// several engines of one test can share a time). Nothing is armed.
DrivenEngine OpenDrivenEngine(const Options& options,
                              std::shared_ptr<FakeClock> clock = nullptr);

}  // namespace cachemgr::test
