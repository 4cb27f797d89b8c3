#include "policy/staleness.h"

namespace cachemgr::policy {

namespace {
bool Differs(const std::string& a, const std::string& b) {
  return !a.empty() && !b.empty() && a != b;
}
}  // namespace

Staleness CheckStaleness(const ImageVersion& cached, const ImageVersion& source,
                         bool stale_on_updated_at) {
  if (Differs(cached.checksum, source.checksum) || Differs(cached.os_hash, source.os_hash)) {
    return Staleness::kChecksumChanged;
  }
  if (stale_on_updated_at && Differs(cached.updated_at, source.updated_at)) {
    return Staleness::kUpdatedAtChanged;
  }
  return Staleness::kFresh;
}

}  // namespace cachemgr::policy
