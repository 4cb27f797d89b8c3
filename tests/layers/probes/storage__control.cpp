// expect: compiles
// What a storage source may include: its own folder, the base (util/, log/) and the
// public vocabulary.
#include "cachemgr/error.h"
#include "cachemgr/options.h"
#include "log/log.h"
#include "storage/backend.h"
#include "storage/local/local_backend.h"
#include "util/hash.h"
#include "util/process.h"

static_assert(sizeof(cachemgr::Error) > 0);
