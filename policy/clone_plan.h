// policy/clone_plan.h: how a volume is made from a cache entry, by clone depth.
//
// Cinder's rbd_max_clone_depth: long parent chains make every read of a clone walk
// them, so past the limit the entry is flattened first (its chain collapses to 0) and
// the volume is cloned from it; max_clone_depth <= 0 asks for independent copies.
#pragma once

#include <cstdint>

namespace cachemgr::policy {

enum class ClonePlan { kClone, kCopy, kFlattenClone };

struct CloneDecision {
  ClonePlan plan = ClonePlan::kClone;
  uint32_t volume_depth = 0;  // parent-chain length of the volume this plan makes
  uint32_t entry_depth = 0;   // the entry's depth after the plan ran (0 once flattened)
};

// `entry_depth`: the entry's recorded parent-chain length (0: independent image).
CloneDecision PlanClone(int max_clone_depth, uint32_t entry_depth);

}  // namespace cachemgr::policy
