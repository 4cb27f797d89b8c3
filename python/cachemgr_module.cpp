// python/cachemgr_module.cpp: the `cachemgr` Python module, a thin binding of the embedded
// API (cachemgr/cache.h).
//
//   import cachemgr
//   cache = cachemgr.Cache.open("/etc/cachemgr/cachemgr.yaml")
//   made = cache.create_volume("IMAGE_ID", "vm-1-disk", size=0)
//   made.plan  # "miss", "clone", ...
//
// Rules the binding keeps:
//   - every call into the engine runs with the GIL released, so several Python threads
//     can use one Cache at once (the engine is thread-safe and single-flight);
//   - a progress callback re-acquires the GIL; an exception it raises aborts the call
//     (the engine cleans up as on any failure) and is re-raised to the caller as is;
//   - cachemgr::Error becomes cachemgr.Error (or its subclass for the code) with .code,
//     the stable name of the code ("not_found"), and .exit_code, the tool's exit code;
//   - a cache call from inside a progress callback is refused (it could wait for the
//     call running the callback).
//
// The exception classes are bound in errors.cpp, the result types in results.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "binding.h"
#include "cachemgr/cache.h"
#include "cachemgr/config.h"
#include "cachemgr/error.h"
#include "cachemgr/logging.h"
#include "cachemgr/options.h"

namespace py = pybind11;
using namespace py::literals;

namespace cachemgr::python {
namespace {

// ---- progress callbacks ----------------------------------------------------------

// One call's callback. Lives on the binding function's stack, so the engine's copies of
// the std::function only copy a pointer: no Python object is touched without the GIL.
// Depth of progress callbacks running on this thread. A cache call made from inside
// one could wait for the very call that runs the callback (its fill): refused.
thread_local int t_in_callback = 0;

struct Callback {
  py::object fn;                                // None: no callback
  std::optional<py::error_already_set> raised;  // what the callback raised, re-raised after

  ProgressFn Make() {
    if (fn.is_none()) return {};
    return [this](const Progress& p) {
      if (raised) throw Error(Errc::kInternal, "progress callback failed earlier");
      py::gil_scoped_acquire gil;
      try {
        ++t_in_callback;
        struct Leave {
          ~Leave() { --t_in_callback; }
        } leave;
        fn(p);
      } catch (py::error_already_set& e) {
        // "Stop: enough" for the engine's log and other waiters; not the whole traceback.
        std::string what = py::str(e.type().attr("__name__")).cast<std::string>();
        const std::string value = py::str(e.value()).cast<std::string>();
        if (!value.empty()) what += ": " + value;
        raised = std::move(e);
        // The engine unwinds (removing what the call half-made) as on any failure.
        throw Error(Errc::kInternal, "progress callback raised: " + what);
      }
    };
  }

  // After the call failed, with the GIL held: the callback's own exception wins.
  [[noreturn]] void Rethrow() {
    if (raised) {
      py::error_already_set e = std::move(*raised);
      raised.reset();
      throw e;
    }
    throw;
  }
};

// Runs `f` with the GIL released; a Python exception raised by `cb` is re-raised as is.
template <class F>
auto Call(Callback* cb, F&& f) {
  if (t_in_callback > 0) {
    throw Error(Errc::kInvalidArgument,
                "a cachemgr call from inside a progress callback could wait for the call "
                "running that callback; make it after the call returns");
  }
  try {
    py::gil_scoped_release release;
    return f();
  } catch (...) {
    if (cb) cb->Rethrow();
    throw;
  }
}

// ---- the Cache object ------------------------------------------------------------

// Holds the engine in a shared_ptr: close() drops the reference while calls in other
// threads keep theirs until they return.
class PyCache {
 public:
  explicit PyCache(std::shared_ptr<Cache> cache) : cache_(std::move(cache)) {}

  static std::unique_ptr<PyCache> Open(const std::optional<std::string>& path,
                                       const std::optional<std::string>& log_level,
                                       bool log_to_stderr) {
    std::shared_ptr<Cache> cache = Call(nullptr, [&] {
      // Quiet by default, as the tool: stderr gets warnings and errors unless log_level
      // asks for more; log.file keeps the config's log.level (log_level sets both).
      spdlog::level::level_enum on_stderr = spdlog::level::warn;
      if (log_level) {
        try {
          on_stderr = ParseLogLevel(*log_level);
        } catch (const Error&) {
          throw Error(Errc::kInvalidArgument,
                      "log_level: '" + *log_level +
                          "' is not one of trace, debug, info, warn, error, critical, off");
        }
      }
      const auto file = FindConfigFile(path.value_or(""));
      Options options = LoadConfigFile(file);
      if (log_level) options.log.level = *log_level;
      const spdlog::level::level_enum in_file = ParseLogLevel(options.log.level);
      options.log.level = spdlog::level::to_string_view(std::min(on_stderr, in_file)).data();
      auto logger = MakeLogger(options.log, log_to_stderr);
      auto& sinks = logger->sinks();
      for (size_t i = 0; i < sinks.size(); ++i) {
        sinks[i]->set_level(log_to_stderr && i == 0 ? on_stderr : in_file);
      }
      return std::shared_ptr<Cache>(Cache::Open(options, logger));
    });
    return std::make_unique<PyCache>(std::move(cache));
  }

