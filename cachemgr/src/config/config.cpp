// The config's entry points: a YAML text or file into validated Options
// (config_parse.cpp, config_validate.cpp), and where the file is looked for.
#include "cachemgr/config.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "config/config_file.h"
#include "config/config_internal.h"

namespace cachemgr {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDefaultConfigPath = "/etc/cachemgr/cachemgr.yaml";
constexpr const char* kConfigEnv = "CACHEMGR_CONFIG";

}  // namespace

Options ParseConfig(std::string_view yaml_text, std::string_view origin) {
  return config::ParseYaml(yaml_text, std::string(origin), {});
}

Options LoadConfigFile(const fs::path& path) {
  const std::string text = config::ReadConfigText(path);
  std::error_code ec;
  const fs::path base = fs::absolute(path, ec).parent_path();
  return config::ParseYaml(text, path.string(), base);
}

fs::path DefaultConfigPath() {
  const char* env = std::getenv(kConfigEnv);
  if (env != nullptr && *env != '\0') return fs::path(env);
  return fs::path(kDefaultConfigPath);
}

}  // namespace cachemgr
