// bench_engine: the cache engine through its public API (cachemgr/cache.h), one
// scenario per run. run.sh gives each run a fresh index and, for RBD, a fresh RBD
// namespace, so a "cold" image really is cold.
//
//   bench_engine hit      --count N                      CreateVolume on a cached entry
//                         [--source-check-interval S]    (default: the library's, 60 s;
//                         [--size-bytes B]               0 asks the source on every hit);
//                                                        B > the image's size: each hit
//                                                        also grows its volume to B
//   bench_engine burst    --count N --concurrency K      N volumes from one cached entry
//   bench_engine miss     --label L [--rss-label S]      one cold CreateVolume, in a child
//                                                        process whose peak RSS is read
//   bench_engine flight   --concurrency K                K concurrent CreateVolume, cold
//   bench_engine serial   --count K                      one miss, then K hits, in turn
//   bench_engine hosts    --hosts H --concurrency K      H processes, each a host of its
//                         --count N                      own (host_id, index, conversion
//                                                        dir) on the same pool, K threads
//                                                        each: N volumes in all from one
//                                                        cached entry (volumes/s)
// Common: --backend rbd|local --image ID --endpoint URL --index PATH --work DIR
//         rbd: --conf C --pool P [--namespace NS]; local: --root DIR
//         --scenario NAME (series scenario) --out FILE
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <thread>

#include "cachemgr/cache.h"
#include "common.h"

using namespace cachemgr;
using namespace cachemgr::bench;

namespace {

double Ms(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1000.0; }

Options MakeOptions(const Args& args) {
  Options o;
  o.index = args.Get("index");
  const std::string work = args.Get("work");
  o.conversion.dir = work + "/conversion";
  std::filesystem::create_directories(o.conversion.dir);
  o.source.type = SourceType::kGlance;
  o.source.glance.endpoint = args.Get("endpoint");
  o.source.glance.timeout_s = 60;
  // The warm-up miss stamps the entry's source check: at the default interval (60 s) a
  // run of a few seconds never asks the source again, at 0 every hit asks it.
  if (const auto interval = args.Get("source-check-interval", ""); !interval.empty()) {
    o.cache.source_check_interval_s = static_cast<uint32_t>(std::stoul(interval));
  }
  if (args.Get("backend", "rbd") == "rbd") {
    o.backend.type = BackendType::kRbd;
    o.backend.rbd.conf = args.Get("conf");
    o.backend.rbd.pool = args.Get("pool", "volumes");
    o.backend.rbd.namespace_ = args.Get("namespace", "");
    o.backend.rbd.queue_depth = static_cast<uint32_t>(args.GetInt("queue-depth", 16));
  } else {
    o.backend.type = BackendType::kLocal;
    o.backend.local.root = args.Get("root");
    // The baseline is qemu-img's qcow2 overlay: compare like with like.
    o.backend.local.clone_mode = CloneMode::kQcow2;
  }
  return o;
}

std::shared_ptr<spdlog::logger> MakeLogger(const Args& args) {
  // Engine logs go to a file: the terminal carries only the bench's own lines.
  auto path = args.Get("log", "");
  if (path.empty()) return nullptr;
  auto logger = spdlog::basic_logger_mt("bench-" + UniqueTag(), path);
  // BENCH_LOG_LEVEL=debug shows each step's timing (the RBD clone's own ms, ...).
  const char* level = std::getenv("BENCH_LOG_LEVEL");
  logger->set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
  return logger;
}

std::unique_ptr<Cache> OpenCache(const Args& args) {
  return Cache::Open(MakeOptions(args), MakeLogger(args));
}

CreateVolumeResult Make(Cache& cache, const std::string& image, const std::string& volume,
                        uint64_t size_bytes = 0) {
  CreateVolumeRequest req;
  req.image_id = image;
  req.volume = volume;
  req.size_bytes = size_bytes;
  return cache.CreateVolume(req);
}

void Expect(const CreateVolumeResult& r, Plan plan) {
  if (r.plan != plan) {
    throw std::runtime_error("volume " + r.volume + ": plan " + std::string(PlanName(r.plan)) +
                             ", expected " + std::string(PlanName(plan)));
  }
}

// Makes sure the image is cached (untimed) so the timed calls are hits.
void Warm(Cache& cache, const std::string& image, const std::string& prefix) {
  Make(cache, image, prefix + "-warm");
}

struct Burst {
  std::vector<double> latencies;
  double total_ms = 0;
  std::vector<CreateVolumeResult> results;
};

Burst RunBurst(Cache& cache, const std::string& image, const std::string& prefix, long count,
               long concurrency, uint64_t size_bytes = 0) {
  Burst b;
  b.latencies.resize(static_cast<size_t>(count));
  b.results.resize(static_cast<size_t>(count));
  std::atomic<long> next{0};
  std::mutex mu;
  std::string error;
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (long t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      for (long i = next++; i < count; i = next++) {
        auto t0 = Clock::now();
        try {
          b.results[static_cast<size_t>(i)] =
              Make(cache, image, prefix + "-" + std::to_string(i), size_bytes);
        } catch (const std::exception& e) {
          std::lock_guard lock(mu);
          if (error.empty()) error = e.what();
          return;
        }
        b.latencies[static_cast<size_t>(i)] = MsSince(t0);
      }
    });
  }
  for (auto& t : threads) t.join();
  b.total_ms = MsSince(start);
  if (!error.empty()) throw std::runtime_error(error);
  return b;
}

