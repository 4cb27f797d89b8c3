#include "cachemgr/error.h"

namespace cachemgr {

std::string_view ErrcName(Errc code) noexcept {
  switch (code) {
    case Errc::kInvalidArgument: return "invalid_argument";
    case Errc::kConfig: return "config";
    case Errc::kNotFound: return "not_found";
    case Errc::kAlreadyExists: return "already_exists";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kRefused: return "refused";
    case Errc::kBusy: return "busy";
    case Errc::kBackend: return "backend";
    case Errc::kSource: return "source";
    case Errc::kUnauthorized: return "unauthorized";
    case Errc::kTimeout: return "timeout";
    case Errc::kIo: return "io";
    case Errc::kInternal: return "internal";
  }
  return "unknown";
}

}  // namespace cachemgr
