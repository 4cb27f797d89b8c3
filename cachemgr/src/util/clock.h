// util/clock.h: where the engine gets "now" from, so that tests can move time instead
// of sleeping (as leveldb's Env gives NowMicros).
#pragma once

#include <chrono>
#include <cstdint>

namespace cachemgr::util {

class Clock {
 public:
  virtual ~Clock() = default;
  // Unix time in seconds: what is recorded (created_at, last_used, shared use times) and
  // compared with recorded times (intervals, cutoffs, staleness of records).
  virtual int64_t WallSeconds() const = 0;
  // A monotonic now, for budgets within one process (what is left of a lock timeout).
  virtual std::chrono::steady_clock::time_point SteadyNow() const = 0;
};

// The system's clocks.
class SystemClock final : public Clock {
 public:
  int64_t WallSeconds() const override {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  std::chrono::steady_clock::time_point SteadyNow() const override {
    return std::chrono::steady_clock::now();
  }
};

}  // namespace cachemgr::util