  std::shared_ptr<Cache> Get() {
    std::lock_guard lock(mu_);
    if (!cache_) throw Error(Errc::kInvalidArgument, "the cache is closed");
    return cache_;
  }

  void Close() {
    std::shared_ptr<Cache> last;
    {
      std::lock_guard lock(mu_);
      last = std::move(cache_);
    }
    // The engine's destructor may wait for its own threads: not with the GIL held.
    Call(nullptr, [&] { last.reset(); });
  }

  bool closed() {
    std::lock_guard lock(mu_);
    return !cache_;
  }

 private:
  std::mutex mu_;
  std::shared_ptr<Cache> cache_;
};

py::dict StatsDict(const Stats& s) {
  py::dict by_plan;
  for (const auto& [plan, ps] : s.by_plan)
    by_plan[py::str(plan)] = py::dict("count"_a = ps.count, "total_ms"_a = Ms(ps.total));
  py::dict by_reason;
  for (const auto& [reason, m] : s.misses_by_reason)
    by_reason[py::str(reason)] =
        py::dict("count"_a = m.count, "bytes_downloaded"_a = m.bytes_downloaded);
  return py::dict(
      "hits"_a = s.hits, "misses"_a = s.misses, "evictions"_a = s.evictions, "stale"_a = s.stale,
      "errors"_a = s.errors, "direct"_a = s.direct, "direct_refused"_a = s.direct_refused,
      "instant"_a = s.instant, "imports_pending"_a = s.imports_pending,
      "bad_entries"_a = s.bad_entries, "bad_volumes"_a = s.bad_volumes,
      "bytes_downloaded"_a = s.bytes_downloaded, "bytes_saved"_a = s.bytes_saved,
      "entries"_a = s.entries, "cached_bytes"_a = s.cached_bytes, "pinned_bytes"_a = s.pinned_bytes,
      "volumes"_a = s.volumes, "leftovers"_a = s.leftovers, "leftover_bytes"_a = s.leftover_bytes,
      "half_made"_a = s.half_made, "left_alone"_a = s.left_alone,
      "dead_work_dirs"_a = s.dead_work_dirs, "max_size_gb"_a = s.max_size_gb,
      "max_count"_a = s.max_count, "by_plan"_a = by_plan,
      "misses_by_reason"_a = by_reason);
}

py::dict ImportDict(const ImportResult& r) {
  return py::dict("image_id"_a = r.image_id,
                  "outcome"_a = std::string(ImportOutcomeName(r.outcome)), "bytes"_a = r.bytes,
                  "ms"_a = Ms(r.elapsed), "detail"_a = r.detail, "volumes"_a = r.volumes);
}

}  // namespace
}  // namespace cachemgr::python

