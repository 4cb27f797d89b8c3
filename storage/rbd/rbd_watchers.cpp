// The watchers a dead client left on an image, cut off so the image can be removed.
//
// A client killed with an image open keeps its watch on the image's header until the
// OSD times it out (osd_client_watch_timeout, 30 s by default), and librbd refuses to
// remove an image that has watchers. As `rbd lock break` and Cinder do, the watcher's
// address is blocklisted for a short time: the OSDs drop its watches at once, and the
// exclusive lock it may have held is then broken by librbd's remove itself (its owner no
// longer watches). Only called for an object the index says a dead process was making.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_buffers.h"
#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {

namespace {
// Long enough for the OSDs to drop the watches, short enough that a dead client's address
// reused by a new process is not refused for long.
constexpr uint32_t kBlocklistSeconds = 60;

// Whether `addr` ("ip:port/nonce", maybe "v2:"-prefixed) is one of this client's
// addresses as rados_getaddrs gives them ("[v2:ip:port/nonce,v1:...]" or one address).
// Compared whole: a nonce may be a prefix of another.
bool IsSelf(std::string addr, const std::string& self_addrs) {
  auto bare = [](std::string a) {
    if (a.rfind("v1:", 0) == 0 || a.rfind("v2:", 0) == 0 || a.rfind("any:", 0) == 0) {
      a = a.substr(a.find(':') + 1);
    }
    return a;
  };
  addr = bare(addr);
  if (addr.empty()) return false;
  std::string token;
  for (char c : self_addrs + ",") {
    if (c == '[' || c == ']' || c == ' ') continue;
    if (c == ',') {
      if (bare(token) == addr) return true;
      token.clear();
    } else {
      token += c;
    }
  }
  return false;
}

// The address of the exclusive lock's owner ("" when nobody holds it or the image has no
// exclusive-lock feature).
std::string LockOwner(rbd_image_t image) {
  rbd_lock_mode_t mode{};
  std::vector<char*> owners(4, nullptr);
  size_t n = owners.size();
  if (rbd_lock_get_owners(image, &mode, owners.data(), &n) != 0 || n == 0) return "";
  std::string owner = owners[0] != nullptr ? owners[0] : "";
  rbd_lock_get_owners_cleanup(owners.data(), n);
  return owner;
}

// rbd_watchers_list into `watchers` (grown as librbd asks); `n` is the count listed.
int ListWatchers(rbd_image_t image, std::vector<rbd_image_watcher_t>& watchers, size_t& n) {
  return CallWithBuffer(watchers, n, [&](rbd_image_watcher_t* data, size_t* count) {
    return rbd_watchers_list(image, data, count);
  });
}

std::vector<std::string> WatcherAddrs(rbd_image_t image) {
  std::vector<rbd_image_watcher_t> watchers(16);
  size_t n = 0;
  const int r = ListWatchers(image, watchers, n);
  std::vector<std::string> out;
  if (r != 0) return out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(watchers[i].addr != nullptr ? watchers[i].addr : "?");
  }
  rbd_watchers_list_cleanup(watchers.data(), n);
  return out;
}
}  // namespace

std::string RbdBackend::DescribeBusy(const PoolCtx& pool, const std::string& name) {
  try {
    auto image = OpenImage(pool, name, true);
    const auto watchers = WatcherAddrs(image.get());
    const std::string owner = LockOwner(image.get());
    return fmt::format("watchers [{}], exclusive lock held by {}", fmt::join(watchers, ", "),
                       owner.empty() ? "nobody" : owner);
  } catch (const Error& e) {
    return std::string("no detail: ") + e.what();
  }
}

size_t RbdBackend::OtherWatchers(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  if (!Exists(ref)) return 0;
  const auto self_id = static_cast<int64_t>(rados_get_instance_id(pool->cluster->get()));
  auto image = OpenImage(*pool, ref.name, true);
  std::vector<rbd_image_watcher_t> watchers(16);
  size_t n = 0;
  Check(ListWatchers(image.get(), watchers, n), "list watchers of", pool->Where(ref.name));
  size_t others = 0;
  for (size_t i = 0; i < n; ++i) {
    if (watchers[i].id != self_id) ++others;
  }
  rbd_watchers_list_cleanup(watchers.data(), n);
  return others;
}

size_t RbdBackend::EvictWatchers(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  const std::string where = pool->Where(ref.name);
  rados_t cluster = pool->cluster->get();
  const auto self_id = static_cast<int64_t>(rados_get_instance_id(cluster));
  std::string self_addrs;
  {
    char* addrs = nullptr;
    if (rados_getaddrs(cluster, &addrs) == 0 && addrs != nullptr) {
      self_addrs = addrs;
      std::free(addrs);
    }
  }
  std::vector<std::string> others;
  {
    auto image = OpenImage(*pool, ref.name, true);  // our own watch is told apart by id
    std::vector<rbd_image_watcher_t> watchers(16);
    size_t n = 0;
    Check(ListWatchers(image.get(), watchers, n), "list watchers of", where);
    for (size_t i = 0; i < n; ++i) {
      const std::string addr = watchers[i].addr != nullptr ? watchers[i].addr : "";
      if (watchers[i].id == self_id || addr.empty()) continue;
      if (IsSelf(addr, self_addrs)) continue;
      others.push_back(addr);
    }
    rbd_watchers_list_cleanup(watchers.data(), n);
  }
  size_t cut = 0;
  for (auto& addr : others) {
    const int r = rados_blocklist_add(cluster, addr.data(), kBlocklistSeconds);
    if (r < 0) {
      log_->warn("rbd watcher not cut off image={} watcher={} error={}", where, addr,
                 r == -EACCES || r == -EPERM
                     ? "the client key lacks the mon cap 'osd blocklist'; the watch ends when "
                       "the OSD times it out"
                     : std::to_string(r));
      continue;
    }
    ++cut;
    log_->info("rbd watcher of a dead client cut off image={} watcher={} seconds={}", where, addr,
               kBlocklistSeconds);
  }
  if (cut > 0) rados_wait_for_latest_osdmap(cluster);
  return cut;
}

}  // namespace cachemgr::storage::rbd
