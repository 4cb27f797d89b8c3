// What the hosts sharing one pool (or one local root) keep on the backend so that they
// act as one cache, and how this host's index is reconciled with it.
//
// The backend holds the truth: an entry is its image (complete metadata, mark and
// protected snapshot); the index only remembers it. Beside the images, small tables
// (Backend::ReadTable/WriteTable) hold what no image can:
//   uses      entry name -> "<unix seconds> <host>": the entry's last use by any host,
//             written by a hit at most once per cache.share_use_interval_s (a
//             minute by default) per host: coarse on purpose.
//   deferred  sha1(identity) -> "<entry name> <identity> <image id> <bytes>": entries
//             evicted while clones still read them, kept in the trash until any host's
//             pass finds their clones gone and purges them.
//   totals    the last pass's pool-wide figures (entries, bytes, pinned_bytes, at, host).
//   fills     staging name -> "<unix seconds> <host>": fills in progress, recorded before
//             their staging object is made; a dead host's staging object is the cache's by
//             this record (it carries no mark until its fetch ends), and any pass removes it.
//   hosts     host id -> "<unix seconds> <what>": when each host last ran a pass.
// Only one pass runs per pool at a time (the backend lock "eviction-pass", a RADOS lock
// with a lease on RBD): before it enforces the limits it reconciles, so the limits and
// the LRU order are the pool's, not this host's.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

#include "engine/cache_impl.h"
#include "engine/marks.h"
#include "engine/naming.h"
#include "engine/shared_tables.h"

namespace cachemgr::engine {

namespace {
constexpr const char* kUses = kUsesTable;
constexpr const char* kDeferred = kDeferredTable;
constexpr const char* kTotals = kTotalsTable;
constexpr const char* kHosts = kHostsTable;
constexpr const char* kFills = kFillsTable;
constexpr const char* kPassLock = "eviction-pass";
constexpr auto kReconcileLockWait = std::chrono::milliseconds(200);
// The index's pass state (schema/010): "<Backend::TableStamp of uses> <unix seconds>" of
// the table as this index last merged all of it.
constexpr const char* kUsesStamp = "uses_stamp";

int64_t LeadingSeconds(const std::string& value) {
  try {
    return std::stoll(value);
  } catch (const std::exception&) {
    return 0;
  }
}

// What tells machines apart when two use one host id: /etc/machine-id, else the boot id.
std::string MachineId() {
  for (const char* path : {"/etc/machine-id", "/proc/sys/kernel/random/boot_id"}) {
    std::ifstream in(path);
    std::string id;
    if (std::getline(in, id) && !id.empty()) {
      id.erase(std::remove(id.begin(), id.end(), '-'), id.end());
      return id;
    }
  }
  return "unknown";
}

std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}
}  // namespace

std::unique_ptr<storage::Lock> CacheImpl::LockPass(std::chrono::milliseconds wait) {
  try {
    return backend_->AcquireLock(kPassLock, wait);
  } catch (const Error& e) {
    if (e.code() != Errc::kBusy) throw;
    // The holder may be on this host too (a miss runs a pass when the cache is full).
    throw Error(Errc::kBusy, "eviction pass: another pass holds the lock of " + location_ + " (" +
                                 e.what() +
                                 "); one pass runs at a time per pool, on any host: try "
                                 "again later");
  }
}

void CacheImpl::ShareUse(const index::EntryRow& row, int64_t now) {
  const int64_t every = options_.cache.share_use_interval_s;
  if (row.shared_at != 0 && now >= row.shared_at && now - row.shared_at < every) {
    return;
  }
  try {
    backend_->WriteTable(kUses, {{row.cache_name, std::to_string(now) + " " + host_id_}});
    WithIndex([&](index::Index& ix) { ix.SetShared(row.id, now); });
  } catch (const Error& e) {
    // Advisory: the pool's LRU order is a little older, the volume is made all the same.
    log_->warn("entry use not shared with the other hosts entry={} error={}", row.cache_name,
               e.what());
  }
}

void CacheImpl::ShareDeferred(const index::EntryRow& row, uint64_t bytes) {
  if (row.identity.empty()) return;
  backend_->WriteTable(kDeferred, {{Sha1Hex(row.identity), row.cache_name + " " + row.identity +
                                                               " " + row.image_id + " " +
                                                               std::to_string(bytes)}});
}

