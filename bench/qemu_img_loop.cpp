// bench_qemu_img: Nova's per-volume step for the local image cache, as the baseline of
// the local backend: `qemu-img create -f qcow2 -F raw -b BASE DISK` run once per
// volume (`concurrency` at a time), each run timed from spawn to exit.
//
//   bench_qemu_img --base FILE --dir DIR --count N [--concurrency K]
//                  [--scenario local_hit] [--name qemu-img] --out FILE
#include <atomic>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "common.h"

using namespace cachemgr::bench;

int main(int argc, char** argv) try {
  Args args(argc, argv);
  const std::string base = std::filesystem::absolute(args.Get("base")).string();
  const std::filesystem::path dir = args.Get("dir");
  const long count = args.GetInt("count", 100);
  const long concurrency = args.GetInt("concurrency", 1);
  std::filesystem::create_directories(dir);
  const std::string prefix = "qemu-" + UniqueTag();

  std::vector<double> latencies(static_cast<size_t>(count));
  std::atomic<long> next{0};
  std::mutex mu;
  std::string error;
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (long t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      for (long i = next++; i < count; i = next++) {
        auto disk = (dir / (prefix + "-" + std::to_string(i) + ".qcow2")).string();
        auto r = RunChild({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base,
                           disk},
                          true);
        latencies[static_cast<size_t>(i)] = r.wall_ms;
        if (r.exit_code != 0) {
          std::lock_guard lock(mu);
          error = "qemu-img create " + disk + " exited " + std::to_string(r.exit_code);
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double total_ms = MsSince(start);
  if (!error.empty()) throw std::runtime_error(error);

  Results results;
  std::string name = args.Get("name", "qemu-img");
  Series s{args.Get("scenario", "local_hit"), name, "ms", latencies, {}};
  s.extra = {{"count", count}, {"concurrency", concurrency}, {"total_ms", total_ms},
             {"volumes_per_s", static_cast<double>(count) * 1000.0 / total_ms}};
  results.Add(std::move(s));
  results.Write(args.Get("out", "-"));
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_qemu_img: " << e.what() << "\n";
  return 1;
}
