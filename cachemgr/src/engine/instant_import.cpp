// The end of an instant miss's import (instant.cpp makes the entry): every byte not
// copied yet is copied (rbd migration execute) while the image's file is hashed, the
// bytes are judged against the image's digests, and the import is committed. A bad
// verdict marks the entry bad everywhere (its metadata, the pool's `bad` record with the
// volumes made from it), and the entry is evicted so that the next create refills.
//
// Order, for a kill at any point: the verdict is written into the pool's import record
// before the commit, and the record is erased only after the verdict is applied, so a
// run killed anywhere is finished by the next one (any host's pass) from what it left.
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "convert/format.h"
#include "engine/cache_impl.h"
#include "engine/failpoints.h"
#include "engine/instant_judge.h"
#include "engine/instant_qcow2.h"
#include "engine/instant_records.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "util/hash.h"

namespace cachemgr::engine {

namespace {

using json = nlohmann::json;
constexpr const char* kImportLockSuffix = ".import";

}  // namespace

ImportResult CacheImpl::FinishImport(const std::string& image_id, const ProgressFn& progress) {
  return FinishImport(image_id, progress, /*drain_here=*/true);
}

ImportResult CacheImpl::FinishImport(const std::string& image_id, const ProgressFn& progress,
                                     bool drain_here) {
  ValidateImageId(image_id);
  const Stopwatch timer;
  ImportResult result;
  result.image_id = image_id;
  if (!backend_->CanImportInstantly()) return result;
  const std::string name = EntryName(image_id);
  const auto ref = EntryRef(name);
  // Glance through the relay: served before anything opens the entry (an open reads the
  // import's source), and before the run's lock is taken, so that only a process that can
  // serve it (on the host of its address, where no other process serves it) ever holds it.
  bool served_now = false;
  auto read_record = [&]() -> std::optional<ImportRecord> {
    auto table = backend_->ReadTable(kImportsTable);
    auto it = table.find(name);
    if (it == table.end()) return std::nullopt;
    auto parsed = ImportRecord::Parse(it->second);
    if (!parsed || parsed->image_id != image_id) {
      log_->warn("import record not understood, dropped entry={}", name);
      backend_->WriteTable(kImportsTable, {}, {name});
      return std::nullopt;
    }
    return parsed;
  };
  auto rec = read_record();
  if (!rec) return result;
  source::RelayUrl relay_url;
  const bool relayed = source::ParseRelayUrl(rec->path, &relay_url);
  if (relayed) {
    try {
      served_now = ServeRelayed(image_id, rec->path, rec->size);
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
      result.outcome = ImportOutcome::kBusy;
      result.detail = e.what();
      return result;
    }
  }
  std::unique_ptr<storage::Lock> run;
  try {
    run = backend_->AcquireLock(name + kImportLockSuffix, std::chrono::milliseconds(0));
  } catch (const Error& e) {
    if (e.code() != Errc::kBusy) throw;
    if (served_now) ForgetRelayed(image_id);
    result.outcome = ImportOutcome::kBusy;
    result.detail = e.what();
    return result;
  }
  rec = read_record();  // as it is now that the run is ours
  if (!rec) {
    if (served_now) ForgetRelayed(image_id);
    return result;
  }
  if (!CheckOwnership(*backend_, ref, kMarkEntry, &rec->identity).ours) {
    // Written before the rename: a fill holding the image's locks may yet rename it.
    try {
      auto locks = PassLockImage(name, std::chrono::milliseconds(0));
      if (!CheckOwnership(*backend_, ref, kMarkEntry, &rec->identity).ours) {
        log_->info("import record of an entry that is gone, dropped image={}", image_id);
        backend_->WriteTable(kImportsTable, {}, {name});
        if (relayed) ForgetRelayed(image_id);
      }
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
      result.outcome = ImportOutcome::kBusy;
      result.detail = "its fill is still running";
    }
    return result;
  }
  using State = storage::Backend::ImportState;
  State state = backend_->ImportStatus(ref);
  if (state == State::kOther) {
    throw Error(Errc::kBackend, "entry of image " + image_id + " (" + name +
                                    "): its import is in a state this cache does not resume; "
                                    "`rbd status` on it tells");
  }
  if (rec->verdict.empty()) {
    const bool execute = state == State::kPrepared || state == State::kExecuting;
    log_->info("import running image={} entry={} state={}", image_id, name,
               execute ? "copying" : "copied");
    auto map = [&] {
      return convert::MapPlainQcow2(rec->path, backend_->Stat(ref).size, image_id,
                                    options_.conversion, log_);
    };
    Failpoint("import_before_copy");
    Judged judged;
    const std::function<void()> copy =
        execute ? std::function<void()>([&] { backend_->ExecuteImport(ref, {}); }) : nullptr;
    if (relayed) {
      try {
        if (rec->format == "qcow2") {
          judged = BesideExecute(copy, [&] {
            return JudgeRelayedQcow2(*source_, *rec, progress, options_.conversion, log_);
          });
        } else {
          if (copy) copy();
          judged = JudgeEntry(*backend_, ref, *rec, progress);
        }
      } catch (const Error& e) {
        // Glance no longer serving the image it described is final: judged bad, not
        // retried by every pass; anything else (unreachable) is left to the next one.
        auto gone = RelayedSourceGone(*rec);
        if (!gone) {
          throw Error(e.code(), std::string(e.what()) + " (image " + image_id +
                                    ": its bytes come from Glance through the relay; the next "
                                    "`cachemgr evict` on this host resumes it)");
        }
        judged.verdict = "bad";
        judged.reason = *gone;
      }
    } else {
      judged = BesideExecute(copy, [&] { return JudgeFile(*source_, *rec, progress, map); });
    }
    rec->verdict = judged.verdict;
    rec->reason = judged.reason;
    rec->md5 = judged.md5;
    rec->sha512 = judged.sha512;
    rec->guest_md5 = judged.guest_md5;
    backend_->WriteTable(kImportsTable, {{name, rec->Dump()}});
    Failpoint("import_after_verdict");
  }
  const State before_commit = backend_->ImportStatus(ref);
  // A bad verdict on an import never copied whole (Glance lost the image): there is nothing
  // to commit. Its volumes are named bad below; the entry goes by aborting the import once
  // none of them is left (until then every pass comes back here).
  const bool uncopied =
      rec->verdict == "bad" && before_commit != State::kExecuted && before_commit != State::kNone;
  if (!uncopied && before_commit != State::kNone) backend_->CommitImport(ref);
  Failpoint("import_after_commit");
  result.bytes = backend_->Stat(ref).size;
  // What librbd copied is what the entry holds now, whatever the path named while it read
  // (a directory swapped under it): it must be the bytes of the file judged above.
  // A relayed raw image was judged on these very bytes; a relayed qcow2 on its file.
  if (rec->verdict == "ok" && (!relayed || rec->format == "qcow2")) {
    // (A record written before the disk's digest was sha256 holds an md5.)
    const std::string algo = rec->guest_md5.size() == 32 ? "md5" : kGuestAlgo;
    const std::string held = EntryDigest(*backend_, ref, algo);
    if (!util::SameDigest(held, rec->guest_md5)) {
      rec->verdict = "bad";
      rec->reason = "the entry holds other bytes (" + algo + " " + held +
                    ") than the file checked (" + algo + " " + rec->guest_md5 + "): " +
                    (relayed ? std::string("Glance served the import other bytes than the check")
                             : "the path " + rec->path + " named another file while it was imported");
    }
  }
  if (rec->verdict == "ok") {
    const bool own_digests = rec->checksum.empty() && rec->os_hash_value.empty();
    if (own_digests && !rec->md5.empty()) {
      backend_->SetMetadata(ref, kMetaChecksum, rec->md5);
      backend_->SetMetadata(ref, kMetaOsHash, "sha512:" + rec->sha512);
    }
    if (auto row = FindLive(image_id); row && row->identity == rec->identity) {
      if (own_digests && !rec->md5.empty()) {
        row->checksum = rec->md5;
        row->os_hash = "sha512:" + rec->sha512;
      }
      row->allocated_bytes = backend_->AllocatedBytes(ref);
      WithIndex([&](index::Index& ix) { ix.UpdateEntry(*row); });
    }
    backend_->WriteTable(kImportsTable, {}, {name});
    if (relayed) {
      auto volumes = backend_->Children({ref, kSnapName});
      if (drain_here) {
        DrainRelayed(image_id, volumes);
      } else {
        std::lock_guard lock(relay_mu_);
        deferred_drains_.emplace_back(image_id, std::move(volumes));
      }
    }
    result.outcome = ImportOutcome::kCommitted;
    result.detail = rec->reason;
    result.elapsed = timer.Elapsed();
    Event("import", image_id, result.bytes, result.elapsed);
    log_->info("import committed image={} entry={} bytes={} ms={}", image_id, name, result.bytes,
               result.elapsed.count() / 1000);
    return result;
  }

  // Bad: no volume is made from it any more, and those made are named everywhere.
  BadRecord bad;
  bad.image_id = image_id;
  bad.entry = name;
  bad.reason = rec->reason;
  bad.file_identity = rec->file_identity;
  bad.at = Now();
  for (const auto& child : backend_->Children({ref, kSnapName})) bad.volumes.push_back(child.name);
  backend_->SetMetadata(ref, kMetaBad, rec->reason);
  backend_->WriteTable(kBadTable, {{Sha1Hex(rec->identity), bad.Dump()}});
  backend_->WriteTable(kBadFilesTable, {{Sha1Hex(image_id), rec->file_identity}});
  // An import that cannot be committed keeps its record until its entry is gone: the entry
  // can neither be removed nor aborted under volumes, and only the record lets a pass serve
  // the relay an abort needs. With no volume left it is aborted here (a kill before the
  // record goes finds an entry that is gone, and drops the record).
  const bool keep_record = uncopied && !bad.volumes.empty();
  if (uncopied && bad.volumes.empty()) {
    backend_->AbortImport(ref);
    backend_->WriteTable(kImportsTable, {}, {name});
    if (auto row = FindLive(image_id); row && row->identity == rec->identity) {
      WithIndex([&](index::Index& ix) { ix.DeleteEntry(row->id); });
    }
  } else if (!uncopied) {
    backend_->WriteTable(kImportsTable, {}, {name});
  }
  std::string listed;
  for (const auto& v : bad.volumes) listed += (listed.empty() ? "" : ",") + v;
  log_->error(
      "instant miss imported bytes that are not the image's: entry marked bad and "
      "evicted image={} reason=\"{}\" volumes={}",
      image_id, rec->reason, listed.empty() ? "none" : listed);
  Event("bad", image_id, result.bytes, timer.Elapsed());
  // Evicted here when it can be; else (busy, or another host's row) every host's hits
  // refuse it (UsableRow) and its pass evicts it.
  bool evicted = false;
  if (auto row = FindLive(image_id); !uncopied && row && row->identity == rec->identity) {
    evicted = EvictEntry(*row, "bad", rec->reason, /*locked=*/false).done;
  }
  if (relayed && !keep_record) ForgetRelayed(image_id);
  result.outcome = ImportOutcome::kBad;
  result.detail = rec->reason + (evicted || (uncopied && !keep_record) ? ""
                                 : keep_record ? "; the entry goes once its volumes are deleted"
                                               : "; its eviction is left to the next pass");
  result.volumes = bad.volumes;
  result.elapsed = timer.Elapsed();
  return result;
}

void CacheImpl::RefreshDigests(index::EntryRow* row) {
  if (!row->checksum.empty() || !row->os_hash.empty() || !backend_->CanImportInstantly()) return;
  try {
    const auto md = backend_->GetMetadata(EntryRef(row->cache_name));
    auto get = [&](const char* key) {
      auto it = md.find(key);
      return it == md.end() ? std::string() : it->second;
    };
    if (get(kMetaChecksum).empty() && get(kMetaOsHash).empty()) return;
    row->checksum = get(kMetaChecksum);
    row->os_hash = get(kMetaOsHash);
    WithIndex([&](index::Index& ix) { ix.UpdateEntry(*row); });
  } catch (const Error& e) {
    log_->debug("digests not refreshed image={} error={}", row->image_id, e.what());
  }
}

std::optional<index::EntryRow> CacheImpl::UsableRow(const std::string& image_id) {
  auto row = FindLive(image_id);
  if (!row || row->state != index::State::kReady || !InstantWanted()) return row;
  RefreshDigests(&*row);
  const auto bad = backend_->ReadTable(kBadTable);
  auto it = bad.find(Sha1Hex(row->identity));
  if (it == bad.end()) return row;
  // Found bad by an import (maybe another host's): never cloned again, and gone now if it can.
  log_->warn("entry found bad by its import is not used image={}", image_id);
  auto rec = BadRecord::Parse(it->second);
  if (!EvictEntry(*row, "bad", rec ? rec->reason : "found bad", /*locked=*/false).done) {
    throw Error(Errc::kBusy, "image " + image_id +
                                 ": its entry was found bad and is being "
                                 "evicted; try again");
  }
  return std::nullopt;
}

void CacheImpl::StartImportThread(const std::string& image_id) {
  std::lock_guard lock(imports_mu_);
  import_threads_.emplace_back([this, image_id] {
    ImportResult r;
    r.image_id = image_id;
    try {
      r = FinishImport(image_id, {});
    } catch (const std::exception& e) {
      log_->error(
          "import of an instant miss failed; the next eviction pass resumes it image={} "
          "error=\"{}\"",
          image_id, e.what());
      r.detail = e.what();
    }
    std::lock_guard done(imports_mu_);
    import_results_.push_back(std::move(r));
  });
}

std::vector<ImportResult> CacheImpl::WaitForImports() {
  while (true) {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(imports_mu_);
      threads.swap(import_threads_);
    }
    if (threads.empty()) break;
    for (auto& t : threads) t.join();
  }
  std::lock_guard lock(imports_mu_);
  return std::exchange(import_results_, {});
}

