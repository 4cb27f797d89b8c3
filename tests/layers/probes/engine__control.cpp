// expect: compiles
// The engine sees every layer below it and the whole public API.
#include "cachemgr/cache.h"
#include "cachemgr/config.h"
#include "engine/cache_impl.h"
#include "fetch/fetch.h"
#include "index/index.h"
#include "policy/eviction.h"
#include "source/source.h"
#include "storage/factory.h"
#include "util/hash.h"
