// engine/eviction_steps.h: what the eviction files (evict.cpp, gc.cpp, pass.cpp) share.
#pragma once

#include <chrono>
#include <functional>

#include "cachemgr/error.h"

namespace cachemgr::engine {

// This host's pass lock, in the lock folder: one pass at a time here, and one clearer of a
// dead create's leftovers (the pass, or a create run again: ClaimVolume).
inline constexpr const char* kHostPassLockFile = "eviction-pass.lock";

// How long the pass waits for an image another caller is working on before skipping it.
inline constexpr auto kPassLockWait = std::chrono::milliseconds(200);

// Runs fn; false if it threw kNotFound (anything else is thrown on).
inline bool IgnoreNotFound(const std::function<void()>& fn) {
  try {
    fn();
    return true;
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
    return false;
  }
}

}  // namespace cachemgr::engine
