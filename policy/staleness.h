// policy/staleness.h: whether a cached entry still matches its source image.
//
// A changed checksum (md5 or os_hash) always means new bytes. Glance bumps updated_at
// on metadata edits too, so a changed updated_at alone replaces the entry only when the
// operator asks for it (cache.stale_on_updated_at).
#pragma once

#include <string>

namespace cachemgr::policy {

struct ImageVersion {
  std::string checksum;    // md5 hex; empty when unknown
  std::string os_hash;     // "algo:hex"; empty when unknown
  std::string updated_at;  // as the source gives it; empty when unknown
};

enum class Staleness { kFresh, kChecksumChanged, kUpdatedAtChanged };

// Only fields known on both sides are compared.
Staleness CheckStaleness(const ImageVersion& cached, const ImageVersion& source,
                         bool stale_on_updated_at);

}  // namespace cachemgr::policy
