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
// Over 600 lines for now: the whole public API is bound in this one module file; the
// result types' bindings are to move to a file of their own.
#include <pybind11/eval.h>
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

#include "cachemgr/cache.h"
#include "cachemgr/config.h"
#include "cachemgr/error.h"
#include "cachemgr/logging.h"
#include "cachemgr/options.h"

namespace py = pybind11;
using namespace py::literals;

namespace cachemgr::python {
namespace {

// ---- exceptions ------------------------------------------------------------------

// The classes are plain Python classes (defined below with py::exec) so that they pickle
// and behave like any exception: str(e) is the message.
constexpr const char* kExceptionClasses = R"py(
class Error(Exception):
    """A failure of the cache: .code is the stable name of its kind ("not_found",
    "config", "busy", ...), .exit_code the exit code the `cachemgr` tool uses for it,
    str(e) the message, which names the thing and the cause."""

    def __init__(self, message, code="internal", exit_code=1):
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code

    def __reduce__(self):
        return (type(self), (str(self), self.code, self.exit_code))


class InvalidArgumentError(Error, ValueError):
    """A malformed argument: a hostile image id, a bad size (code "invalid_argument")."""


class ConfigError(Error):
    """The configuration is invalid; the message names the key (code "config")."""


class NotFoundError(Error, LookupError):
    """An image, entry, volume or pool does not exist (code "not_found")."""


class AlreadyExistsError(Error):
    """A name is taken (code "already_exists")."""


class CorruptError(Error):
    """Integrity: a checksum mismatch, truncated data, a damaged index (code "corrupt")."""


class RefusedError(Error):
    """The image is of a kind that is never let in (code "refused")."""


class BusyError(Error):
    """Another process or host holds the lock (code "busy"): try again later."""


class BackendError(Error):
    """The storage backend (librbd/librados, the filesystem) failed (code "backend")."""


class SourceError(Error):
    """The image source (Glance, the image directory) failed (code "source")."""


class UnauthorizedError(Error):
    """The source or cephx refused the credentials (code "unauthorized")."""


class TimeoutError(Error):
    """An operation did not finish within its configured time (code "timeout")."""


class IoError(Error):
    """A local file operation failed (code "io")."""


class InternalError(Error):
    """A bug: an invariant did not hold (code "internal")."""
)py";

struct CodeClass {
  Errc code;
  const char* class_name;
};
constexpr std::array<CodeClass, 13> kCodeClasses = {{
    {Errc::kInvalidArgument, "InvalidArgumentError"},
    {Errc::kConfig, "ConfigError"},
    {Errc::kNotFound, "NotFoundError"},
    {Errc::kAlreadyExists, "AlreadyExistsError"},
    {Errc::kCorrupt, "CorruptError"},
    {Errc::kRefused, "RefusedError"},
    {Errc::kBusy, "BusyError"},
    {Errc::kBackend, "BackendError"},
    {Errc::kSource, "SourceError"},
    {Errc::kUnauthorized, "UnauthorizedError"},
    {Errc::kTimeout, "TimeoutError"},
    {Errc::kIo, "IoError"},
    {Errc::kInternal, "InternalError"},
}};

// The same mapping as the tool's (cli/main.cpp, the contract in README): services that
// shell out today and call the module tomorrow keep their handling.
int ExitCodeFor(Errc code) noexcept {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kConfig:
      return 2;
    case Errc::kNotFound:
      return 3;
    case Errc::kCorrupt:
    case Errc::kRefused:
      return 4;
    case Errc::kBusy:
      return 5;
    default:
      return 1;
  }
}

// Borrowed from the module's dict, which lives as long as the interpreter: the
// translator runs with the GIL held. Deliberately never released (no destructor that
// would run after the interpreter is gone).
PyObject* g_base = nullptr;
std::array<PyObject*, kCodeClasses.size()> g_classes{};

