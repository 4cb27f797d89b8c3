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
  // Not while the backend is not answering: the record is what names a staging object
  // left behind (a clean-up skipped for the same reason) as the cache's.
  if (backend_->Unresponsive()) {
    log_->warn("fill record kept for the pass: the backend did not answer in time staging={}",
               staging);
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
