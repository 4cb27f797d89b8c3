// verify, rebuild-index, doctor and the source listing.
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "cachemgr/config.h"
#include "engine/cache_impl.h"
#include "engine/naming.h"
#include "fetch/workdir.h"
#include "util/process.h"

namespace cachemgr {

std::optional<std::string> SetAsideDamagedIndex(const Options& options) {
  ValidateOptions(options);
  const std::filesystem::path path = options.index;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  try {
    index::Index::Open(path);
    return std::nullopt;
  } catch (const Error& e) {
    if (e.code() != Errc::kCorrupt) throw;
  }
  return index::Index::SetAside(path).string();
}

}  // namespace cachemgr

namespace cachemgr::engine {

namespace {

std::string Md5Of(storage::ImageReader& reader) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr);
  std::vector<std::byte> buf(4 << 20);
  uint64_t offset = 0;
  for (;;) {
    size_t n = reader.Read(offset, buf);
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), n);
    offset += n;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

}  // namespace

VerifyResult CacheImpl::Verify(const std::string& image_id) {
  ValidateImageId(image_id);
  VerifyResult result;
  result.image_id = image_id;
  auto row = FindLive(image_id);
  if (!row || row->state != index::State::kReady) {
    throw Error(Errc::kNotFound, "image " + image_id + ": not cached");
  }
  const auto ref = EntryRef(row->cache_name);
  if (!backend_->Exists(ref)) {
    result.detail = "entry missing on backend: " + row->cache_name;
    return result;
  }
  bool protected_snap = false;
  for (const auto& s : backend_->ListSnapshots(ref)) {
    if (s.name == row->snap_name && s.is_protected) protected_snap = true;
  }
  if (!protected_snap) {
    result.detail = "snapshot " + row->snap_name + " missing or not protected";
    return result;
  }
  if (row->disk_format != "raw" || row->checksum.empty()) {
    // The entry holds the converted bytes; the source's md5 is of the original file.
    result.ok = true;
    result.detail = "entry and protected snapshot present; " + row->disk_format +
                    " bytes are not comparable with the source checksum";
    return result;
  }
  auto reader = backend_->Open(ref, row->snap_name);
  std::string md5 = Md5Of(*reader);
  result.ok = md5 == row->checksum;
  result.detail = result.ok ? "md5 matches"
                            : "checksum mismatch: source md5 " + row->checksum + ", got " + md5;
  return result;
}

RebuildReport CacheImpl::RebuildIndex() {
  RebuildReport report;
  for (const auto& name : backend_->List(backend_->entry_pool())) {
    if (!IsEntryName(name)) continue;
    auto row = RowFromMetadata(name);
    if (!row) {
      report.skipped += 1;
      report.messages.push_back(name + ": no complete cachemgr metadata or protected snapshot");
      continue;
    }
    report.entries_found += 1;
    if (auto live = FindLive(row->image_id)) {
      if (live->state == index::State::kReady && live->cache_name == name) continue;
      report.messages.push_back(name + ": image " + row->image_id + " has a " +
                                std::string(index::StateName(live->state)) +
                                " row already; left alone");
      continue;
    }
    WithIndex([&](index::Index& ix) { ix.InsertEntry(*row); });
    report.entries_restored += 1;
    report.messages.push_back(name + ": restored image " + row->image_id);
  }
  log_->info("index rebuilt found={} restored={} skipped={}", report.entries_found,
             report.entries_restored, report.skipped);
  return report;
}

std::vector<std::string> CacheImpl::SourceImages() {
  std::vector<std::string> ids;
  for (const auto& meta : source_->ListActive()) ids.push_back(meta.id);
  return ids;
}

