#include "storage/rbd/rbd_error.h"

#include <cerrno>
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

void ThrowErrno(int negative_errno, std::string_view op, std::string_view what) {
  const int e = -negative_errno;
  std::string message = "rbd ";
  message.append(op).append(" ").append(what).append(": ");
  message.append(std::strerror(e)).append(" (errno ").append(std::to_string(e)).append(")");
  throw Error(ErrcFromErrno(negative_errno), message);
}

}  // namespace cachemgr::storage::rbd
