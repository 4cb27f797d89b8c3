#include "storage/rbd/rbd_error.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

namespace cachemgr::storage::rbd {

Errc ErrcFromErrno(int negative_errno) {
  switch (-negative_errno) {
    case ENOENT:
      return Errc::kNotFound;
    case EEXIST:
      return Errc::kAlreadyExists;
    case EBUSY:
      return Errc::kBusy;
    case ETIMEDOUT:
      return Errc::kTimeout;
    case EACCES:
    case EPERM:
      return Errc::kUnauthorized;
    default:
      return Errc::kBackend;
  }
}

namespace {
using Clock = std::chrono::steady_clock;
constexpr auto kTimedOutWindow = std::chrono::minutes(1);
// When an op last timed out (Clock ticks; 0: never).
std::atomic<Clock::rep> last_op_timeout{0};
}  // namespace

bool TimedOutRecently() {
  const Clock::rep at = last_op_timeout.load(std::memory_order_relaxed);
  return at != 0 && Clock::now() - Clock::time_point(Clock::duration(at)) < kTimedOutWindow;
}

void ThrowErrno(int negative_errno, std::string_view op, std::string_view what) {
  const int e = -negative_errno;
  if (e == ETIMEDOUT) {
    last_op_timeout.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
  std::string message = "rbd ";
  message.append(op).append(" ").append(what).append(": ");
  message.append(std::strerror(e)).append(" (errno ").append(std::to_string(e)).append(")");
  throw Error(ErrcFromErrno(negative_errno), message);
}

}  // namespace cachemgr::storage::rbd
