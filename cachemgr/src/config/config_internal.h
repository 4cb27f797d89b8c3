// config/config_internal.h: what the config's files share. config.cpp: the entry points
// and where the file is looked for; config_parse.cpp: the YAML into Options;
// config_validate.cpp: the rules on values (ValidateOptions).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cachemgr/options.h"

namespace cachemgr::config {

// Parses `text` (named `origin` in errors) into options and validates them, errors
// naming the line of the key. Relative paths are resolved against `base_dir`, or left as
// written when it is empty.
Options ParseYaml(std::string_view text, const std::string& origin,
                  const std::filesystem::path& base_dir);

// "a, b, c": the known values an error lists.
inline std::string JoinList(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

}  // namespace cachemgr::config
