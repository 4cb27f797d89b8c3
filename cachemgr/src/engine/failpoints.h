// engine/failpoints.h: named steps at which the process can be made to crash.
//
// CACHEMGR_FAILPOINT=<name> makes the process std::abort() (no cleanup, no destructors)
// when it reaches that step, so tests can crash a fill or an eviction at every step and
// check that the next gc pass leaves nothing half-made. Every name is listed here so
// tests iterate over all of them.
#pragma once

#include <array>
#include <string_view>

namespace cachemgr::engine {

// Steps of the miss path (fill of a cache entry), in order.
inline constexpr std::array<std::string_view, 8> kFillFailpoints = {
    "after_insert_row", "after_fetch",  "after_metadata", "after_snapshot",
    "after_protect",    "after_rename", "before_ready",   "after_ready",
};

// Steps of evicting one entry. after_trash is reached only when the entry still has
// clones (deferred delete); the others only when it has none.
inline constexpr std::array<std::string_view, 6> kEvictFailpoints = {
    "after_mark_evicting", "after_unprotect", "after_remove_snapshot",
    "after_remove_image",  "before_delete_row", "after_trash",
};

// Steps of making a volume (create), in order: the name claimed in the index, the
// volume cloned or copied under its staging name, marked and grown, in place.
inline constexpr std::array<std::string_view, 4> kCreateFailpoints = {
    "volume_after_claim", "volume_after_clone", "volume_before_rename", "volume_after_rename",
};

// The miss path with its image locks held and nothing recorded yet (no row, no object).
inline constexpr const char* kFillLockedFailpoint = "after_lock";

// The eviction pass holding the pool's pass lock, before it does anything.
inline constexpr const char* kPassLockedFailpoint = "pass_locked";

// The pass's gc of unfinished creates, right after it listed the volume rows.
inline constexpr const char* kVolumesListedFailpoint = "gc_volumes_listed";

inline constexpr const char* kFailpointEnv = "CACHEMGR_FAILPOINT";

// Aborts the process if $CACHEMGR_FAILPOINT names `step`; stops it there (until it is
// killed) if it says "<step>:sleep"; holds it there until a file exists if it says
// "<step>:wait:<path>".
void Failpoint(std::string_view step);

}  // namespace cachemgr::engine
