// expect: missing fetch/fetch.h
// fetch/ uses the sources, not the other way round.
#include "source/source.h"
#include "fetch/fetch.h"
