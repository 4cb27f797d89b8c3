// The instant miss (cache.instant_miss, RBD): which images qualify, and the entry made
// as an import-only migration of the image's own file, so that the first volume is a
// clone made at once. The import's end (copy, check, commit, or the entry marked bad)
// is instant_import.cpp.
//
// What qualifies: an image the source keeps as a file every host reaches at one path
// (the file source over a shared directory) that is raw, or qcow2 with nothing but its
// own clusters (no backing file, no data file, no compressed cluster, not encrypted), by
// the same header checks as a normal fill's. Glance images go through a relay
// (instant_relay.cpp): librbd's http stream sends no token and needs a HEAD that Glance
// refuses (docs/architecture.md).
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/cache_impl.h"
#include "engine/failpoints.h"
#include "engine/instant_qcow2.h"
#include "engine/instant_records.h"
#include "engine/naming.h"
#include "convert/format.h"
#include "util/file_identity.h"

namespace cachemgr::engine {

namespace {

using json = nlohmann::json;

// Same file: a path that still names the opened descriptor's inode, not through a symlink.
bool PathIsFile(const std::string& path, int fd) {
  struct stat by_path {}, by_fd {};
  if (::lstat(path.c_str(), &by_path) != 0 || ::fstat(fd, &by_fd) != 0) return false;
  return S_ISREG(by_path.st_mode) && by_path.st_dev == by_fd.st_dev &&
         by_path.st_ino == by_fd.st_ino;
}

}  // namespace

bool CacheImpl::InstantWanted() const {
  return options_.cache.instant_miss && backend_->CanImportInstantly();
}

std::optional<CacheImpl::InstantPlan> CacheImpl::PlanInstant(const source::ImageMeta& meta,
                                                               std::string* why_not) {
  auto no = [&](std::string why) -> std::optional<InstantPlan> {
    *why_not = std::move(why);
    return std::nullopt;
  };
  if (!InstantWanted()) return no("cache.instant_miss is off or the backend cannot import");
  const auto path = source_->SharedPath(meta.id);
  if (!path) return PlanRelayed(meta, why_not);  // Glance: through the relay
  auto file = source_->OpenLocal(meta.id);
  if (!file) return no("the source has no file of the image");
  if (!PathIsFile(path->string(), file->fd())) {
    return no("the image's path " + path->string() + " does not name the file opened");
  }
  // The format checks a fill makes, on the header, before anything is made.
  const std::string detected = convert::DetectFdFormat(file->fd(), file->name());
  convert::RequireFormatMatches(meta.id, meta.disk_format, detected);
  InstantPlan plan;
  plan.path = path->string();
  if (detected == "raw") {
    if (file->size() == 0) return no("the image file is empty");
    if (file->size() % 512 != 0) {
      return no("its " + std::to_string(file->size()) + " bytes are not whole 512-byte sectors");
    }
    if (meta.virtual_size && *meta.virtual_size != file->size()) {
      return no("the source's virtual_size " + std::to_string(*meta.virtual_size) +
                " is not the raw file's size " + std::to_string(file->size()));
    }
    const uint64_t max_virtual =
        static_cast<uint64_t>(options_.conversion.max_virtual_size_gb * (1ull << 30));
    if (max_virtual > 0 && file->size() > max_virtual) {
      throw Error(Errc::kRefused, "image " + meta.id + ": " + std::to_string(file->size()) +
                                      " bytes is over conversion.max_virtual_size_gb");
    }
    plan.format = "raw";
  } else if (detected == "qcow2") {
    if (auto why = Qcow2Unsupported(file->fd()); !why.empty()) return no(why);
    // Refuses backing files, data files and over-large disks (kRefused), and truncated
    // tables or data (kCorrupt), as a normal fill does. qemu-img reads the path librbd will
    // read; that it is still the file opened here is checked after.
    auto inspected = convert::Inspect(plan.path, "qcow2", meta.id, options_.conversion, log_);
    convert::CheckIntact(plan.path, inspected.format, meta.id, options_.conversion, log_);
    if (inspected.virtual_size % 512 != 0) {
      return no("its disk of " + std::to_string(inspected.virtual_size) +
                " bytes is not whole 512-byte sectors");
    }
    auto extents = convert::MapPlainQcow2(plan.path, inspected.virtual_size, meta.id,
                                          options_.conversion, log_);
    if (!extents) {
      return no("the qcow2 image has compressed or encrypted clusters (librbd reads plain ones)");
    }
    for (const auto& e : *extents) {
      if (e.zero_over_data) {
        return no("the qcow2 image has zeroed clusters that still point at data (librbd 16 "
                  "would read the data)");
      }
    }
    if (!PathIsFile(plan.path, file->fd())) {
      return no("the image's path " + plan.path + " was replaced while it was checked");
    }
    plan.format = "qcow2";
  } else {
    return no("its format is " + detected + " (raw and plain qcow2 only)");
  }
  struct stat st {};
  if (::fstat(file->fd(), &st) != 0) return no(std::string("cannot stat it: ") + strerror(errno));
  plan.file_identity = util::SettledFileIdentity(st);
  file->RequireUnchanged(meta.id);
  // A version of the file an import already found bad is not served before it is checked
  // again: the normal miss checks it first.
  const auto bad_files = backend_->ReadTable(kBadFilesTable);
  if (auto it = bad_files.find(Sha1Hex(meta.id));
      it != bad_files.end() && it->second == plan.file_identity) {
    return no("an import of this very version of the file found bytes that are not the image's");
  }
  plan.spec = json{{"type", plan.format == "raw" ? "raw" : "qcow"},
                   {"stream", {{"type", "file"}, {"file_path", plan.path}}}}
                  .dump();
  return plan;
}

void CacheImpl::PrepareInstant(const source::ImageMeta& meta, const InstantPlan& plan,
                               const storage::ImageRef& staging_ref, index::EntryRow* row) {
  if (plan.relayed_size != 0) RecordRelay(staging_ref.name, plan.path, plan.relayed_size);
  backend_->PrepareImport(plan.spec, staging_ref);
  Failpoint("instant_after_prepare");
  row->virtual_size = backend_->Stat(staging_ref).size;
  row->depth = 0;
  if (plan.relayed_size != 0 && row->virtual_size != plan.virtual_size) {
    throw Error(Errc::kSource, "image " + meta.id + ": librbd sees a disk of " +
                                   std::to_string(row->virtual_size) + " bytes through the relay, "
                                   "the image's " + plan.format + " has " +
                                   std::to_string(plan.virtual_size));
  }
  log_->info("instant miss: entry made as an import image={} format={} path={} bytes={}", meta.id,
             plan.format, plan.relayed_size != 0 ? std::string("the relay") : plan.path,
             row->virtual_size);
}

void CacheImpl::RecordImport(const source::ImageMeta& meta, const InstantPlan& plan,
                             const index::EntryRow& row) {
  ImportRecord rec;
  rec.image_id = meta.id;
  rec.identity = row.identity;
  rec.path = plan.path;
  rec.format = plan.format;
  rec.file_identity = plan.file_identity;
  rec.size = plan.relayed_size;
  rec.checksum = meta.checksum;
  rec.os_hash_algo = meta.os_hash_algo;
  rec.os_hash_value = meta.os_hash_value;
  rec.host = host_id_;
  rec.at = Now();
  backend_->WriteTable(kImportsTable, {{EntryName(meta.id), rec.Dump()}});
  Failpoint("instant_after_record");
}

}  // namespace cachemgr::engine
