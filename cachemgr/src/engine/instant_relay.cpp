// The instant miss of a Glance image (cache.instant_relay): librbd's http stream reads the
// image through a relay this process serves (source/relay.h), since it can neither send
// Glance a token nor do without HEAD. What qualifies, the relay's life (made when the
// entry is, handed to the process that runs the import, bound again by a pass that
// resumes it), the judgement of the bytes (the entry's own bytes hashed after the copy
// against Glance's claims: Glance never rewrites an image's data, so what was served is
// what those digests describe), and the relay kept after the commit while a volume made
// before it is still open elsewhere.
//
// What qualifies: a raw image (by its header bytes too, as a fill checks them), or a plain
// qcow2 whose tables pass a fill's checks (instant_qcow2.cpp), of a known size, with a
// digest Glance claims (md5 checksum or os_hash): the bytes are served before they are
// checked, so there must be something to check them against.
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "convert/format.h"
#include "engine/cache_impl.h"
#include "engine/instant_qcow2.h"
#include "engine/instant_records.h"
#include "engine/naming.h"
#include "engine/shared_tables.h"
#include "source/relay.h"
#include "util/hash.h"
#include "util/unique_fd.h"

namespace cachemgr::engine {

namespace {

// Bytes of the image's start read to detect its format, as a fill's check reads them.
constexpr uint64_t kHeaderBytes = 1 << 20;
constexpr auto kDrainPoll = std::chrono::seconds(5);
// Pool table kRelaysTable (engine/shared_tables.h): a staging object made as an import
// through a relay -> {"url","size"}, written before the object exists (opening it opens
// its source: a pass that removes a dead fill's object must serve the relay first) and
// erased once the fill ended.

// One `relays` row as RecordRelay wrote it; nullopt for a value it did not write.
struct RelayRecord {
  std::string url;
  uint64_t size = 0;
  source::RelayUrl parts;
};
std::optional<RelayRecord> ParseRelayRecord(const std::string& value) {
  const auto j = nlohmann::json::parse(value, nullptr, false);
  if (!j.is_object() || !j.contains("url") || !j["url"].is_string() || !j.contains("size") ||
      !j["size"].is_number_unsigned()) {
    return std::nullopt;
  }
  RelayRecord r{j["url"].get<std::string>(), j["size"].get<uint64_t>(), {}};
  if (!source::ParseRelayUrl(r.url, &r.parts)) return std::nullopt;
  return r;
}

// The format of `bytes` (the image's first bytes) by the same detector a fill uses.
std::string DetectBytesFormat(const std::vector<std::byte>& bytes, const std::string& name) {
  util::UniqueFd fd(::memfd_create("cachemgr-header", MFD_CLOEXEC));
  if (!fd) throw Error(Errc::kIo, std::string("memfd_create: ") + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(Errc::kIo, std::string("memfd write: ") + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  return convert::DetectFdFormat(fd.get(), name);
}

}  // namespace

std::optional<CacheImpl::InstantPlan> CacheImpl::PlanRelayed(const source::ImageMeta& meta,
                                                             std::string* why_not) {
  auto no = [&](std::string why) -> std::optional<InstantPlan> {
    *why_not = std::move(why);
    return std::nullopt;
  };
  if (source_->kind() != "glance") {
    return no("the " + source_->kind() + " source has no file every host reaches");
  }
  if (options_.cache.instant_relay.empty()) {
    return no("Glance images need cache.instant_relay (librbd cannot read Glance itself)");
  }
  if (meta.disk_format != "raw" && meta.disk_format != "qcow2") {
    return no("Glance images qualify when raw or qcow2 (this one is " + meta.disk_format + ")");
  }
  if (!meta.size || *meta.size == 0) return no("Glance gives no size for the image");
  if (meta.disk_format == "raw" && meta.virtual_size && *meta.virtual_size != *meta.size) {
    return no("Glance's virtual_size " + std::to_string(*meta.virtual_size) + " is not its size " +
              std::to_string(*meta.size));
  }
  const uint64_t max_virtual =
      static_cast<uint64_t>(options_.conversion.max_virtual_size_gb * (1ull << 30));
  if (max_virtual > 0 && *meta.size > max_virtual) {
    throw Error(Errc::kRefused, "image " + meta.id + ": " + std::to_string(*meta.size) +
                                    " bytes is over conversion.max_virtual_size_gb");
  }
  if (meta.checksum.empty() && meta.os_hash_value.empty()) {
    return no("Glance claims no digest (checksum, os_hash) to check the import against");
  }
  if (!meta.os_hash_value.empty() && !util::Hasher::Supported(meta.os_hash_algo)) {
    return no("Glance's os_hash_algo '" + meta.os_hash_algo +
              "' is not one this tool computes, so the import could never be judged");
  }
  if (meta.disk_format == "raw" && *meta.size % 512 != 0) {
    return no("its " + std::to_string(*meta.size) + " bytes are not whole 512-byte sectors");
  }
  InstantPlan plan;
  plan.format = meta.disk_format;
  plan.relayed_size = *meta.size;
  plan.virtual_size = *meta.size;
  plan.file_identity = "glance:" + std::to_string(*meta.size) + ":" + meta.checksum + ":" +
                       meta.os_hash_algo + ":" + meta.os_hash_value;
  const auto bad_files = backend_->ReadTable(kBadFilesTable);
  if (auto it = bad_files.find(Sha1Hex(meta.id));
      it != bad_files.end() && it->second == plan.file_identity) {
    return no("an import of this very image found bytes that are not the image's");
  }
  // The header check a fill makes: a "raw" image that is a qcow2 (or anything with a
  // header) is refused, not served as raw.
  std::vector<std::byte> head(static_cast<size_t>(std::min<uint64_t>(*meta.size, kHeaderBytes)));
  try {
    source_->ReadRange(meta.id, 0, head);
  } catch (const Error& e) {
    if (e.code() != Errc::kSource && e.code() != Errc::kTimeout && e.code() != Errc::kCorrupt) {
      throw;
    }
    return no(std::string("Glance does not serve byte ranges of it (") + e.what() + ")");
  }
  convert::RequireFormatMatches(meta.id, meta.disk_format,
                                DetectBytesFormat(head, "glance image " + meta.id));
  if (plan.format == "qcow2") {
    // Its tables checked as a fill checks the whole file (instant_qcow2.cpp).
    RelayedQcow2 checked;
    try {
      checked = CheckRelayedQcow2(*source_, meta, options_.conversion, log_);
    } catch (const Error& e) {
      if (e.code() != Errc::kSource && e.code() != Errc::kTimeout) throw;
      return no(std::string("its tables cannot be read by range (") + e.what() + ")");
    }
    if (!checked.why_not.empty()) return no(checked.why_not);
    plan.virtual_size = checked.virtual_size;
  }

  const std::string secret = source::NewRelaySecret();
  std::string base;
  {
    std::lock_guard lock(relay_mu_);
    source::Relay* relay = nullptr;
    for (auto& [key, r] : relays_) {
      if (r && key == planned_relay_key_) relay = r.get();
    }
    if (relay == nullptr) {
      std::unique_ptr<source::Relay> made;
      try {
        // Not a port a pending import recorded (its runner died; a pass binds it again).
        const auto recorded = RecordedRelayAddresses();
        for (int attempt = 0; attempt < 8; ++attempt) {
          made = source::Relay::Listen(options_.cache.instant_relay, RelayReader(), log_);
          if (!recorded.count(made->BaseUrl().substr(std::strlen("http://")))) break;
          made.reset();
        }
        if (!made)
          throw Error(Errc::kBusy, "every free port given was one a pending import records");
      } catch (const Error& e) {
        log_->warn(
            "the relay cannot listen: instant misses of Glance images are normal misses "
            "error=\"{}\"",
            e.what());
        return no(std::string("the relay cannot listen (") + e.what() + ")");
      }
      base = made->BaseUrl();
      planned_relay_key_ = base.substr(std::strlen("http://"));
      relay = made.get();
      relays_[planned_relay_key_] = std::move(made);
    }
    base = relay->BaseUrl();
    relay->Serve(meta.id, secret, *meta.size);
  }
  plan.path = base + "/" + secret + "/" + meta.id;
  plan.spec = nlohmann::json{{"type", plan.format == "raw" ? "raw" : "qcow"},
                             {"stream", {{"type", "http"}, {"url", plan.path}}}}
                  .dump();
  return plan;
}

std::set<std::string> CacheImpl::RecordedRelayAddresses() {
  std::set<std::string> out;
  auto add = [&](const std::string& url) {
    source::RelayUrl parts;
    if (source::ParseRelayUrl(url, &parts)) out.insert(parts.listen);
  };
  for (const auto& [name, value] : backend_->ReadTable(kImportsTable)) {
    if (auto rec = ImportRecord::Parse(value)) add(rec->path);
  }
  for (const auto& [object, value] : backend_->ReadTable(kRelaysTable)) {
    if (auto r = ParseRelayRecord(value)) out.insert(r->parts.listen);
  }
  return out;
}

bool CacheImpl::ServeRelayed(const std::string& image_id, const std::string& url, uint64_t size) {
  source::RelayUrl parts;
  if (!source::ParseRelayUrl(url, &parts) || parts.image_id != image_id) {
    throw Error(Errc::kBackend, "image " + image_id +
                                    ": its import record names no relay this "
                                    "cache made (" +
                                    url + ")");
  }
  std::lock_guard lock(relay_mu_);
  auto it = relays_.find(parts.listen);
  // A relay made here serves the image from its first accept: librbd's reads may be
  // waiting in the backlog of an adopted socket already.
  const source::Relay::Image image{image_id, parts.secret, size};
  bool served_before = false;
  if (it == relays_.end() && adopted_relay_fd_ >= 0) {
    auto adopted = source::Relay::Adopt(std::exchange(adopted_relay_fd_, -1), RelayReader(), log_,
                                        {image});
    const std::string key = adopted->BaseUrl().substr(std::strlen("http://"));
    if (key != parts.listen) adopted->Forget(image_id);  // not the relay the record names
    it = relays_.emplace(key, std::move(adopted)).first;
  } else if (it != relays_.end()) {
    served_before = it->second->Serves(image_id);
  }
  if (it == relays_.end() || it->first != parts.listen) {
    try {
      auto made = source::Relay::Listen(parts.listen, RelayReader(), log_, {image});
      it = relays_.emplace(parts.listen, std::move(made)).first;
    } catch (const Error& e) {
      const bool elsewhere =
          std::string(e.what()).find("not an address of this host") != std::string::npos;
      throw Error(e.code(), "image " + image_id + ": its import reads through the relay at " +
                                parts.listen + ", which cannot be served here (" + e.what() +
                                (elsewhere ? "); the host with that address resumes it"
                                           : "); on this host its runner serves it, or another "
                                             "process took the port (`ss -ltnp` names it)"));
    }
  }
  it->second->Serve(image_id, parts.secret, size);
  return !served_before;
}

source::Relay::Reader CacheImpl::RelayReader() {
  return [this](const std::string& id, uint64_t offset, std::span<std::byte> out) {
    source_->ReadRange(id, offset, out);
  };
}

void CacheImpl::ForgetRelayed(const std::string& image_id) {
  std::vector<std::unique_ptr<source::Relay>> stopped;  // ended outside the lock: a stop
  {                                                     // waits for requests in flight
    std::lock_guard lock(relay_mu_);
    for (auto it = relays_.begin(); it != relays_.end();) {
      it->second->Forget(image_id);
      if (it->second->Serving() == 0) {
        if (it->first == planned_relay_key_) planned_relay_key_.clear();
        stopped.push_back(std::move(it->second));
        it = relays_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void CacheImpl::DrainRelayed(const std::string& image_id,
                             const std::vector<storage::ImageRef>& volumes) {
  bool told = false;
  while (true) {
    size_t open = 0;
    for (const auto& v : volumes) {
      try {
        open += backend_->OtherWatchers(v) > 0 ? 1 : 0;
      } catch (const Error& e) {
        if (e.code() != Errc::kNotFound) ++open;  // unknown: kept as open
      }
    }
    if (open == 0) break;
    if (!told) {
      log_->info(
          "relay kept after the commit while volumes made before it are open image={} "
          "open={}",
          image_id, open);
      told = true;
    }
    std::this_thread::sleep_for(kDrainPoll);
  }
  ForgetRelayed(image_id);
}

void CacheImpl::RecordRelay(const std::string& object, const std::string& url, uint64_t size) {
  backend_->WriteTable(kRelaysTable,
                       {{object, nlohmann::json{{"url", url}, {"size", size}}.dump()}});
}

bool CacheImpl::ServeRelayOf(const std::string& object, std::vector<EvictAction>* actions) {
  if (!backend_->CanImportInstantly()) return true;
  const auto table = backend_->ReadTable(kRelaysTable);
  auto it = table.find(object);
  if (it == table.end()) return true;
  const auto rec = ParseRelayRecord(it->second);
  if (!rec) return true;  // not a record this cache wrote: the object is judged as any other
  try {
    ServeRelayed(rec->parts.image_id, rec->url, rec->size);
    return true;
  } catch (const Error& e) {
    if (e.code() != Errc::kBusy) throw;
    log_->info("left to the host of its relay name={} ({})", object, e.what());
    if (actions) actions->push_back({"gc", rec->parts.image_id, object, 0, e.what(), false});
    return false;
  }
}

void CacheImpl::ForgetRelayOf(const std::string& object, bool stop_serving) {
  if (!backend_->CanImportInstantly()) return;
  const auto table = backend_->ReadTable(kRelaysTable);
  auto it = table.find(object);
  if (it == table.end()) return;
  backend_->WriteTable(kRelaysTable, {}, {object});
  // Not while the import goes on under the entry's name (a fill killed after its rename).
  const auto rec = ParseRelayRecord(it->second);
  if (stop_serving && rec && !ImportPending(EntryName(rec->parts.image_id))) {
    ForgetRelayed(rec->parts.image_id);
  }
}

void CacheImpl::SweepRelayRecords(bool dry_run) {
  if (dry_run || !backend_->CanImportInstantly()) return;
  // Read before the fills: a record whose fill still runs has its fill's record too.
  const auto relays = backend_->ReadTable(kRelaysTable);
  if (relays.empty()) return;
  const auto fills = SharedFills();
  std::vector<std::string> gone;
  for (const auto& [object, value] : relays) {
    if (!fills.count(object) && !backend_->Exists(EntryRef(object))) gone.push_back(object);
  }
  if (!gone.empty()) backend_->WriteTable(kRelaysTable, {}, gone);
}

std::optional<std::string> CacheImpl::RelayedSourceGone(const ImportRecord& rec) {
  source::ImageMeta now;
  try {
    now = source_->Describe(rec.image_id);
  } catch (const Error& e) {
    if (e.code() == Errc::kNotFound)
      return "Glance no longer has the image (" + std::string(e.what()) + ")";
    return std::nullopt;  // unreachable, or refusing us: not the image's fault
  }
  if (now.status != "active") return "Glance's image is " + now.status + " now";
  if (now.size.value_or(0) != rec.size || now.checksum != rec.checksum ||
      now.os_hash_value != rec.os_hash_value) {
    return std::string(
        "Glance's image is not the one the import began with (its size or digests "
        "changed)");
  }
  // Reachable and unchanged: its last byte must be there.
  std::vector<std::byte> last(1);
  try {
    source_->ReadRange(rec.image_id, rec.size - 1, last);
  } catch (const Error& e) {
    // Only a whole answer that the byte is not there is final; a timeout, a 5xx or an
    // auth failure may pass.
    if (e.code() != Errc::kCorrupt && e.code() != Errc::kNotFound) return std::nullopt;
    return "Glance cannot serve byte " + std::to_string(rec.size - 1) + " of the " +
           std::to_string(rec.size) + " it declares (" + e.what() + ")";
  }
  return std::nullopt;
}

std::vector<std::string> CacheImpl::ServePendingRelays() {
  std::vector<std::string> served;
  if (!backend_->CanImportInstantly()) return served;
  std::vector<std::pair<std::string, uint64_t>> urls;  // url, size
  for (const auto& [name, value] : backend_->ReadTable(kImportsTable)) {
    if (auto rec = ImportRecord::Parse(value)) urls.emplace_back(rec->path, rec->size);
  }
  for (const auto& [object, value] : backend_->ReadTable(kRelaysTable)) {
    if (auto r = ParseRelayRecord(value)) urls.emplace_back(r->url, r->size);
  }
  for (const auto& [url, size] : urls) {
    source::RelayUrl parts;
    if (!source::ParseRelayUrl(url, &parts)) continue;  // a file import: nothing to serve
    try {
      if (ServeRelayed(parts.image_id, url, size)) served.push_back(parts.image_id);
    } catch (const Error& e) {
      if (e.code() != Errc::kBusy) throw;
      // Its runner (here) or its host serves it.
      log_->info("relay of a pending import not served by this pass image={} ({})", parts.image_id,
                 e.what());
    }
  }
  return served;
}

bool CacheImpl::ServeRelayForHit(const std::string& cache_name) {
  // Nothing on the hit path unless relays are configured: one table read when they are.
  if (options_.cache.instant_relay.empty() || !backend_->CanImportInstantly()) return false;
  std::map<std::string, std::string> imports;
  try {
    imports = backend_->ReadTable(kImportsTable);
  } catch (const Error& e) {
    log_->warn("imports table not read by a hit name={} ({})", cache_name, e.what());
    return false;
  }
  const auto it = imports.find(cache_name);
  if (it == imports.end()) return false;
  const auto rec = ImportRecord::Parse(it->second);
  source::RelayUrl parts;
  if (!rec || !source::ParseRelayUrl(rec->path, &parts)) return false;  // a file import
  try {
    const bool served = ServeRelayed(parts.image_id, rec->path, rec->size);
    if (served) {
      log_->warn("relay of a pending import served again by a hit; its runner had died image={}",
                 parts.image_id);
    }
    return served;
  } catch (const Error& e) {
    // Its runner serves it (here), or the host of its address; or it cannot be served here
    // (a privileged port, no descriptor left): the clone tries all the same, as before.
    if (e.code() == Errc::kBusy) {
      log_->debug("relay of a pending import not served by this hit image={} ({})",
                  parts.image_id, e.what());
    } else {
      log_->warn("relay of a pending import not served by this hit image={} ({})",
                 parts.image_id, e.what());
    }
    return false;
  }
}

void CacheImpl::DrainDeferredRelays() {
  std::vector<std::pair<std::string, std::vector<storage::ImageRef>>> drains;
  {
    std::lock_guard lock(relay_mu_);
    drains.swap(deferred_drains_);
  }
  for (const auto& [image_id, volumes] : drains) DrainRelayed(image_id, volumes);
}

int CacheImpl::HandOverRelay(const std::string& image_id) {
  std::unique_ptr<source::Relay> handed;  // ended outside the lock, once it has let go
  int fd = -1;
  {
    std::lock_guard lock(relay_mu_);
    for (auto it = relays_.begin(); it != relays_.end(); ++it) {
      if (!it->second->Serves(image_id)) continue;
      fd = it->second->HandOver();
      if (fd < 0) break;
      // Whatever else it served goes with the socket: nothing more is planned on it here.
      if (it->first == planned_relay_key_) planned_relay_key_.clear();
      handed = std::move(it->second);
      relays_.erase(it);
      break;
    }
  }
  return fd;
}

void CacheImpl::AdoptRelay(int fd) {
  std::lock_guard lock(relay_mu_);
  if (adopted_relay_fd_ >= 0) ::close(adopted_relay_fd_);
  adopted_relay_fd_ = fd;
}

}  // namespace cachemgr::engine
