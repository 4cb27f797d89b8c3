#include "engine/failpoints.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <string>

namespace cachemgr::engine {

void Failpoint(std::string_view step) {
  // Read every time: tests set it in a child between fork and the call.
  const char* armed = std::getenv(kFailpointEnv);
  if (armed == nullptr) return;
  if (step == armed) {
    std::signal(SIGABRT, SIG_DFL);  // a test's crash, not a bug: no crash report
    std::abort();
  }
  // "<step>:sleep" stops there for good, holding what the step holds, until a test
  // kills the process (kill -9 at a moment it chooses, not only at an abort).
  if (std::string(step) + ":sleep" == armed) {
    for (;;) ::pause();
  }
}

}  // namespace cachemgr::engine
