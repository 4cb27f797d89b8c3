// The pass's reconcile: this host's index brought in line with the pool (rows of entries
// another host evicted or replaced dropped, entries other hosts made adopted), and last
// uses merged both ways through the pool's `uses` table (shared.cpp).
//
// At 100,000 entries, comparing means listing the pool with each image's identity and
// reading every row: most of an idle pass. Neither changes without a sign: the pool's
// stamp (Backend::PoolStamp) moves when an image is made, removed or renamed on any host,
// and the index's entries version (schema/011) when a row is made, dropped or changes
// name, identity, state or pin. A pass that compared and found nothing to do records
// both ("a look"); the next one that finds the same look skips the comparison. A backend
// that gives no stamp is compared every pass. The gc of leftover objects (gc.cpp)
// keeps its own look the same way. A look is trusted for kLookMaxAge only: a stamp that
// missed a change (a shared root's server clock behind this host's, times coarser than
// the settle time, attributes an NFS client cached) is outlived by the next full compare.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/cache_impl.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "engine/shared_tables.h"
#include "engine/sweep_looks.h"

namespace cachemgr::engine {
namespace {

constexpr auto kReconcileLockWait = std::chrono::milliseconds(200);
// The index's pass state (schema/010): "<Backend::TableStamp of uses> <unix seconds>" of
// the table as this index last merged all of it.
constexpr const char* kUsesStamp = "uses_stamp";
// The look (PoolLook) of the pool and index when the reconcile last found them in step.
constexpr const char* kReconcileLook = "reconcile_look";

using Rows = std::unordered_map<std::string, index::ReconcileRow>;

}  // namespace

std::string CacheImpl::PoolLook() {
  // The index first: a row written after this read moves the version past the look.
  const int64_t version = WithIndex([&](index::Index& ix) { return ix.EntriesVersion(); });
  if (version < 0) {
    log_->warn("index {}: the entries' version (schema 011) is damaged: every pass compares "
               "the pool in full until the index is opened again (the next command, or a "
               "restart of the program that embeds the cache), which repairs it",
               options_.index);
    return "";
  }
  const std::string entries = backend_->PoolStamp(backend_->entry_pool());
  if (entries.empty()) return "";
  std::string look = entries + " " + std::to_string(version);
  if (backend_->volume_pool() != backend_->entry_pool()) {
    const std::string volumes = backend_->PoolStamp(backend_->volume_pool());
    if (volumes.empty()) return "";
    look += " " + volumes;
  }
  return look;
}

// The pass state holds "<look> @<unix seconds when recorded>".
bool CacheImpl::LookUnchanged(const char* key, const std::string& look) {
  if (look.empty()) return false;
  const std::string recorded = WithIndex([&](index::Index& ix) { return ix.GetPassState(key); });
  const auto at = recorded.rfind(" @");
  if (at == std::string::npos || recorded.compare(0, at, look) != 0 || at != look.size()) return false;
  const int64_t age = Now() - LeadingSeconds(recorded.substr(at + 2));
  return age >= 0 && age < kLookMaxAge;
}

void CacheImpl::RecordLook(const char* key, const std::string& look) {
  if (look.empty()) return;
  WithIndex([&](index::Index& ix) { ix.SetPassState(key, look + " @" + std::to_string(Now())); });
}

void CacheImpl::Reconcile(bool dry_run, std::vector<EvictAction>* actions) {
  // A dry run changes nothing, the index included: it plans on this host's view.
  if (dry_run) return;
  // Before any row is read: a use committed after the rows were listed is newer than the
  // merge this pass records, so a later pass that skips the table still tells it.
  const int64_t now = Now();
  const std::string look = PoolLook();
  if (LookUnchanged(kReconcileLook, look)) {
    log_->debug("reconcile: pool and index unchanged since they were last in step");
    ShareLastUses(now, nullptr, nullptr, false);
    return;
  }
  const auto objects = backend_->ListIdentities(backend_->entry_pool());
  // The few columns compared, of every live row (whole rows cost 3x at 100,000).
  auto live_rows = [&] {
    Rows out;
    auto list = WithIndex(
        [&](index::Index& ix) { return ix.ListReconcileRows(backend_kind_, location_); });
    out.reserve(list.size());
    for (auto& row : list) {
      std::string name = row.cache_name;
      out[std::move(name)] = std::move(row);
    }
    return out;
  };
  auto rows = live_rows();
  // Looked up by hash: a search of the ordered listing per row was a fifth of this step.
  std::unordered_map<std::string_view, std::string_view> identity_of;
  identity_of.reserve(objects.size());
  for (const auto& [name, identity] : objects) identity_of.emplace(name, identity);
  bool changed = false;  // rows dropped or adopted: read again below
  bool busy = false;     // an image whose locks were held: looked at again next pass
  size_t named = 0;      // objects a row names (rows' names are distinct)
  // Rows whose object another host evicted (gone) or evicted and filled again (another
  // identity): forgotten, and the object at the name adopted if it is a complete entry.
  // (Not structured bindings: the lambdas below capture `row`, which C++20 allows of a
  // binding only from clang 16.)
  for (const auto& kv : rows) {
    const std::string& name = kv.first;
    const index::ReconcileRow& row = kv.second;
    auto it = identity_of.find(name);
    named += it != identity_of.end();
    if (row.state != index::State::kReady || row.identity.empty()) continue;
    if (it != identity_of.end() && it->second == row.identity) continue;
    try {
      auto locks = PassLockImage(name, kReconcileLockWait);
      auto fresh = WithIndex([&](index::Index& ix) { return ix.GetEntry(row.id); });
      if (!fresh || fresh->pinned || fresh->state != index::State::kReady) continue;
      std::string identity;
      try {
        identity = backend_->Identity(EntryRef(name));
      } catch (const Error& e) {
        if (e.code() != Errc::kNotFound) throw;
      }
      if (identity == fresh->identity) continue;  // listed before it was made
      WithIndex([&](index::Index& ix) { ix.DeleteEntry(fresh->id); });
      changed = true;
      log_->info("entry changed on the backend by another host image={} entry={} now={}",
                 fresh->image_id, name, identity.empty() ? "gone" : "another object");
      if (actions) {
        actions->push_back({"gc", fresh->image_id, name, 0,
                            identity.empty() ? "evicted by another host: record dropped"
                                             : "replaced by another host: record dropped",
                            true});
      }
      if (!identity.empty()) AdoptOrphan(name, nullptr, actions);
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
      busy = true;
    }
  }
  // Entries other hosts made that this index does not know yet (none when a row names
  // every object listed: 100,000 lookups saved).
  const std::map<std::string, std::string> none;
  for (const auto& [name, identity] : named == objects.size() ? none : objects) {
    if (!IsEntryName(name) || rows.count(name)) continue;
    try {
      auto locks = PassLockImage(name, kReconcileLockWait);
      const bool known = NamedByLiveRow(name);  // made meanwhile by this host
      // Only the cache's own: objects that merely look like entries are the gc's to
      // report (once), not this step's.
      if (!known && CheckOwnership(*backend_, EntryRef(name), kMarkEntry, nullptr).ours) {
        AdoptOrphan(name, nullptr, actions);
        changed = true;
      }
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
      busy = true;
    }
  }
  if (changed) {
    rows = live_rows();
  } else if (!busy) {
    RecordLook(kReconcileLook, look);
  }
  ShareLastUses(now, &rows, &objects, changed);
}

void CacheImpl::ShareLastUses(int64_t now, const Rows* listed,
                              const std::map<std::string, std::string>* objects, bool changed) {
  // Last uses: each row takes the pool's latest; the pool learns this host's newer ones.
  // The table unchanged since this index last merged all of it (the stamp it had then,
  // taken before that read): nothing in it is newer than the rows, and only the uses this
  // host made since go to it. The stamp is kept only by a pass that wrote nothing to it.
  // (A stamp is advisory: a change it misses is an older last use, never a lost entry.)
  const std::string stamp = backend_->TableStamp(kUsesTable);
  const auto merged = Words(WithIndex([&](index::Index& ix) { return ix.GetPassState(kUsesStamp); }));
  // Rows adopted or dropped: the adopted ones take their last use from the table.
  const bool unchanged = !changed && !stamp.empty() && merged.size() == 2 && merged[0] == stamp;
  const int64_t merged_at = unchanged ? LeadingSeconds(merged[1]) : 0;
  std::map<std::string, std::string> tell;
  std::vector<std::string> forget;
  std::vector<int64_t> told;
  if (unchanged) {
    // Used since that merge (a use in the same second as it counts as since): read by the
    // LRU index, not every row.
    for (const auto& row : WithIndex([&](index::Index& ix) {
           return ix.ListUsedSince(backend_kind_, location_, merged_at);
         })) {
      tell[row.cache_name] = std::to_string(row.last_used) + " " + host_id_;
      told.push_back(row.id);
    }
  } else {
    Rows read;
    if (!listed) {
      for (auto& row : WithIndex(
               [&](index::Index& ix) { return ix.ListReconcileRows(backend_kind_, location_); })) {
        std::string name = row.cache_name;
        read[std::move(name)] = std::move(row);
      }
    }
    const Rows& rows = listed ? *listed : read;
    const auto uses = backend_->ReadTable(kUsesTable);
    for (const auto& kv : rows) {
      const std::string& name = kv.first;
      const index::ReconcileRow& row = kv.second;
      auto it = uses.find(name);
      const int64_t shared = it == uses.end() ? 0 : LeadingSeconds(it->second);
      if (shared > row.last_used) {
        WithIndex([&](index::Index& ix) { ix.MergeLastUsed(row.id, std::min(shared, now)); });
      } else if (row.last_used > shared && row.state == index::State::kReady) {
        tell[name] = std::to_string(row.last_used) + " " + host_id_;
        told.push_back(row.id);
      }
    }
    // Uses of names neither listed in the pool nor known here: forgotten. Only with the
    // pool listed; a pass that skipped the listing leaves them to the next that lists.
    if (objects) {
      for (const auto& [name, value] : uses) {
        if (!objects->count(name) && !rows.count(name)) forget.push_back(name);
      }
    }
  }
  backend_->WriteTable(kUsesTable, tell, forget);
  WithIndex([&](index::Index& ix) {
    for (int64_t id : told) ix.SetShared(id, now);
    if (!tell.empty() || !forget.empty() || stamp.empty()) {
      ix.SetPassState(kUsesStamp, "");  // this pass's own write changed it
    } else if (!unchanged) {
      ix.SetPassState(kUsesStamp, stamp + " " + std::to_string(now));
    }
  });
}

}  // namespace cachemgr::engine
