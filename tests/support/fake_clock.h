// tests/support/fake_clock.h: a Clock that moves only when the test says so.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "util/clock.h"

namespace cachemgr::test {

// Starts at the system's time (recorded times look like real ones) and then stands
// still; Advance moves the wall and the steady clock together. Thread-safe.
class FakeClock final : public util::Clock {
 public:
  FakeClock()
      : wall_(util::SystemClock().WallSeconds()),
        steady_(std::chrono::steady_clock::now().time_since_epoch().count()) {}

  int64_t WallSeconds() const override { return wall_.load(); }
  std::chrono::steady_clock::time_point SteadyNow() const override {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(steady_.load()));
  }
  void Advance(std::chrono::seconds by) {
    wall_ += by.count();
    steady_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(by).count();
  }
  // The wall clock set back (as NTP steps it), the steady clock left as it is.
  void StepWallBack(std::chrono::seconds by) { wall_ -= by.count(); }

 private:
  std::atomic<int64_t> wall_;
  std::atomic<std::chrono::steady_clock::duration::rep> steady_;
};

}  // namespace cachemgr::test
