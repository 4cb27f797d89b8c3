// expect: missing engine/cache_impl.h
// A storage source that reaches up into the engine: storage sees only the base.
#include "storage/backend.h"
#include "engine/cache_impl.h"
