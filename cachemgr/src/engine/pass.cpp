// The periodic eviction pass, as its steps: gc of what dead work left, purge of deferred
// entries, the source check (stale and gone entries), the pool's limits, and the
// flatten step (flatten.cpp: clones of pinned entries, and old volumes).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <map>

#include "engine/cache_impl.h"
#include "engine/eviction_steps.h"
#include "engine/failpoints.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "engine/sweep_looks.h"
#include "fetch/workdir.h"

namespace cachemgr::engine {
namespace {

// The index's pass state: the sweep's clean folders (sweep_looks.h).
constexpr const char* kSweepLooks = "sweep_looks";

}  // namespace

EvictReport CacheImpl::RunEvictionPass(const EvictOptions& options) {
  const Stopwatch timer;
  auto pass_lock = FileLock::Acquire(lock_dir_ / kHostPassLockFile, std::chrono::milliseconds(0),
                                     "eviction pass");
  // One pass per pool across every host that shares it (a RADOS lock with a lease on RBD:
  // a killed host's lock runs out by itself).
  auto pool_pass_lock = LockPass(std::chrono::milliseconds(0));
  Failpoint(kPassLockedFailpoint);
  EvictReport report;
  const auto before = MeasureEntries();
  report.entries_before = before.count;
  report.bytes_before = before.bytes;

  // Each step's time goes to the debug log: at 100k entries, which step costs what.
  auto step = [&](const char* name, auto&& fn) {
    const Stopwatch step_timer;
    fn();
    log_->debug("eviction pass step={} ms={:.1f}", name,
                static_cast<double>(step_timer.Elapsed().count()) / 1000.0);
  };
  const bool dry = options.dry_run;
  auto* actions = &report.actions;
  // Imports through a relay whose process died: served again (where this host can) before
  // any step opens their objects, since an open reads the import's source.
  std::vector<std::string> relayed_here;
  step("relays", [&] { relayed_here = ServePendingRelays(); });
  // Whatever the steps do, the drains the imports step left still run, with the locks
  // let go, and relays served for this pass alone stop (the pass's own imports forget
  // theirs as they end).
  bool finished = false;
  auto after_pass = [&] {
    pool_pass_lock.reset();
    pass_lock.reset();
    DrainDeferredRelays();
    for (const auto& id : relayed_here) {
      if (!ImportPending(EntryName(id))) ForgetRelayed(id);
    }
  };
  struct AfterPass {
    std::function<void()> fn;
    const bool* finished;
    ~AfterPass() {
      if (!*finished) {
        try {
          fn();
        } catch (...) {  // the step's own error is the one reported
        }
      }
    }
  } on_unwind{after_pass, &finished};
  step("gc_leftovers", [&] { GcLeftovers(dry, actions); });
  step("gc_volumes", [&] { GcVolumes(dry, actions); });
  step("sweep_lock_files", [&] { SweepLockFiles(dry); });
  step("sweep_dead_files", [&] { SweepDeadFiles(dry, actions); });
  step("purge_deferred", [&] { PurgeDeferred(dry, actions); });
  step("imports", [&] { ResumeImports(dry, actions); });

  const uint64_t requests_before = source_->Requests();
  if (options.check_source) step("check_source", [&] { CheckSourceForEntries(dry, actions); });

  // The limits and the LRU order are the pool's: every entry any host made, each with its
  // last use by any host.
  step("reconcile", [&] { Reconcile(dry, actions); });
  step("enforce_limits", [&] { EnforceLimits(std::nullopt, 0, dry, actions); });

  step("flatten", [&] { FlattenStep(options, dry, actions); });

  const auto after = MeasureEntries();
  report.entries_after = after.count;
  report.bytes_after = after.bytes;
  report.pinned_bytes = after.pinned_bytes;
  if (!options.dry_run) {
    uint64_t left_alone = 0;
    for (const auto& a : report.actions) left_alone += a.kind == "left alone";
    Event(kEventLeftAlone, "", left_alone, {});
    PruneEvents();
    PublishTotals(report);
  }
  report.source_requests = source_->Requests() - requests_before;
  // The lock object goes with the pass (a waiter makes a new one): a pool keeps no lock
  // objects between passes.
  pool_pass_lock->Discard();
  // A resumed relayed import's relay keeps serving the volumes opened before its commit,
  // with the pass's locks let go: the next pass (any host) need not wait for those VMs.
  finished = true;
  after_pass();
  report.elapsed = timer.Elapsed();
  log_->info("eviction pass actions={} entries={} bytes={} pinned={} source_requests={} ms={}",
             report.actions.size(), report.entries_after, report.bytes_after, report.pinned_bytes,
             report.source_requests, report.elapsed.count() / 1000);
  return report;
}

CacheImpl::EntryTotals CacheImpl::MeasureEntries() {
  // One aggregate, not every row read: the pass measures twice.
  const auto sums = WithIndex(
      [&](index::Index& ix) { return ix.ReadyAndPinnedTotals(backend_kind_, location_); });
  const bool allocated = options_.cache.size_accounting == SizeAccounting::kAllocated;
  EntryTotals totals;
  totals.count = sums.ready.count;
  totals.bytes = allocated ? sums.ready.allocated_bytes : sums.ready.virtual_bytes;
  totals.pinned_bytes = allocated ? sums.pinned.allocated_bytes : sums.pinned.virtual_bytes;
  return totals;
}

void CacheImpl::SweepDeadFiles(bool dry_run, std::vector<EvictAction>* actions) {
  // Folders the last sweeps found clean and that have not changed since are not listed
  // again (sweep_looks.h): at 100,000 entries a pool's folders and the table of last
  // uses are most of an idle pass. A dry run uses them but records nothing.
  const int64_t now = Now();
  const std::string stored =
      WithIndex([&](index::Index& ix) { return ix.GetPassState(kSweepLooks); });
  storage::SweepLooks looks = LooksToTrust(stored, now, kLookMaxAge);
  const auto dead = backend_->SweepTemporaries(dry_run, &looks);
  if (!dry_run) {
    // Advisory: a look not kept costs the next pass a listing, never the pass.
    try {
      const std::string keep = LooksToStore(stored, looks, now, kLookMaxAge);
      if (keep != stored) WithIndex([&](index::Index& ix) { ix.SetPassState(kSweepLooks, keep); });
    } catch (const std::exception& e) {
      log_->warn("sweep's clean folders not recorded error={}", e.what());
    }
  }
  for (const auto& l : dead) {
    actions->push_back({"gc", "", l.path, l.bytes, "temporary of a writer that died", l.removed});
    if (l.removed) log_->info("removed temporary path={} bytes={}", l.path, l.bytes);
  }
  std::vector<fetch::LeftAlone> left_alone;
  for (const auto& dir :
       fetch::SweepWorkDirs(options_.conversion.dir, dry_run, log_, &left_alone)) {
    actions->push_back({"gc", "", dir.string(), 0, "working dir of a fill that died", !dry_run});
  }
  for (const auto& l : left_alone) {
    actions->push_back({"left alone", "", l.path.string(), 0, l.why, true});
  }
}

void CacheImpl::CheckSourceForEntries(bool dry_run, std::vector<EvictAction>* actions) {
  auto rows = WithIndex([&](index::Index& ix) { return ix.ListEntries(backend_kind_, location_); });
  const bool any = std::any_of(rows.begin(), rows.end(), [](const index::EntryRow& r) {
    return !r.pinned && r.state == index::State::kReady;
  });
  bool listing_failed = false;
  const auto listed =
      any ? ListSourceForCheck(&listing_failed) : std::map<std::string, source::ImageMeta>{};
  std::vector<Victim> victims;
  for (const auto& row : rows) {
    if (row.pinned || row.state != index::State::kReady) continue;
    const auto verdict = JudgeBySource(row, listed, listing_failed);
    if (verdict.kind.empty()) continue;
    if (dry_run) {
      actions->push_back(
          {verdict.kind, row.image_id, row.cache_name, AccountedBytes(row), verdict.reason, false});
    } else {
      victims.push_back({row, verdict.kind, verdict.reason});
    }
  }
  for (auto& action : EvictEntries(victims)) actions->push_back(std::move(action));
}

std::map<std::string, source::ImageMeta> CacheImpl::ListSourceForCheck(bool* failed) {
  // One listing answers for every entry (a few pages, not a GET per entry); an image it
  // does not show is asked about alone, which tells gone from hidden.
  std::map<std::string, source::ImageMeta> listed;
  try {
    if (auto all = source_->ListForCheck()) {
      for (auto& m : *all) {
        std::string id = m.id;
        listed.emplace(std::move(id), std::move(m));
      }
    }
  } catch (const Error& e) {
    *failed = true;
    log_->warn("source list failed, asking per entry error={}", e.what());
  }
  return listed;
}

CacheImpl::Verdict CacheImpl::JudgeBySource(const index::EntryRow& row,
                                            const std::map<std::string, source::ImageMeta>& listed,
                                            bool listing_failed) {
  Verdict verdict;
  try {
    backend_->RequireIntact(EntryRef(row.cache_name));
    auto it = listed.find(row.image_id);
    auto meta = it != listed.end() ? it->second : source_->Describe(row.image_id);
    if (meta.status == "deleted" || meta.status == "killed" || meta.status == "pending_delete") {
      verdict = {"gone", "source status " + meta.status};
    } else if (IsStale(row, meta)) {
      verdict = {"stale", "source checksum or updated_at changed"};
    }
  } catch (const Error& e) {
    if (e.code() == Errc::kNotFound && listing_failed) {
      // A source whose listing failed may be mis-addressed (every answer a 404): an
      // entry is called gone only by a source that can list its images.
      log_->warn("source check skipped image={} error=\"{}\" (the listing failed too)",
                 row.image_id, e.what());
    } else if (e.code() == Errc::kNotFound) {
      verdict = {"gone", "image no longer in the source"};
    } else if (e.code() == Errc::kCorrupt) {
      verdict = {"stale", e.what()};  // refused as it is; fetched again on the next miss
    } else {
      log_->warn("source check skipped image={} error={}", row.image_id, e.what());
    }
  }
  return verdict;
}

void CacheImpl::FlattenOldVolumes(std::chrono::seconds older_than, bool dry_run,
                                  std::vector<EvictAction>* actions) {
  const int64_t cutoff = Now() - older_than.count();
  for (auto v : WithIndex([&](index::Index& ix) { return ix.ListVolumes(); })) {
    if (v.pool != backend_->volume_pool() || v.state != index::State::kReady || v.flattened ||
        v.depth == 0 || v.created_at > cutoff) {
      continue;
    }
    EvictAction action{"flatten", v.image_id, v.name, v.size_bytes, "older than cutoff", false};
    if (!dry_run) FlattenVolume(v, &action);
    actions->push_back(action);
  }
}

}  // namespace cachemgr::engine
