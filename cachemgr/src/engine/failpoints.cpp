#include "engine/failpoints.h"

#include <fcntl.h>
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
  // "<step>:wait:<path>" holds there until <path> exists, then goes on: a test orders two
  // processes' steps (one finishes while the other is held between two of its own).
  const std::string wait = std::string(step) + ":wait:";
  // It makes "<path>.held" first, so the test knows the step was reached.
  if (std::string_view(armed).starts_with(wait)) {
    const std::string path = std::string(armed).substr(wait.size());
    const int held = ::open((path + ".held").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (held >= 0) ::close(held);
    while (::access(path.c_str(), F_OK) != 0) ::usleep(10000);
  }
}

}  // namespace cachemgr::engine
