// verify, rebuild-index, doctor and the source listing.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <memory>
#include <vector>

#include "cachemgr/config.h"
#include "engine/cache_impl.h"
#include "engine/naming.h"
#include "engine/shared_tables.h"
#include "fetch/workdir.h"
#include "util/hash.h"
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

std::string HashOf(const std::string& algo, storage::ImageReader& reader) {
  util::Hasher hasher(algo);
  std::vector<std::byte> buf(4 << 20);
  uint64_t offset = 0;
  for (;;) {
    size_t n = reader.Read(offset, buf);
    if (n == 0) break;
    hasher.Update(std::span<const std::byte>(buf.data(), n));
    offset += n;
  }
  return hasher.HexDigest();
}

// The digest the entry was verified with at fill that the source still gives a value
// for: its os_hash (a known algorithm), else its md5. nullopt when they share none.
struct Pair {
  std::string algo, recorded, source;
};
std::optional<Pair> CommonDigest(const index::EntryRow& row, const source::ImageMeta& meta) {
  if (auto colon = row.os_hash.find(':'); colon != std::string::npos) {
    std::string algo = row.os_hash.substr(0, colon);
    const bool known = algo == "sha256" || algo == "sha384" || algo == "sha512";
    if (known && meta.os_hash_algo == algo && !meta.os_hash_value.empty()) {
      return Pair{algo, row.os_hash.substr(colon + 1), meta.os_hash_value};
    }
  }
  if (!row.checksum.empty() && !meta.checksum.empty()) {
    return Pair{"md5", row.checksum, meta.checksum};
  }
  return std::nullopt;
}

std::string Short(const std::string& hex) {
  return hex.size() > 16 ? hex.substr(0, 16) + "..." : hex;
}

}  // namespace

VerifyResult CacheImpl::Verify(const std::string& image_id) {
  ValidateImageId(image_id);
  VerifyResult result;
  result.image_id = image_id;
  // An instant miss found bad: its volumes hold bytes that are not the image's.
  for (const auto& bad : BadEntries()) {
    if (bad.image_id != image_id) continue;
    std::string volumes;
    for (const auto& v : bad.volumes) volumes += (volumes.empty() ? "" : ", ") + v;
    result.detail = "marked bad: " + bad.reason + "; volumes made from it: " +
                    (volumes.empty() ? std::string("none left") : volumes) +
                    " (their bytes are not the image's: rebuild them)";
    return result;
  }
  auto row = FindLive(image_id);
  if (!row || row->state != index::State::kReady) {
    throw Error(Errc::kNotFound, "image " + image_id + ": not cached");
  }
  RefreshDigests(&*row);  // an instant miss's import another host finished
  if (ImportPending(row->cache_name)) {
    // Its bytes are not all copied (and a dead runner's relay may not even let them be
    // read): the import itself checks them against the source's digests.
    throw Error(Errc::kBusy, "image " + image_id + ": its instant miss's import is not "
                                 "finished; the import checks its bytes (`cachemgr "
                                 "finish-import " + image_id + "`, or the next `cachemgr evict`)");
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
  // The source is asked now: a digest remembered from the fill proves nothing about
  // what the source holds today.
  source::ImageMeta meta;
  std::string gone;  // set when the source no longer has the image
  try {
    meta = source_->Describe(image_id);
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) {
      result.detail = std::string("cannot get the image's digest from the source: ") + e.what();
      return result;
    }
    // Deleted from the source (a flattened entry outlives it): the entry can only be
    // checked against the digest it was verified with at fill.
    gone = "not in the source any more; ";
    meta.id = image_id;
    meta.checksum = row->checksum;
    if (auto colon = row->os_hash.find(':'); colon != std::string::npos) {
      meta.os_hash_algo = row->os_hash.substr(0, colon);
      meta.os_hash_value = row->os_hash.substr(colon + 1);
    }
  }
  auto pair = CommonDigest(*row, meta);
  if (!pair) {
    result.detail =
        source::CheckableDigest(meta)
            ? "the source's digest is not one the entry was verified with (" +
                  (row->os_hash.empty() ? std::string("md5")
                                        : row->os_hash.substr(0, row->os_hash.find(':'))) +
                  "): prefill it again to verify"
            : std::string("the source gives no digest that can be checked") +
                  (options_.source.allow_unverified
                       ? " (cached unverified, source.allow_unverified)"
                       : "");
    return result;
  }
  if (!util::SameDigest(pair->recorded, pair->source)) {
    result.detail = "the source's " + pair->algo + " changed: source " + Short(pair->source) +
                    ", entry verified with " + Short(pair->recorded);
    return result;
  }
  if (row->disk_format != "raw") {
    // The entry holds the converted bytes; the source's digest is of the original file.
    result.ok = true;
    result.detail = gone + pair->algo + " verified at fill matches the source's; " +
                    row->disk_format +
                    " converted to raw, its bytes are not comparable with the source digest";
    return result;
  }
  auto reader = backend_->Open(ref, row->snap_name);
  std::string got = HashOf(pair->algo, *reader);
  result.ok = util::SameDigest(got, pair->source);
  const std::string against = gone.empty() ? "the source's" : "the one verified at fill";
  result.detail = gone + (result.ok ? pair->algo + " of the entry matches " + against
                                    : pair->algo + " mismatch: " + against + " " +
                                          Short(pair->source) + ", entry data " + Short(got));
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
  std::vector<std::string> refused;
  auto listed = source_->ListActiveAndRefused(&refused);
  std::lock_guard lock(listed_mu_);
  for (auto& meta : listed) {
    ids.push_back(meta.id);
    listed_[meta.id] = std::move(meta);
  }
  // Listed too: their prefill asks the source again and fails with its reason, so a
  // batch counts them instead of passing over them.
  ids.insert(ids.end(), refused.begin(), refused.end());
  return ids;
}

