// util/process.h: runs a program with argv (never a shell), with limits.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace cachemgr::util {

struct RunOptions {
  std::chrono::seconds timeout{600};  // wall clock; the child is killed (SIGKILL) after it
  uint64_t cpu_limit_s = 0;           // RLIMIT_CPU; 0 = none
  uint64_t address_space_mb = 0;      // RLIMIT_AS; 0 = none
  size_t max_output_bytes = 1 << 20;  // stdout kept (stderr keeps its last 64 KiB)
};

struct RunResult {
  int exit_code = -1;    // -1 when killed by a signal
  int signal = 0;        // the signal that ended it, if any
  bool timed_out = false;
  std::string out;       // stdout
  std::string err;       // stderr (tail)
};

// Runs argv[0] (looked up in PATH) with argv; stdin is /dev/null. Throws Error(kIo)
// only when the program cannot be started at all; otherwise the result says how it
// ended.
RunResult Run(const std::vector<std::string>& argv, const RunOptions& options = {});

// Runs and throws Error(`code`) naming the command and quoting its stderr unless it
// exits 0 within the time limit.
std::string RunChecked(const std::vector<std::string>& argv, const RunOptions& options,
                       int code_on_failure /* a cachemgr::Errc value */);

}  // namespace cachemgr::util