void CacheImpl::ResumeImports(bool dry_run, std::vector<EvictAction>* actions) {
  if (!backend_->CanImportInstantly()) return;
  SweepRelayRecords(dry_run);
  for (const auto& [name, image_id] : PendingImports()) {
    EvictAction action{"import", image_id, name, 0, "instant miss's import to finish", false};
    if (!dry_run && !image_id.empty()) {
      try {
        auto r = FinishImport(image_id, {}, /*drain_here=*/false);
        if (r.outcome == ImportOutcome::kBusy) {
          log_->info("import left to the process running it image={} ({})", image_id, r.detail);
          continue;
        }
        action.reason = r.outcome == ImportOutcome::kNone
                            ? "import record of an entry that is gone: dropped"
                            : "import " + std::string(ImportOutcomeName(r.outcome)) +
                                  (r.detail.empty() ? "" : ": " + r.detail);
        action.bytes = r.bytes;
        action.done = true;
      } catch (const Error& e) {
        action.reason += std::string("; failed: ") + e.what();
        log_->error("import not finished image={} error=\"{}\"", image_id, e.what());
      }
    }
    if (actions) actions->push_back(action);
  }
  // Bad entries are named until none of their volumes exists.
  for (const auto& [key, value] : backend_->ReadTable(kBadTable)) {
    auto rec = BadRecord::Parse(value);
    if (!rec) continue;
    std::vector<std::string> left;
    for (const auto& v : rec->volumes) {
      if (backend_->Exists({backend_->volume_pool(), v})) left.push_back(v);
    }
    // Its entry, where a host's row still names it, goes too.
    for (const auto& row :
         WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); })) {
      if (!dry_run && !row.pinned && row.state == index::State::kReady &&
          row.image_id == rec->image_id && Sha1Hex(row.identity) == key) {
        auto a = EvictEntry(row, "bad", rec->reason, /*locked=*/false);
        if (actions) actions->push_back(a);
      }
    }
    if ((left.size() == rec->volumes.size() && !left.empty()) || dry_run) continue;
    if (left.empty()) {
      backend_->WriteTable(kBadTable, {}, {key});
    } else {
      rec->volumes = left;
      backend_->WriteTable(kBadTable, {{key, rec->Dump()}});
    }
  }
}

}  // namespace cachemgr::engine