void CacheImpl::ShareFill(const std::string& staging, bool started) {
  if (started) {
    // Before the object exists: without the record a dead fill's object is no one's.
    backend_->WriteTable(kFills, {{staging, std::to_string(Now()) + " " + host_id_}});
    return;
  }
  try {
    backend_->WriteTable(kFills, {}, {staging});
  } catch (const Error& e) {
    log_->warn("fill record not removed (the pass removes it) staging={} error={}", staging,
               e.what());
  }
}

std::map<std::string, std::string> CacheImpl::SharedFills() { return backend_->ReadTable(kFills); }

void CacheImpl::ForgetFill(const std::string& staging) {
  backend_->WriteTable(kFills, {}, {staging});
}

std::map<std::string, std::string> CacheImpl::SharedDeferred() {
  return backend_->ReadTable(kDeferred);
}

void CacheImpl::ForgetDeferred(const std::string& identity) {
  backend_->WriteTable(kDeferred, {}, {Sha1Hex(identity)});
}

void CacheImpl::Reconcile(bool dry_run, std::vector<EvictAction>* actions) {
  // Before any row is read: a use committed after the rows were listed is newer than the
  // merge this pass records, so a later pass that skips the table still tells it.
  const int64_t now = Now();
  const auto objects = backend_->ListIdentities(backend_->entry_pool());
  // The few columns compared, of every live row (whole rows cost 3x at 100,000).
  auto live_rows = [&] {
    std::unordered_map<std::string, index::ReconcileRow> out;
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
  bool changed = false;  // rows dropped or adopted: read again below
  if (!dry_run) {
    // Rows whose object another host evicted (gone) or evicted and filled again (another
    // identity): forgotten, and the object at the name adopted if it is a complete entry.
    // (Not structured bindings: the lambdas below capture `row`, which C++20 allows of a
    // binding only from clang 16.)
    for (const auto& kv : rows) {
      const std::string& name = kv.first;
      const index::ReconcileRow& row = kv.second;
      if (row.state != index::State::kReady || row.identity.empty()) continue;
      auto it = objects.find(name);
      if (it != objects.end() && it->second == row.identity) continue;
      try {
        auto locks = PassLockImage(name, kReconcileLockWait);
        auto now = WithIndex([&](index::Index& ix) { return ix.GetEntry(row.id); });
        if (!now || now->pinned || now->state != index::State::kReady) continue;
        std::string identity;
        try {
          identity = backend_->Identity(EntryRef(name));
        } catch (const Error& e) {
          if (e.code() != Errc::kNotFound) throw;
        }
        if (identity == now->identity) continue;  // listed before it was made
        WithIndex([&](index::Index& ix) { ix.DeleteEntry(now->id); });
        changed = true;
        log_->info("entry changed on the backend by another host image={} entry={} now={}",
                   now->image_id, name, identity.empty() ? "gone" : "another object");
        if (actions) {
          actions->push_back({"gc", now->image_id, name, 0,
                              identity.empty() ? "evicted by another host: record dropped"
                                               : "replaced by another host: record dropped",
                              true});
        }
        if (!identity.empty()) AdoptOrphan(name, nullptr, actions);
      } catch (const Error& e) {
        if (e.code() != Errc::kBusy) throw;
      }
    }
    // Entries other hosts made that this index does not know yet.
    for (const auto& [name, identity] : objects) {
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
      }
    }
    if (changed) rows = live_rows();
  }

  // Last uses: each row takes the pool's latest; the pool learns this host's newer ones.
  // A dry run changes nothing, the index included: it plans on this host's view.
  if (dry_run) return;
  // The table unchanged since this index last merged all of it (the stamp it had then,
  // taken before that read): nothing in it is newer than the rows, and only the uses this
  // host made since go to it. The stamp is kept only by a pass that wrote nothing to it.
  // (A stamp is advisory: a change it misses is an older last use, never a lost entry.)
  const std::string stamp = backend_->TableStamp(kUses);
  const auto merged = Words(WithIndex([&](index::Index& ix) { return ix.GetPassState(kUsesStamp); }));
  // Rows adopted or dropped above: the adopted ones take their last use from the table.
  const bool unchanged = !changed && !stamp.empty() && merged.size() == 2 && merged[0] == stamp;
  const int64_t merged_at = unchanged ? LeadingSeconds(merged[1]) : 0;
  std::map<std::string, std::string> uses;
  if (!unchanged) uses = backend_->ReadTable(kUses);
  std::map<std::string, std::string> tell;
  std::vector<std::string> forget;
  std::vector<int64_t> told;
  for (const auto& kv : rows) {
    const std::string& name = kv.first;
    const index::ReconcileRow& row = kv.second;
    if (unchanged) {
      // Used since that merge (a use in the same second as it counts as since).
      if (row.state == index::State::kReady && row.last_used >= merged_at) {
        tell[name] = std::to_string(row.last_used) + " " + host_id_;
        told.push_back(row.id);
      }
      continue;
    }
    auto it = uses.find(name);
    const int64_t shared = it == uses.end() ? 0 : LeadingSeconds(it->second);
    if (shared > row.last_used) {
      WithIndex([&](index::Index& ix) { ix.MergeLastUsed(row.id, std::min(shared, now)); });
    } else if (row.last_used > shared && row.state == index::State::kReady) {
      tell[name] = std::to_string(row.last_used) + " " + host_id_;
      told.push_back(row.id);
    }
  }
  for (const auto& [name, value] : uses) {
    if (!objects.count(name) && !rows.count(name)) forget.push_back(name);
  }
  backend_->WriteTable(kUses, tell, forget);
  WithIndex([&](index::Index& ix) {
    for (int64_t id : told) ix.SetShared(id, now);
    if (!tell.empty() || !forget.empty() || stamp.empty()) {
      ix.SetPassState(kUsesStamp, "");  // this pass's own write changed it
    } else if (!unchanged) {
      ix.SetPassState(kUsesStamp, stamp + " " + std::to_string(now));
    }
  });
}

