// expect: missing storage/backend.h
// policy/ is pure (plain structs in, a plan out): it sees no other folder.
#include "policy/eviction.h"
#include "storage/backend.h"
