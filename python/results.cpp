// python/results.cpp: the result types of the Cache's calls as read-only Python objects,
// each with to_dict() and a __repr__ naming its fields.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "binding.h"
#include "cachemgr/cache.h"

namespace py = pybind11;

namespace cachemgr::python {
namespace {

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

void BindResults(py::module_& m) {
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
}

}  // namespace cachemgr::python