void RaiseError(const Error& e) {
  PyObject* cls = g_base;
  for (size_t i = 0; i < kCodeClasses.size(); ++i)
    if (kCodeClasses[i].code == e.code()) cls = g_classes[i];
  // A message may quote bytes that are not UTF-8 (a path): U+FFFD for them, never a
  // UnicodeDecodeError in place of the error.
  const std::string what = e.what();
  py::object message = py::reinterpret_steal<py::object>(
      PyUnicode_DecodeUTF8(what.data(), static_cast<Py_ssize_t>(what.size()), "replace"));
  py::object instance = py::reinterpret_borrow<py::object>(cls)(
      message, std::string(ErrcName(e.code())), ExitCodeFor(e.code()));
  PyErr_SetObject(cls, instance.ptr());
}

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

double Ms(std::chrono::microseconds d) { return static_cast<double>(d.count()) / 1000.0; }

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
  return py::dict(
      "hits"_a = s.hits, "misses"_a = s.misses, "evictions"_a = s.evictions, "stale"_a = s.stale,
      "errors"_a = s.errors, "direct"_a = s.direct, "direct_refused"_a = s.direct_refused,
      "bytes_downloaded"_a = s.bytes_downloaded, "bytes_saved"_a = s.bytes_saved,
      "entries"_a = s.entries, "cached_bytes"_a = s.cached_bytes, "pinned_bytes"_a = s.pinned_bytes,
      "volumes"_a = s.volumes, "leftovers"_a = s.leftovers, "leftover_bytes"_a = s.leftover_bytes,
      "half_made"_a = s.half_made, "left_alone"_a = s.left_alone,
      "dead_work_dirs"_a = s.dead_work_dirs, "max_size_gb"_a = s.max_size_gb,
      "max_count"_a = s.max_count, "by_plan"_a = by_plan);
}

