// engine/sweep_looks.h: what the pass keeps between passes of the sweep's clean folders
// (storage::Backend::SweepTemporaries, `looks`), in the index's pass state.
//
// A folder found clean is passed over by the next sweeps while its stamp stays the same,
// for at most the time a look is trusted (kLookMaxAge, as the reconcile's look): a stamp
// that missed a change (a shared root's clock behind this host's, an NFS client's cached
// attributes) is outlived by the next full listing. A folder passed over keeps the time
// its stamp was recorded at, so passing it over never renews the trust in it; a listing
// that finds it clean again does.
#pragma once

#include <cstdint>
#include <string>

#include "storage/backend.h"

namespace cachemgr::engine {

// How long a recorded look (the reconcile's, the gc's, the sweep's) is trusted.
inline constexpr int64_t kLookMaxAge = int64_t{15} * 60;

// The stamps of `stored` (as LooksToStore wrote it) recorded less than `max_age` before
// `now`; none from a value that does not parse (the sweep lists everything).
storage::SweepLooks LooksToTrust(const std::string& stored, int64_t now, int64_t max_age);

// The value to store after a sweep that returned `found`: each stamp with the time it
// was recorded, kept from `stored` while the same stamp is there and still trusted (the
// folder was passed over), else `now` (the folder was listed and found clean).
std::string LooksToStore(const std::string& stored, const storage::SweepLooks& found, int64_t now,
                         int64_t max_age);

}  // namespace cachemgr::engine