void CacheImpl::PublishTotals(const EvictReport& report) {
  const std::string now = std::to_string(Now());
  uint64_t pinned = 0;
  for (const auto& [key, value] : SharedDeferred()) {
    const auto w = Words(value);
    if (w.size() >= 4) pinned += static_cast<uint64_t>(std::max<int64_t>(0, LeadingSeconds(w[3])));
  }
  try {
    backend_->WriteTable(kTotals, {{"entries", std::to_string(report.entries_after)},
                                   {"bytes", std::to_string(report.bytes_after)},
                                   {"pinned_bytes", std::to_string(std::max(pinned, report.pinned_bytes))},
                                   {"at", now},
                                   {"host", host_id_}});
    backend_->WriteTable(kHosts, {{host_id_, now + " pass " + MachineId()}});
  } catch (const Error& e) {
    log_->warn("pool totals not written error={}", e.what());
  }
}

std::string CacheImpl::HostIdClash() {
  const auto hosts = backend_->ReadTable(kHosts);
  auto it = hosts.find(host_id_);
  if (it == hosts.end()) return "";
  const auto w = Words(it->second);
  if (w.size() < 3 || w[2] == MachineId()) return "";
  return "host id " + host_id_ + " was last used on " + location_ + " by another machine (" +
         w[2] + ", this one is " + MachineId() + ")";
}

PoolTotals CacheImpl::ReadTotals() {
  PoolTotals t;
  auto totals = backend_->ReadTable(kTotals);
  auto num = [&](const char* key) -> uint64_t {
    auto it = totals.find(key);
    return it == totals.end() ? 0 : static_cast<uint64_t>(std::max<int64_t>(0, LeadingSeconds(it->second)));
  };
  t.entries = num("entries");
  t.bytes = num("bytes");
  t.pinned_bytes = num("pinned_bytes");
  t.at = static_cast<int64_t>(num("at"));
  if (auto it = totals.find("host"); it != totals.end()) t.host = it->second;
  for (const auto& [host, value] : backend_->ReadTable(kHosts)) {
    t.hosts.emplace_back(host, LeadingSeconds(value));
  }
  return t;
}

}  // namespace cachemgr::engine
