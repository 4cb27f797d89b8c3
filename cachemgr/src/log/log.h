// log/log.h: how the library gets a logger it can always call.
//
// The library never installs sinks and never writes to stdout: every component logs
// through the logger the embedding program gave Cache::Open, with key=value fields
// (image=, volume=, ms=). A null logger becomes spdlog's logger named "cachemgr" if the
// program registered one, else a logger that drops everything.
#pragma once

#include <memory>

#include <spdlog/spdlog.h>

namespace cachemgr::log {

// `logger` if set; else the registered "cachemgr" logger; else a null-sink logger.
std::shared_ptr<spdlog::logger> OrNull(std::shared_ptr<spdlog::logger> logger);

}  // namespace cachemgr::log
