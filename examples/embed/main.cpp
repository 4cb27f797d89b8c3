// embed: the smallest program that embeds libcachemgr.
//
//   embed <config.yaml> <image-id> [count=1] [volume-prefix=embed] [size-bytes=0]
//         [interval-ms=0]
//
// Opens the cache from a YAML config with a logger of its own (stderr), makes `count`
// volumes from one image, `interval-ms` apart, and prints how each one was made and how
// long it took. One cache object serves them all, as in a long-running service.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cachemgr/cache.h"
#include "cachemgr/config.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s <config.yaml> <image-id> [count] [prefix] [size-bytes] "
                 "[interval-ms]\n",
                 argv[0]);
    return 2;
  }
  const std::string image_id = argv[2];
  const int count = argc > 3 ? std::stoi(argv[3]) : 1;
  const std::string prefix = argc > 4 ? argv[4] : "embed";
  const uint64_t size = argc > 5 ? std::stoull(argv[5]) : 0;
  const auto interval = std::chrono::milliseconds(argc > 6 ? std::stoull(argv[6]) : 0);

  // The library never installs sinks: the program decides where messages go.
  auto logger = spdlog::stderr_color_mt("embed");
  try {
    auto options = cachemgr::LoadConfigFile(argv[1]);
    logger->set_level(spdlog::level::from_str(options.log.level));
    auto cache = cachemgr::Cache::Open(options, logger);
    std::printf("%-24s %-14s %5s %12s %10s %10s %10s\n", "volume", "plan", "depth", "bytes",
                "total_ms", "fill_ms", "wait_ms");
    for (int i = 0; i < count; ++i) {
      if (i > 0) std::this_thread::sleep_for(interval);
      cachemgr::CreateVolumeRequest request;
      request.image_id = image_id;
      request.volume = prefix + "-" + std::to_string(i);
      request.size_bytes = size;
      auto made = cache->CreateVolume(request);
      std::printf("%-24s %-14s %5u %12llu %10.1f %10.1f %10.1f\n", made.volume.c_str(),
                  std::string(cachemgr::PlanName(made.plan)).c_str(), made.depth,
                  static_cast<unsigned long long>(made.size_bytes), made.elapsed.count() / 1000.0,
                  made.fill.count() / 1000.0, made.wait.count() / 1000.0);
    }
  } catch (const cachemgr::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", std::string(cachemgr::ErrcName(e.code())).c_str(),
                 e.what());
    return 1;
  }
  return 0;
}