int Hit(const Args& args, Results& results) {
  auto cache = OpenCache(args);
  const std::string image = args.Get("image"), prefix = "hit-" + UniqueTag();
  Warm(*cache, image, prefix);
  const auto size_bytes = static_cast<uint64_t>(args.GetInt("size-bytes", 0));
  auto b = RunBurst(*cache, image, prefix, args.GetInt("count", 100), 1, size_bytes);
  for (const auto& r : b.results) {
    Expect(r, Plan::kClone);
    if (size_bytes && r.size_bytes != size_bytes) {
      throw std::runtime_error("volume " + r.volume + ": " + std::to_string(r.size_bytes) +
                               " bytes, asked for " + std::to_string(size_bytes));
    }
  }
  results.Add({args.Get("scenario", "hit"), args.Get("name", "engine"), "ms", b.latencies,
               {{"count", b.latencies.size()},
                {"source_check_interval_s",
                 args.GetInt("source-check-interval", Options{}.cache.source_check_interval_s)},
                {"size_bytes", size_bytes}}});
  return 0;
}

int BurstCmd(const Args& args, Results& results) {
  auto cache = OpenCache(args);
  const std::string image = args.Get("image"), prefix = "burst-" + UniqueTag();
  const long count = args.GetInt("count", 500), concurrency = args.GetInt("concurrency", 1);
  Warm(*cache, image, prefix);
  auto b = RunBurst(*cache, image, prefix, count, concurrency);
  for (const auto& r : b.results) Expect(r, Plan::kClone);
  Series s{args.Get("scenario", "burst"), "engine c" + std::to_string(concurrency), "ms",
           b.latencies, {}};
  s.extra = {{"count", count}, {"concurrency", concurrency}, {"total_ms", b.total_ms},
             {"volumes_per_s", static_cast<double>(count) * 1000.0 / b.total_ms}};
  results.Add(std::move(s));
  return 0;
}

