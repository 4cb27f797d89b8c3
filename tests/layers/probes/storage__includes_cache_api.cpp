// expect: missing cachemgr/cache.h
// The public Cache is the engine's: a storage source may use only error.h, options.h and
// logging.h of the public headers.
#include "storage/backend.h"
#include "cachemgr/cache.h"
