// expect: compiles
// What a policy source may include: its own folder.
#include "policy/clone_plan.h"
#include "policy/eviction.h"
#include "policy/staleness.h"
