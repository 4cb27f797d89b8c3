// Uses only the installed public headers: parses a config, makes a logger, maps an error.
#include <cachemgr/cache.h>
#include <cachemgr/config.h>
#include <cachemgr/error.h>
#include <cachemgr/logging.h>

#include <spdlog/spdlog.h>

#include <iostream>

int main() {
  const cachemgr::Options options = cachemgr::ParseConfig(
      "cache:\n  image_volume_cache_max_count: 7\nlog:\n  level: warn\n", "consumer");
  auto logger = cachemgr::MakeLogger(options.log);
  logger->info("not shown at level warn");
  std::cout << "max_count=" << options.cache.max_count << "\n";
  try {
    cachemgr::ParseConfig("cache: {max_sise_gb: 1}", "consumer");
  } catch (const cachemgr::Error& e) {
    std::cout << "error=" << cachemgr::ErrcName(e.code()) << ": " << e.what() << "\n";
  }
  return 0;
}