// to_dict() and __repr__ from a list of attribute names.
template <class C>
void AddDictAndRepr(py::class_<C>& cls, std::vector<const char*> names, const char* repr_name) {
  cls.def(
      "to_dict",
      [names](py::object self) {
        py::dict d;
        for (const char* n : names) {
          py::object v = self.attr(n);
          if (py::isinstance<py::list>(v)) {
            py::list items;
            for (auto item : v)
              items.append(py::hasattr(item, "to_dict") ? item.attr("to_dict")()
                                                        : py::reinterpret_borrow<py::object>(item));
            v = items;
          }
          d[n] = v;
        }
        return d;
      },
      "The attributes as a dict (JSON-ready).");
  cls.def("__repr__", [names, repr_name](py::object self) {
    std::string out = std::string(repr_name) + "(";
    bool first = true;
    for (const char* n : names) {
      py::object v = self.attr(n);
      if (py::isinstance<py::list>(v)) continue;
      out += (first ? "" : ", ") + std::string(n) + "=" + py::repr(v).cast<std::string>();
      first = false;
    }
    return out + ")";
  });
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

  // Exceptions: defined in Python inside the module's namespace (their __module__ is
  // "cachemgr", so they pickle and print as cachemgr.NotFoundError).
  {
    py::dict ns = m.attr("__dict__");
    py::exec(kExceptionClasses, ns);
    g_base = ns["Error"].ptr();
    py::dict codes;
    for (size_t i = 0; i < kCodeClasses.size(); ++i) {
      g_classes[i] = ns[kCodeClasses[i].class_name].ptr();
      codes[py::str(std::string(ErrcName(kCodeClasses[i].code)))] = ns[kCodeClasses[i].class_name];
    }
    m.attr("ERROR_CLASSES") = codes;  // code name -> class
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      RaiseError(e);
    }
  });

  py::class_<Progress>(m, "Progress", "Progress of a long step, given to a progress callback.")
      .def_readonly("image_id", &Progress::image_id)
      .def_readonly("stage", &Progress::stage,
                    "'download', 'convert', 'import', 'flatten' or 'copy'")
      .def_readonly("done_bytes", &Progress::done_bytes)
      .def_readonly("total_bytes", &Progress::total_bytes, "0 when unknown")
      .def("__repr__", [](const Progress& p) {
        return "Progress(image_id='" + p.image_id + "', stage='" + p.stage +
               "', done_bytes=" + std::to_string(p.done_bytes) +
               ", total_bytes=" + std::to_string(p.total_bytes) + ")";
      });

  py::class_<CreateVolumeResult> made(m, "CreateVolumeResult", "What create_volume made, and how.");
  made.def_readonly("volume", &CreateVolumeResult::volume)
      .def_readonly("image_id", &CreateVolumeResult::image_id)
      .def_property_readonly(
          "plan", [](const CreateVolumeResult& r) { return std::string(PlanName(r.plan)); },
          "'clone', 'copy', 'flatten_clone', 'miss', 'direct' or 'uncached'")
      .def_readonly("depth", &CreateVolumeResult::depth, "parent-chain length of the volume")
      .def_readonly("size_bytes", &CreateVolumeResult::size_bytes)
      .def_readonly("bytes_downloaded", &CreateVolumeResult::bytes_downloaded)
      .def_property_readonly("elapsed_ms",
                             [](const CreateVolumeResult& r) { return Ms(r.elapsed); })
      .def_property_readonly("fill_ms", [](const CreateVolumeResult& r) { return Ms(r.fill); })
      .def_property_readonly("wait_ms", [](const CreateVolumeResult& r) { return Ms(r.wait); });
  AddDictAndRepr(made,
                 {"volume", "image_id", "plan", "depth", "size_bytes", "bytes_downloaded",
                  "elapsed_ms", "fill_ms", "wait_ms"},
                 "CreateVolumeResult");

  py::class_<PrefillResult> prefill(m, "PrefillResult", "What prefill did.");
  prefill.def_readonly("image_id", &PrefillResult::image_id)
      .def_property_readonly(
          "outcome",
          [](const PrefillResult& r) { return std::string(PrefillOutcomeName(r.outcome)); },
          "'filled', 'fresh', 'replaced' or 'direct'")
      .def_readonly("bytes_downloaded", &PrefillResult::bytes_downloaded)
      .def_readonly("virtual_size", &PrefillResult::virtual_size)
      .def_property_readonly("elapsed_ms", [](const PrefillResult& r) { return Ms(r.elapsed); });
  AddDictAndRepr(prefill, {"image_id", "outcome", "bytes_downloaded", "virtual_size", "elapsed_ms"},
                 "PrefillResult");

  py::class_<EntryInfo> entry(m, "Entry", "A cache entry (list(), lookup()).");
  entry.def_readonly("image_id", &EntryInfo::image_id)
      .def_readonly("backend", &EntryInfo::backend)
      .def_readonly("pool", &EntryInfo::pool)
      .def_readonly("cache_name", &EntryInfo::cache_name)
      .def_property_readonly(
          "state", [](const EntryInfo& e) { return std::string(EntryStateName(e.state)); })
      .def_readonly("virtual_size", &EntryInfo::virtual_size)
      .def_readonly("allocated_bytes", &EntryInfo::allocated_bytes)
      .def_readonly("disk_format", &EntryInfo::disk_format)
      .def_readonly("checksum", &EntryInfo::checksum)
      .def_readonly("os_hash_algo", &EntryInfo::os_hash_algo)
      .def_readonly("os_hash_value", &EntryInfo::os_hash_value)
      .def_readonly("image_updated_at", &EntryInfo::image_updated_at)
      .def_readonly("depth", &EntryInfo::depth)
      .def_readonly("created_at", &EntryInfo::created_at, "unix seconds")
      .def_readonly("last_used", &EntryInfo::last_used, "unix seconds")
      .def_readonly("hits", &EntryInfo::hits)
      .def_readonly("volumes", &EntryInfo::volumes)
      .def_readonly("pinned", &EntryInfo::pinned);
  AddDictAndRepr(
      entry,
      {"image_id", "backend", "pool", "cache_name", "state", "virtual_size", "allocated_bytes",
       "disk_format", "checksum", "os_hash_algo", "os_hash_value", "image_updated_at", "depth",
       "created_at", "last_used", "hits", "volumes", "pinned"},
      "Entry");

  py::class_<VolumeInfo> volume(m, "Volume", "A volume the cache made (volumes()).");
  volume.def_readonly("name", &VolumeInfo::name)
      .def_readonly("image_id", &VolumeInfo::image_id)
      .def_property_readonly("plan",
                             [](const VolumeInfo& v) { return std::string(PlanName(v.plan)); })
      .def_readonly("depth", &VolumeInfo::depth)
      .def_readonly("size_bytes", &VolumeInfo::size_bytes)
      .def_readonly("created_at", &VolumeInfo::created_at, "unix seconds");
  AddDictAndRepr(volume, {"name", "image_id", "plan", "depth", "size_bytes", "created_at"},
                 "Volume");

  py::class_<EvictAction> action(m, "EvictAction", "One action of an eviction pass.");
  action
      .def_readonly("kind", &EvictAction::kind,
                    "'evict', 'stale', 'gone', 'gc', 'purge', 'flatten' or 'defer'")
      .def_readonly("image_id", &EvictAction::image_id)
      .def_readonly("name", &EvictAction::name)
      .def_readonly("bytes", &EvictAction::bytes)
      .def_readonly("reason", &EvictAction::reason)
      .def_readonly("done", &EvictAction::done, "False in a dry run, or when the action failed");
  AddDictAndRepr(action, {"kind", "image_id", "name", "bytes", "reason", "done"}, "EvictAction");

  py::class_<EvictReport> report(m, "EvictReport", "What an eviction pass did (or would do).");
  report.def_readonly("actions", &EvictReport::actions)
      .def_readonly("entries_before", &EvictReport::entries_before)
      .def_readonly("entries_after", &EvictReport::entries_after)
      .def_readonly("bytes_before", &EvictReport::bytes_before)
      .def_readonly("bytes_after", &EvictReport::bytes_after)
      .def_readonly("pinned_bytes", &EvictReport::pinned_bytes)
      .def_readonly("source_requests", &EvictReport::source_requests)
      .def_property_readonly("elapsed_ms", [](const EvictReport& r) { return Ms(r.elapsed); });
  AddDictAndRepr(report,
                 {"actions", "entries_before", "entries_after", "bytes_before", "bytes_after",
                  "pinned_bytes", "source_requests", "elapsed_ms"},
                 "EvictReport");

  py::class_<VerifyResult> verify(m, "VerifyResult", "Whether an entry's bytes match the source.");
  verify.def_readonly("image_id", &VerifyResult::image_id)
      .def_readonly("ok", &VerifyResult::ok)
      .def_readonly("detail", &VerifyResult::detail);
  AddDictAndRepr(verify, {"image_id", "ok", "detail"}, "VerifyResult");

  py::class_<Check> check(m, "Check", "One check of doctor().");
  check.def_readonly("name", &Check::name)
      .def_readonly("ok", &Check::ok)
      .def_readonly("detail", &Check::detail)
      .def_readonly("fix", &Check::fix)
      .def_readonly("warning", &Check::warning);
  AddDictAndRepr(check, {"name", "ok", "detail", "fix", "warning"}, "Check");

  py::class_<RebuildReport> rebuild(m, "RebuildReport", "What rebuild_index() restored.");
  rebuild.def_readonly("entries_found", &RebuildReport::entries_found)
      .def_readonly("entries_restored", &RebuildReport::entries_restored)
      .def_readonly("skipped", &RebuildReport::skipped)
      .def_readonly("messages", &RebuildReport::messages);
  AddDictAndRepr(rebuild, {"entries_found", "entries_restored", "skipped", "messages"},
                 "RebuildReport");

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
      .def("close", &PyCache::Close,
           "Releases the cache (calls running in other threads finish first); later calls "
           "raise InvalidArgumentError.")
      .def_property_readonly("closed", &PyCache::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyCache& self, py::args) { self.Close(); });
}
