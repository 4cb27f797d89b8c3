// engine_child: a separate process for the multi-process and crash tests.
//
//   engine_child <local|rbd> <dir> <ns> <max_count> OP...
//   OP: create:IMAGE:VOLUME | delete:VOLUME | flight:IMAGE:THREADS:PREFIX | pass
// Exit 0 when every op succeeded; errors go to stderr. Failpoints come from
// $CACHEMGR_FAILPOINT, so a crash test runs this and expects SIGABRT.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "cachemgr/cache.h"
#include "engine_env.h"
#include "support/name_thread_on_terminate.h"

namespace {
std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    auto colon = s.find(':', start);
    out.push_back(s.substr(start, colon - start));
    if (colon == std::string::npos) return out;
    start = colon + 1;
  }
}
}  // namespace

int main(int argc, char** argv) {
  cachemgr::test::NameThreadOnTerminate();  // the librbd abort, told apart in the test log
  if (argc < 5) {
    std::fprintf(stderr, "usage: engine_child <local|rbd> <dir> <ns> <max_count> OP...\n");
    return 2;
  }
  try {
    std::string ns = argv[3] == std::string("-") ? "" : argv[3];
    auto options = cachemgr::test::EngineOptions(argv[2], std::string(argv[1]) == "rbd", ns);
    options.cache.max_count = std::stoull(argv[4]);
    auto cache = cachemgr::Cache::Open(options);
    for (int i = 5; i < argc; ++i) {
      auto op = Split(argv[i]);
      if (op[0] == "create") {
        cache->CreateVolume({.image_id = op[1], .volume = op[2]});
      } else if (op[0] == "delete") {
        cache->DeleteVolume(op[1]);
      } else if (op[0] == "pass") {
        cache->RunEvictionPass({});
      } else if (op[0] == "flight") {
        int threads = std::stoi(op[2]);
        std::vector<std::thread> pool;
        std::vector<std::string> errors(threads);
        try {
          for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
              // Nothing may leave a thread body: an escaping exception ends the process.
              try {
                cache->CreateVolume({.image_id = op[1], .volume = op[3] + "-" + std::to_string(t)});
              } catch (const std::exception& e) {
                errors[t] = e.what();
              } catch (...) {
                errors[t] = "an exception that is not a std::exception";
              }
            });
          }
        } catch (const std::exception& e) {
          // A thread that could not start: the started ones still finish before the cache
          // they use is closed (a joinable thread destroyed would end the process).
          for (auto& th : pool) th.join();
          std::fprintf(stderr, "flight error: cannot start thread %zu: %s\n", pool.size(),
                       e.what());
          return 1;
        }
        for (auto& th : pool) th.join();
        for (const auto& e : errors) {
          if (!e.empty()) {
            std::fprintf(stderr, "flight error: %s\n", e.c_str());
            return 1;
          }
        }
      } else {
        std::fprintf(stderr, "unknown op %s\n", argv[i]);
        return 2;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_child: %s\n", e.what());
    return 1;
  }
  return 0;
}