PYBIND11_MODULE(cachemgr, m) {
  using namespace cachemgr;
  using namespace cachemgr::python;

  m.doc() =
      "Image-volume cache manager: make volumes from cached images on Ceph RBD or a local "
      "directory.\n\n"
      "    cache = cachemgr.Cache.open('/etc/cachemgr/cachemgr.yaml')\n"
      "    made = cache.create_volume(image_id, 'vm-1-disk')\n"
      "    made.plan   # 'miss', 'clone', 'copy', 'flatten_clone', 'direct', 'uncached'\n\n"
      "A Cache may be shared by any number of threads: calls release the GIL. Failures "
      "raise cachemgr.Error (a subclass per .code).";
  m.attr("__version__") = CACHEMGR_VERSION;
  BindErrors(m);
  BindResults(m);

  py::class_<PyCache>(m, "Cache",
                      "An open cache. Thread-safe: share one among a service's threads; every "
                      "call releases the GIL while the engine works.")
      .def_static("open", &PyCache::Open, "path"_a = py::none(), "log_level"_a = py::none(),
                  "log_to_stderr"_a = true,
                  "Opens the cache a config file describes (path None: $CACHEMGR_CONFIG, else "
                  "/etc/cachemgr/cachemgr.yaml). Logs go to stderr (and to the config's "
                  "log.file) at log_level: 'trace', 'debug', 'info', 'warn' (the default: "
                  "a service stays quiet), 'error', 'critical' or 'off'.")
      .def(
          "create_volume",
          [](PyCache& self, const std::string& image_id, const std::string& volume, uint64_t size,
             py::object progress) {
            auto cache = self.Get();
            Callback cb{std::move(progress), std::nullopt};
            CreateVolumeRequest request{image_id, volume, size, cb.Make()};
            return Call(&cb, [&] { return cache->CreateVolume(request); });
          },
          "image_id"_a, "volume"_a, "size"_a = 0, "progress"_a = py::none(),
          "Makes `volume` from the image: a clone of the cached entry, or a miss (fetched and "
          "cached first; concurrent callers for one cold image wait for one fill). size 0: "
          "the image's virtual size. progress(p: Progress) is called during long steps from "
          "this thread; an exception it raises aborts the call and is re-raised.")
      .def(
          "delete_volume",
          [](PyCache& self, const std::string& volume) {
            auto cache = self.Get();
            Call(nullptr, [&] { cache->DeleteVolume(volume); });
          },
          "volume"_a, "Deletes a volume this cache made.")
      .def(
          "prefill",
          [](PyCache& self, const std::string& image_id, py::object progress) {
            auto cache = self.Get();
            Callback cb{std::move(progress), std::nullopt};
            ProgressFn fn = cb.Make();
            return Call(&cb, [&] { return cache->Prefill(image_id, fn); });
          },
          "image_id"_a, "progress"_a = py::none(),
          "Makes sure the image is cached and fresh, without making a volume.")
      .def(
          "evict",
          [](PyCache& self, bool dry_run, bool check_source, double flatten_older_than) {
            auto cache = self.Get();
            if (!(flatten_older_than >= 0) || !std::isfinite(flatten_older_than))
              throw Error(Errc::kInvalidArgument, "flatten_older_than: must be >= 0 seconds");
            EvictOptions options;
            options.dry_run = dry_run;
            options.check_source = check_source;
            options.flatten_older_than =
                std::chrono::seconds(static_cast<int64_t>(flatten_older_than));
            return Call(nullptr, [&] { return cache->RunEvictionPass(options); });
          },
          py::kw_only(), "dry_run"_a = false, "check_source"_a = true, "flatten_older_than"_a = 0.0,
          "The eviction pass (limits, stale and gone entries, gc, purge, optional flatten of "
          "volumes older than flatten_older_than seconds). dry_run: report, change nothing. "
          "Raises BusyError if another pass is running.")
      .def(
          "lookup",
          [](PyCache& self, const std::string& image_id) {
            auto cache = self.Get();
            return Call(nullptr, [&] { return cache->Lookup(image_id); });
          },
          "image_id"_a, "The image's cache entry, or None.")
      .def(
          "list",
          [](PyCache& self) {
            auto cache = self.Get();
            return Call(nullptr, [&] { return cache->List(); });
          },
          "The cache entries, as a list of Entry.")
      .def(
          "volumes",
          [](PyCache& self, const std::string& image_id) {
            auto cache = self.Get();
            return Call(nullptr, [&] { return cache->Volumes(image_id); });
          },
          "image_id"_a = "", "The volumes the cache made (of one image, when given).")
      .def(
          "stats",
          [](PyCache& self) {
            auto cache = self.Get();
            Stats s = Call(nullptr, [&] { return cache->GetStats(); });
            return StatsDict(s);
          },
          "Counters and sizes, as a dict (by_plan: plan -> {count, total_ms}).")
      .def(
          "verify",
          [](PyCache& self, const std::string& image_id) {
            auto cache = self.Get();
            return Call(nullptr, [&] { return cache->Verify(image_id); });
          },
          "image_id"_a, "Re-reads the entry and compares it with the source's checksum.")
      .def(
          "rebuild_index",
          [](PyCache& self) {
            auto cache = self.Get();
            return Call(nullptr, [&] { return cache->RebuildIndex(); });
          },
          "Rebuilds the index from the metadata stored on the backend's entries.")
      .def(
          "source_images",
          [](PyCache& self) {
            auto cache = self.Get();
            return Call(nullptr, [&] { return cache->SourceImages(); });
          },
          "Ids of the source's active images.")
      .def(
          "doctor",
          [](PyCache& self) {
            auto cache = self.Get();
            return Call(nullptr, [&] { return cache->Doctor(); });
          },
          "Checks the config, backend, source, qemu-img and permissions: a list of Check.")
      .def(
          "finish_import",
          [](PyCache& self, const std::string& image_id) {
            auto cache = self.Get();
            return ImportDict(Call(nullptr, [&] { return cache->FinishImport(image_id, {}); }));
          },
          "image_id"_a,
          "Runs an instant miss's import to its end here (copy, check, commit): a dict with "
          "outcome none|committed|bad|busy, bytes, ms, detail and, when bad, volumes.")
      .def(
          "wait_for_imports",
          [](PyCache& self) {
            auto cache = self.Get();
            py::list out;
            for (const auto& r : Call(nullptr, [&] { return cache->WaitForImports(); })) {
              out.append(ImportDict(r));
            }
            return out;
          },
          "Waits for the imports the cache's own threads run after instant misses.")
      .def(
          "bad_entries",
          [](PyCache& self) {
            auto cache = self.Get();
            py::list out;
            for (const auto& b : Call(nullptr, [&] { return cache->BadEntries(); })) {
              out.append(py::dict("image_id"_a = b.image_id, "reason"_a = b.reason,
                                  "at"_a = b.at, "volumes"_a = b.volumes));
            }
            return out;
          },
          "Entries whose import found bytes other than the image's, with their volumes.")
      .def("close", &PyCache::Close,
           "Releases the cache (calls running in other threads finish first); later calls "
           "raise InvalidArgumentError.")
      .def_property_readonly("closed", &PyCache::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyCache& self, py::args) { self.Close(); });
}
