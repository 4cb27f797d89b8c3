// cli/stats_what_if.h: `stats --what-if` printed, as a table or JSON.
#pragma once

#include <string>

#include "cachemgr/cache.h"

namespace cachemgr::cli {

std::string WhatIfTable(const WhatIfReport& r);
std::string WhatIfJson(const WhatIfReport& r);

}  // namespace cachemgr::cli
