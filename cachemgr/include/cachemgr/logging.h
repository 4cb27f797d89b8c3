// cachemgr/logging.h: a logger for programs that embed the library (and the CLI).
//
// The library itself never installs sinks: it logs to the spdlog logger it is given.
// A program that has no logging of its own can make one here from the config's log:
// section, with the same level names and rotation the config file documents.
//
//   auto logger = cachemgr::MakeLogger(options.log);
//   auto cache = cachemgr::Cache::Open(options, logger);
#pragma once

#include <spdlog/common.h>

#include <memory>
#include <string_view>

#include "cachemgr/export.h"
#include "cachemgr/options.h"

namespace spdlog {
class logger;
}

namespace cachemgr {

// "trace" | "debug" | "info" | "warn" | "error" | "critical" | "off" (and spdlog's
// "warning", "err"); anything else is Error{kConfig} naming log.level.
CACHEMGR_EXPORT spdlog::level::level_enum ParseLogLevel(std::string_view level);

// A logger named "cachemgr" at options.level, writing to stderr (when to_stderr; colours
// only on a terminal) and, when options.file is set, to a rotating file
// (options.max_file_mb per file, options.max_files kept). The logger is not registered
// in spdlog's global registry. Error{kConfig} naming log.file if the file cannot be
// opened.
CACHEMGR_EXPORT std::shared_ptr<spdlog::logger> MakeLogger(const LogOptions& options,
                                                           bool to_stderr = true);

}  // namespace cachemgr