// The files holding the Glance source's secrets (the config, clouds.yaml, secure.yaml)
// must be readable by their owner alone: a warning names each one that is not.
Check CacheImpl::SecretFilesCheck() const {
  Check c{"secret files", true, "", ""};
  std::string loose;
  std::string fine;
  for (const auto& file : options_.source.glance.auth.credential_files) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) continue;  // a config given as text, not a file
    if ((st.st_mode & 077) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
      loose += (loose.empty() ? "" : "; ") + file + " (mode " + mode + ")";
      c.fix += (c.fix.empty() ? "chmod 600 " : " ") + file;
    } else {
      fine += (fine.empty() ? "" : ", ") + file;
    }
  }
  if (!loose.empty()) {
    c.warning = true;
    c.detail = "holding a password, secret or token and readable by group or others: " + loose;
    c.fix += " (and keep the owner the user cachemgr runs as)";
  } else {
    c.detail = fine.empty() ? "no secret in a file" : "readable by their owner alone: " + fine;
  }
  return c;
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
  run("locks",
      "make the index folder writable by this user; move out of the lock folders what is "
      "named (the passes pass over those images until then)",
      [&] {
        // (A lock folder that is not a real one of its own stops the open: RequireOwnLockDir.)
        if (::access(lock_dir_.c_str(), W_OK) != 0) {
          throw Error(Errc::kIo, lock_dir_.string() + ": not writable");
        }
        // Files at a lock's name that no lock makes: a pass cannot take that image's lock.
        std::string foreign;
        std::vector<std::filesystem::path> dirs{lock_dir_};
        if (use_lock_dir_ != lock_dir_) dirs.push_back(use_lock_dir_);
        for (const auto& dir : dirs) {
          std::error_code ec;
          for (const auto& file : std::filesystem::directory_iterator(dir, ec)) {
            const std::string name = file.path().filename().string();
            const std::string key = name.substr(0, 40);
            if (!IsEntryName(key) || (name != key + ".lock" && name != key + ".use.lock")) continue;
            struct stat st {};
            if (::lstat(file.path().c_str(), &st) != 0) continue;  // gone meanwhile
            if (S_ISREG(st.st_mode) && st.st_size == 0 && st.st_nlink == 1) continue;
            foreign += (foreign.empty() ? "" : ", ") + file.path().string();
          }
        }
        if (!foreign.empty()) {
          throw Error(Errc::kIo, "not lock files the cache makes, at the names of image locks: " +
                                     foreign);
        }
        return lock_dir_.string() + ": writable";
      });
  run("backend", "check the backend section: ceph.conf, keyring, pool or root", [&] {
    auto n = backend_->List(backend_->entry_pool()).size();
    return backend_kind_ + " " + location_ + ": reachable, " + std::to_string(n) + " image(s)";
  });
  run("readers",
      "make what is named readable by the cache, or move it out of the root: until then no "
      "image is removed, so evictions fail and the trash is not purged",
      [&] {
        const auto unreadable = backend_->UnreadableUsers();
        if (unreadable.empty()) return std::string("every disk that may read an image is readable");
        std::string list;
        for (const auto& u : unreadable) list += (list.empty() ? "" : "; ") + u;
        throw Error(Errc::kBackend,
                    "cannot tell what reads the cache's images: " + std::to_string(unreadable.size()) +
                        " path(s) cannot be read: " + list);
      });
  run("shared tables",
      "move away what is named (the cache's tables are folders or objects of its own, "
      "never links), or restore them from a host that reads them",
      [&] {
        // Every table the hosts share: one that cannot be read stops every pass.
        std::string counts, failures;
        for (const char* table : kSharedTables) {
          try {
            const auto rows = backend_->ReadTable(table).size();
            counts += (counts.empty() ? "" : ", ") + std::string(table) + " " + std::to_string(rows);
          } catch (const Error& e) {
            failures += (failures.empty() ? "" : "; ") + std::string(e.what());
          }
        }
        if (!failures.empty()) throw Error(Errc::kBackend, failures);
        return "readable: " + counts;
      });
  if (auto floor = FloorCheck()) checks.push_back(*floor);  // the free-space floor
  run("hosts", "check that the backend's lock namespace is writable by this client", [&] {
    // The hosts sharing this pool (or root) and the last pass any of them ran.
    const auto totals = ReadTotals();
    std::string hosts;
    for (const auto& [host, at] : totals.hosts) {
      hosts += (hosts.empty() ? "" : ", ") + host + " (last pass " +
               std::to_string(std::max<int64_t>(0, Now() - at)) + " s ago)";
    }
    return "this host is " + host_id_ + "; " +
           (hosts.empty() ? std::string("no eviction pass has run on ") + location_ + " yet"
                          : "hosts that ran passes on " + location_ + ": " + hosts +
                                "; pool-wide " + std::to_string(totals.entries) +
                                " entries at the last pass, by " + totals.host);
  });
  std::string clash;
  try {
    clash = HostIdClash();
  } catch (const std::exception&) {
    // The hosts table cannot be read: the shared tables check above names it.
  }
  if (!clash.empty()) {
    checks.push_back({"host id", true, clash,
                      "give every host sharing the pool its own host_id (cloned machines share "
                      "a hostname): two hosts under one id wait out each other's lock leases "
                      "and mix their records",
                      true});
  }
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
  if (backend_->CanImportInstantly()) {
    run("instant misses",
        "rebuild the volumes named (their bytes are not the image's) and delete them; the "
        "eviction pass forgets a bad entry once none of its volumes exists",
        [&] {
          const auto pending = PendingImports();
          std::string bad_list;
          for (const auto& bad : BadEntries()) {
            std::string volumes;
            for (const auto& v : bad.volumes) volumes += (volumes.empty() ? "" : " ") + v;
            bad_list += (bad_list.empty() ? "" : "; ") + std::string("image ") + bad.image_id +
                        " (" + bad.reason + "): " +
                        (volumes.empty() ? std::string("no volume left (forgotten by the next "
                                                       "pass)")
                                         : "volumes " + volumes);
          }
          const std::string imports =
              std::to_string(pending.size()) +
              " import(s) not finished (any host's pass resumes those of a shared file; the "
              "host that began one through its relay, those of Glance)";
          if (!bad_list.empty()) {
            throw Error(Errc::kCorrupt, "entries found bad after their volumes were made: " +
                                            bad_list + "; " + imports);
          }
          return "no entry found bad; " + imports;
        });
  }
  run("source",
      "check source.glance (endpoint, auth or cloud and its clouds.yaml, token, ca_file) or "
      "source.file.dir",
      [&] { return source_->Ping(); });
  if (options_.source.type == SourceType::kGlance) checks.push_back(SecretFilesCheck());
  run("work dirs", "run `cachemgr evict`: the eviction pass removes dead fills' directories", [&] {
    auto dead = fetch::ListDeadWorkDirs(options_.conversion.dir);
    std::string foreign;
    for (const auto& f : fetch::ListForeignWorkDirs(options_.conversion.dir)) {
      foreign += "; left alone " + f.path.string() + " (" + f.why + ")";
    }
    if (dead.empty()) return options_.conversion.dir + ": no dead fill's working dir" + foreign;
    std::string names;
    for (const auto& d : dead) names += (names.empty() ? "" : ", ") + d.string();
    throw Error(Errc::kIo,
                std::to_string(dead.size()) + " working dir(s) of dead fills: " + names + foreign);
  });
  run("entries", "run `cachemgr evict`: it removes the entries named, to be fetched again", [&] {
    std::string changed;
    size_t n = 0;
    for (const auto& row :
         WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
      // A pinned row is the record of an entry replaced while it had clones: its image is
      // in the trash (or another host's), not at the entry's name.
      if (row.state != index::State::kReady || row.pinned) continue;
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
