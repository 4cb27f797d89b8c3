// expect: missing util/process.h
// Not even the base: a policy that ran processes would not be pure.
#include "policy/clone_plan.h"
#include "util/process.h"
