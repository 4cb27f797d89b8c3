#include "policy/clone_plan.h"

namespace cachemgr::policy {

CloneDecision PlanClone(int max_clone_depth, uint32_t entry_depth) {
  if (max_clone_depth <= 0) return {ClonePlan::kCopy, 0, entry_depth};
  if (static_cast<int64_t>(entry_depth) + 1 > max_clone_depth) {
    return {ClonePlan::kFlattenClone, 1, 0};
  }
  return {ClonePlan::kClone, entry_depth + 1, entry_depth};
}

}  // namespace cachemgr::policy
