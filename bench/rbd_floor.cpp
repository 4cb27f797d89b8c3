// bench_rbd_floor: the raw librbd clone floor. Clones one protected snapshot `count`
// times with rbd_clone3 (clone v2, the engine's feature set), `concurrency` threads at
// once on one cluster connection, and records the latency of each clone and the
// overall rate. Nothing but the librbd call is timed: this is the cost no cache
// engine can go below.
//
//   bench_rbd_floor --conf C --pool P --parent IMG --snap S --count N
//                   [--concurrency K] [--scenario hit] [--name floor] [--rate 1]
//                   [--resize-bytes B] --out FILE
// --resize-bytes B: each clone is then opened, grown to B bytes (rbd_resize) and closed,
// timed with the clone (what a volume larger than its image costs at the floor).
// --rate 1: the series is the run's volumes/s (one sample; runs of the same series add
// up to several), the clone latencies go to extra.volume_ms.
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <atomic>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>

#include "common.h"

using namespace cachemgr::bench;

namespace {

// layering, exclusive-lock, object-map, fast-diff, deep-flatten: the engine's defaults
// (RbdBackendOptions::features) and Ceph's rbd_default_features.
constexpr uint64_t kFeatures = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK |
                               RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF |
                               RBD_FEATURE_DEEP_FLATTEN;

void Check(int r, const std::string& what) {
  if (r < 0) throw std::runtime_error(what + ": " + std::strerror(-r));
}

}  // namespace

int main(int argc, char** argv) try {
  Args args(argc, argv);
  const std::string conf = args.Get("conf");
  const std::string pool = args.Get("pool", "volumes");
  const std::string parent = args.Get("parent");
  const std::string snap = args.Get("snap", "snap");
  const long count = args.GetInt("count", 100);
  const long concurrency = args.GetInt("concurrency", 1);
  const std::string prefix = args.Get("prefix", "floor-" + UniqueTag());
  const auto resize_bytes = static_cast<uint64_t>(args.GetInt("resize-bytes", 0));

  rados_t cluster = nullptr;
  Check(rados_create(&cluster, "admin"), "rados_create");
  Check(rados_conf_read_file(cluster, conf.c_str()), "read " + conf);
  Check(rados_connect(cluster), "rados_connect");
  rados_ioctx_t io = nullptr;
  Check(rados_ioctx_create(cluster, pool.c_str(), &io), "open pool " + pool);

  rbd_image_options_t opts;
  rbd_image_options_create(&opts);
  Check(rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, kFeatures), "features");
  Check(rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_CLONE_FORMAT, 2), "clone format");

  std::vector<double> latencies(static_cast<size_t>(count));
  std::atomic<long> next{0};
  std::mutex error_mu;
  std::string error;
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (long t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      for (long i = next++; i < count; i = next++) {
        std::string name = prefix + "-" + std::to_string(i);
        auto t0 = Clock::now();
        int r = rbd_clone3(io, parent.c_str(), snap.c_str(), io, name.c_str(), opts);
        std::string op = "rbd_clone3";
        if (r >= 0 && resize_bytes) {
          rbd_image_t image = nullptr;
          r = rbd_open(io, name.c_str(), &image, nullptr);
          op = "rbd_open";
          if (r >= 0) {
            r = rbd_resize(image, resize_bytes);
            op = "rbd_resize";
            const int c = rbd_close(image);
            if (r >= 0 && c < 0) {
              r = c;
              op = "rbd_close";
            }
          }
        }
        latencies[static_cast<size_t>(i)] = MsSince(t0);
        if (r < 0) {
          std::lock_guard lock(error_mu);
          error = op + " " + name + ": " + std::strerror(-r);
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  double total_ms = MsSince(start);
  rbd_image_options_destroy(opts);
  rados_ioctx_destroy(io);
  rados_shutdown(cluster);
  if (!error.empty()) throw std::runtime_error(error);

  Results results;
  const double per_s = static_cast<double>(count) * 1000.0 / total_ms;
  Series s{args.Get("scenario", "hit"), args.Get("name", "floor"), "ms", latencies, {}};
  s.extra["concurrency"] = concurrency;
  s.extra["count"] = count;
  s.extra["resize_bytes"] = resize_bytes;
  s.extra["total_ms"] = total_ms;
  s.extra["volumes_per_s"] = per_s;
  if (args.GetInt("rate", 0) != 0) {
    s.unit = "volumes/s";
    s.samples = {per_s};
    s.extra["total_ms"] = std::vector<double>{total_ms};
    s.extra["volume_ms"] = latencies;
    s.extra.erase("volumes_per_s");
  }
  results.Add(std::move(s));
  results.Write(args.Get("out", "-"));
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_rbd_floor: " << e.what() << "\n";
  return 1;
}
