// expect: missing engine/naming.h
// config/ parses options for the engine; it does not see it.
#include "cachemgr/config.h"
#include "engine/naming.h"