std::vector<Check> CacheImpl::Doctor() {
  std::vector<Check> checks;
  auto run = [&](const std::string& name, const std::string& fix,
                 const std::function<std::string()>& fn) {
    Check c{name, false, "", ""};
    try {
      c.detail = fn();
      c.ok = true;
    } catch (const std::exception& e) {
      c.detail = e.what();
      c.fix = fix;
    }
    checks.push_back(c);
  };
  run("config", "fix the config keys named in the message", [&] {
    ValidateOptions(options_);
    return std::string("valid");
  });
  run("index", "restore the index file or run rebuild-index", [&] {
    auto result = WithIndex([&](index::Index& ix) { return ix.IntegrityCheck(); });
    if (result != "ok") throw Error(Errc::kCorrupt, "index: " + result);
    return options_.index + ": integrity ok";
  });
  run("locks", "make the index folder writable by this user", [&] {
    if (::access(lock_dir_.c_str(), W_OK) != 0) {
      throw Error(Errc::kIo, lock_dir_.string() + ": not writable");
    }
    return lock_dir_.string() + ": writable";
  });
  run("backend", "check the backend section: ceph.conf, keyring, pool or root", [&] {
    auto n = backend_->List(backend_->entry_pool()).size();
    return backend_kind_ + " " + location_ + ": reachable, " + std::to_string(n) + " image(s)";
  });
  run("leftovers", "run `cachemgr evict`: it removes what a dead fill or create left", [&] {
    std::vector<EvictAction> found;
    GcLeftovers(true, &found);
    GcVolumes(true, &found);
    std::string foreign, half_made;
    size_t n_foreign = 0, n_half = 0;
    for (const auto& a : found) {
      std::string& list = a.kind == "left alone" ? foreign : half_made;
      (a.kind == "left alone" ? n_foreign : n_half) += 1;
      list += (list.empty() ? "" : "; ") + a.name + " (" + a.reason + ")";
    }
    const std::string others =
        n_foreign == 0 ? "no foreign objects"
                       : std::to_string(n_foreign) +
                             " object(s) not made by this cache, left alone: " + foreign;
    // Temporaries (local `.tmp-*`) whose writer died.
    std::string temps;
    uint64_t temp_bytes = 0;
    auto dead = backend_->SweepTemporaries(true);
    for (const auto& l : dead) {
      temps += (temps.empty() ? "" : ", ") + l.path;
      temp_bytes += l.bytes;
    }
    const std::string temporaries =
        dead.empty() ? "no temporaries left by dead writers"
                     : std::to_string(dead.size()) + " temporaries left by dead writers (" +
                           std::to_string(temp_bytes) + " bytes): " + temps;
    if (n_half > 0 || !dead.empty()) {
      throw Error(Errc::kBackend, std::to_string(n_half) +
                                      " half-made object(s) or row(s) not yet removed" +
                                      (half_made.empty() ? "" : ": " + half_made) + "; " +
                                      temporaries + "; " + others);
    }
    return "nothing half-made; " + temporaries + "; " + others;
  });
  run("source", "check source.glance.endpoint / token or source.file.dir", [&] {
    source_->Ping();
    return source_->kind() + ": reachable";
  });
  run("work dirs", "run `cachemgr evict`: the eviction pass removes dead fills' directories", [&] {
    auto dead = fetch::ListDeadWorkDirs(options_.conversion.dir);
    if (dead.empty()) return options_.conversion.dir + ": no dead fill's working dir";
    std::string names;
    for (const auto& d : dead) names += (names.empty() ? "" : ", ") + d.string();
    throw Error(Errc::kIo, std::to_string(dead.size()) + " working dir(s) of dead fills: " + names);
  });
  run("entries", "run `cachemgr evict`: it removes the entries named, to be fetched again", [&] {
    std::string changed;
    size_t n = 0;
    for (const auto& row :
         WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
      if (row.state != index::State::kReady) continue;
      ++n;
      try {
        backend_->RequireIntact(EntryRef(row.cache_name));
      } catch (const Error& e) {
        if (e.code() != Errc::kCorrupt) throw;
        changed += std::string(changed.empty() ? "" : "; ") + e.what();
      }
    }
    if (!changed.empty()) throw Error(Errc::kCorrupt, changed);
    return std::to_string(n) + " ready entries intact";
  });
  run("qemu-img", "install qemu-utils or set conversion.qemu_img", [&] {
    util::RunOptions ro;
    ro.timeout = std::chrono::seconds(20);
    auto out = util::RunChecked({options_.conversion.qemu_img, "--version"}, ro,
                                static_cast<int>(Errc::kConfig));
    return out.substr(0, out.find('\n'));
  });
  return checks;
}

}  // namespace cachemgr::engine