int Miss(const Args& args, Results& results) {
  const std::string child_out = args.Get("out") + ".child";
  // The miss runs in a child so that its peak RSS (wait4's ru_maxrss) is the miss's
  // alone: the Ceph connection, the index, the download and the import window.
  auto child = ForkChild([&] {
    auto cache = OpenCache(args);
    auto r = Make(*cache, args.Get("image"), "miss-" + UniqueTag());
    Expect(r, Plan::kMiss);
    nlohmann::json j = {{"elapsed_ms", Ms(r.elapsed)}, {"fill_ms", Ms(r.fill)},
                        {"bytes", r.bytes_downloaded}};
    std::ofstream(child_out) << j.dump();
    return 0;
  });
  if (child.exit_code != 0) throw std::runtime_error("miss child failed");
  nlohmann::json j = nlohmann::json::parse(std::ifstream(child_out));
  std::filesystem::remove(child_out);
  const double rss_mib = static_cast<double>(child.max_rss_kib) / 1024.0;
  const std::string label = args.Get("label");
  Series s{"miss", "engine " + label, "ms", {j["elapsed_ms"].get<double>()}, {}};
  s.extra = {{"fill_ms", {j["fill_ms"].get<double>()}},
             {"bytes_downloaded", {j["bytes"].get<uint64_t>()}},
             {"rss_mib", {rss_mib}}};
  // A run made only for its memory figure (--miss-series 0) stays out of the miss table.
  if (args.GetInt("miss-series", 1) != 0) results.Add(std::move(s));
  const std::string rss_label = args.Get("rss-label", "");
  if (!rss_label.empty()) {
    const double qd = static_cast<double>(args.GetInt("queue-depth", 16));
    const double object_mib = 4;  // RBD's default object size (order 22)
    results.Add({"rss", "miss " + rss_label, "MiB", {rss_mib},
                 {{"queue_depth", qd}, {"object_mib", object_mib},
                  {"bound_mib", qd * object_mib + 100}, {"elapsed_ms", j["elapsed_ms"]}}});
  }
  return 0;
}

int Flight(const Args& args, Results& results) {
  auto cache = OpenCache(args);
  const long concurrency = args.GetInt("concurrency", 32);
  auto b = RunBurst(*cache, args.Get("image"), "flight-" + UniqueTag(), concurrency, concurrency);
  int misses = 0;
  for (const auto& r : b.results) misses += r.plan == Plan::kMiss;
  if (misses != 1) {
    throw std::runtime_error("single flight: " + std::to_string(misses) +
                             " of the concurrent requests filled the image, expected 1");
  }
  results.Add({"single_flight", std::to_string(concurrency) + " concurrent", "ms", {b.total_ms},
               {{"volume_ms", b.latencies}}});
  return 0;
}

int Serial(const Args& args, Results& results) {
  auto cache = OpenCache(args);
  const long count = args.GetInt("count", 32);
  const std::string image = args.Get("image"), prefix = "serial-" + UniqueTag();
  auto start = Clock::now();
  auto first = Make(*cache, image, prefix + "-miss");
  const double miss_ms = MsSince(start);
  Expect(first, Plan::kMiss);
  auto b = RunBurst(*cache, image, prefix, count, 1);
  for (const auto& r : b.results) Expect(r, Plan::kClone);
  const double total = MsSince(start);
  results.Add({"single_flight", "miss + " + std::to_string(count) + " clones", "ms", {total},
               {{"miss_ms", {miss_ms}}, {"clones_ms", {b.total_ms}}}});
  return 0;
}

double SteadyMs(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(t.time_since_epoch()).count();
}

