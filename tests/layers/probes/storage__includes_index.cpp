// expect: missing index/index.h
// Storage and the index are both below the engine; neither sees the other.
#include "storage/backend.h"
#include "index/index.h"
