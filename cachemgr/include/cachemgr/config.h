// cachemgr/config.h: the YAML config, parsed and validated in one place.
//
// Errors are Error{Errc::kConfig} naming the key path and the rule
// ("cache.max_size_gb: must be >= 0"); unknown keys are refused with the nearest known
// key suggested. Cinder's option names are accepted where they mean the same thing.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "cachemgr/export.h"
#include "cachemgr/options.h"

namespace cachemgr {

// Parses YAML text. `origin` names the text in error messages (a path, "<string>").
CACHEMGR_EXPORT Options ParseConfig(std::string_view yaml_text,
                                    std::string_view origin = "<string>");

// Reads and parses a file; a missing or unreadable file, one that is not a regular file
// (a FIFO, a device, a folder) or one over 1 MiB is a kConfig error naming it.
CACHEMGR_EXPORT Options LoadConfigFile(const std::filesystem::path& path);

// The config path to use when none is given: $CACHEMGR_CONFIG, else
// /etc/cachemgr/cachemgr.yaml.
CACHEMGR_EXPORT std::filesystem::path DefaultConfigPath();

// The config file to load: `explicit_path` (--config) when not empty, else
// $CACHEMGR_CONFIG, else /etc/cachemgr/cachemgr.yaml. When that file does not exist,
// throws kConfig naming every place it looked.
CACHEMGR_EXPORT std::filesystem::path FindConfigFile(const std::string& explicit_path);

// Checks cross-field rules on options built in code (the parser calls it too).
CACHEMGR_EXPORT void ValidateOptions(const Options& options);

}  // namespace cachemgr
