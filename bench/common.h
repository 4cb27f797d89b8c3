// bench/common.h: what every benchmark program shares: a clock, sample series, the
// JSON result file run.sh collects, and a child-process runner that reports peak RSS.
//
// Each program writes one JSON document:
//   {"series": [{"scenario": "hit", "name": "engine", "unit": "ms",
//                "samples": [...], "extra": {...}}, ...]}
// bench/report.py merges these into the table, latest.json and the chart.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cachemgr::bench {

using Clock = std::chrono::steady_clock;

inline double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// One named series of measurements of one scenario.
struct Series {
  std::string scenario;        // "hit", "burst", "miss", ...
  std::string name;            // "engine", "cinder", "floor", ...
  std::string unit = "ms";     // "ms", "volumes/s", "MiB", ...
  std::vector<double> samples;
  nlohmann::json extra = nlohmann::json::object();
};

double Percentile(std::vector<double> v, double p);  // p in [0, 100]; NaN when empty

// Collects series and writes them to `path` (or stdout when path is "-").
class Results {
 public:
  Series& Add(Series s);
  void Write(const std::string& path) const;

 private:
  std::vector<Series> series_;
};

// Peak resident set of a finished child, from wait4's rusage (its own and its waited-for
// descendants'), so the measuring process's own memory never leaks into the figure.
struct ChildResult {
  int exit_code = -1;
  double wall_ms = 0;
  uint64_t max_rss_kib = 0;
};
// Runs argv (no shell); stdout goes to /dev/null when `quiet`, stderr is inherited.
ChildResult RunChild(const std::vector<std::string>& argv, bool quiet = false);
// Waits for child `pid`, started at `start`, and reads its exit code and peak RSS.
ChildResult WaitChild(pid_t pid, Clock::time_point start);
// Forks and runs `fn` in the child (its return value is the exit code).
template <typename Fn>
ChildResult ForkChild(Fn&& fn);

// Unique suffix for names made in one run ("<pid>-<n>").
std::string UniqueTag();

// Simple "--key value" argument reader: throws std::runtime_error naming a missing key.
class Args {
 public:
  Args(int argc, char** argv);
  std::string Get(const std::string& key) const;
  std::string Get(const std::string& key, const std::string& fallback) const;
  long GetInt(const std::string& key, long fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::vector<std::pair<std::string, std::string>> kv_;
  std::vector<std::string> positional_;
};

}  // namespace cachemgr::bench

#include "common_inl.h"
