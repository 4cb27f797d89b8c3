#include "engine/failpoints.h"

#include <cstdlib>

namespace cachemgr::engine {

void Failpoint(std::string_view step) {
  // Read every time: tests set it in a child between fork and the call.
  const char* armed = std::getenv(kFailpointEnv);
  if (armed != nullptr && step == armed) std::abort();
}

}  // namespace cachemgr::engine