// Hosts sharing one pool: `hosts` processes, each a host of its own (host_id, index and
// the lock folder beside it, conversion dir) with its own cluster connection, each
// making its share of `count` volumes from one cached entry on `concurrency` threads.
// Every host first connects and warms (the first fills the entry, the others adopt it),
// then all start at once; the window runs from the first start to the last volume (the
// steady clock is the machine's, so the hosts' times compare).
int Hosts(const Args& args, Results& results) {
  const long hosts = args.GetInt("hosts", 3), concurrency = args.GetInt("concurrency", 8);
  const long count = args.GetInt("count", 240);
  const std::string image = args.Get("image"), out = args.Get("out"), tag = UniqueTag();
  const std::filesystem::path index = args.Get("index");
  struct Child {
    pid_t pid;
    int ready;  // the host writes a byte once warm
    int go;     // the parent writes a byte to start them all (EOF: give up)
    std::string file;
  };
  std::vector<Child> children;
  for (long h = 1; h <= hosts; ++h) {
    int ready[2], go[2];
    if (pipe(ready) != 0 || pipe(go) != 0) throw std::runtime_error("pipe failed");
    const long share = count / hosts + (h <= count % hosts ? 1 : 0);
    const std::string file = out + ".host" + std::to_string(h);
    std::cout.flush();
    std::cerr.flush();
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      close(ready[0]);
      close(go[1]);
      for (const auto& c : children) {
        close(c.ready);
        close(c.go);
      }
      int code = 1;
      try {
        const std::string host = "bench-h" + std::to_string(h);
        Options o = MakeOptions(args);
        o.host_id = host;
        const auto dir = index.parent_path() / (index.stem().string() + "-" + host);
        std::filesystem::create_directories(dir);
        o.index = (dir / index.filename()).string();
        o.conversion.dir = args.Get("work") + "/" + host + "/conversion";
        std::filesystem::create_directories(o.conversion.dir);
        auto cache = Cache::Open(o, MakeLogger(args));
        const std::string prefix = "hosts-" + tag + "-h" + std::to_string(h);
        Warm(*cache, image, prefix);
        char c = 'r';
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) {
          throw std::runtime_error("no start signal");
        }
        const double start_ms = SteadyMs(Clock::now());
        auto b = RunBurst(*cache, image, prefix, share, concurrency);
        const double end_ms = SteadyMs(Clock::now());
        for (const auto& r : b.results) Expect(r, Plan::kClone);
        nlohmann::json j = {{"start_ms", start_ms}, {"end_ms", end_ms}, {"volume_ms", b.latencies}};
        std::ofstream(file) << j.dump();
        code = 0;
      } catch (const std::exception& e) {
        std::cerr << "bench_engine hosts: host " << h << ": " << e.what() << "\n";
      }
      std::cout.flush();
      std::cerr.flush();
      _exit(code);
    }
    close(ready[1]);
    close(go[0]);
    children.push_back({pid, ready[0], go[1], file});
  }
  bool all_ready = true;
  for (const auto& c : children) {
    char ch = 0;
    all_ready = all_ready && read(c.ready, &ch, 1) == 1;
  }
  if (all_ready) {
    for (const auto& c : children) {
      const char ch = 'g';
      all_ready = all_ready && write(c.go, &ch, 1) == 1;
    }
  }
  for (const auto& c : children) {
    close(c.ready);
    close(c.go);
  }
  int failed = 0;
  for (const auto& c : children) {
    int status = 0;
    if (waitpid(c.pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failed;
    }
  }
  if (!all_ready || failed > 0) {
    throw std::runtime_error(std::to_string(failed) + " of " + std::to_string(hosts) +
                             " hosts failed");
  }
  double first = std::numeric_limits<double>::max(), last = 0;
  std::vector<double> latencies;
  for (const auto& c : children) {
    auto j = nlohmann::json::parse(std::ifstream(c.file));
    std::filesystem::remove(c.file);
    first = std::min(first, j["start_ms"].get<double>());
    last = std::max(last, j["end_ms"].get<double>());
    for (double ms : j["volume_ms"]) latencies.push_back(ms);
  }
  const double window = last - first;
  Series s{args.Get("scenario", "hosts"),
           "engine " + std::to_string(hosts) + "x" + std::to_string(concurrency), "volumes/s",
           {static_cast<double>(count) * 1000.0 / window}, {}};
  s.extra = {{"count", count}, {"hosts", hosts}, {"concurrency", concurrency},
             {"total_ms", {window}}, {"volume_ms", latencies}};
  results.Add(std::move(s));
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  Args args(argc, argv);
  if (args.positional().empty()) throw std::runtime_error("usage: bench_engine COMMAND --opts");
  const std::string cmd = args.positional()[0];
  Results results;
  int rc = 0;
  if (cmd == "hit") {
    rc = Hit(args, results);
  } else if (cmd == "burst") {
    rc = BurstCmd(args, results);
  } else if (cmd == "miss") {
    rc = Miss(args, results);
  } else if (cmd == "flight") {
    rc = Flight(args, results);
  } else if (cmd == "serial") {
    rc = Serial(args, results);
  } else if (cmd == "hosts") {
    rc = Hosts(args, results);
  } else {
    throw std::runtime_error("unknown command " + cmd);
  }
  results.Write(args.Get("out", "-"));
  return rc;
} catch (const std::exception& e) {
  std::cerr << "bench_engine: " << e.what() << "\n";
  return 1;
}
