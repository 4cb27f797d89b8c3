// storage/rbd/rbd_lock.cpp: the RADOS exclusive lock that excludes across hosts: taking
// it (and breaking the lock of a holder of this host that is gone), its lease renewal,
// and listing the lock objects.
#include "storage/rbd/rbd_lock.h"

#include <spdlog/spdlog.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_buffers.h"
#include "storage/rbd/rbd_error.h"
#include "util/hex.h"
#include "util/proc_stat.h"

namespace cachemgr::storage::rbd {
namespace {

using Clock = std::chrono::steady_clock;

// Who holds a lock, as written in its cookie:
// host:boot-id:pid-namespace:pid:process-start-time:random.
struct Holder {
  std::string host, boot, pid_ns;
  long pid = 0;
  std::string start_time;

  std::string Cookie(const std::string& random) const {
    return host + ":" + boot + ":" + pid_ns + ":" + std::to_string(pid) + ":" + start_time + ":" +
           random;
  }
};

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The start time (in clock ticks since boot) of process `pid`, or nullopt when it is
// gone or a zombie (a crashed child not yet reaped holds nothing any more).
std::optional<std::string> ProcessStartTime(long pid) {
  const auto stat = util::ReadProcStat(pid);
  if (!stat || stat->state == 'Z' || stat->state == 'X' || stat->state == 'x') return std::nullopt;
  return stat->start_time;
}

const Holder& ThisHolder() {
  static const Holder holder = [] {
    Holder h;
    char host[256] = {};
    (void)gethostname(host, sizeof(host) - 1);
    h.host = host;
    h.boot = ReadFirstLine("/proc/sys/kernel/random/boot_id");
    h.boot.erase(std::remove(h.boot.begin(), h.boot.end(), '-'), h.boot.end());
    std::error_code ec;
    const auto ns = std::filesystem::read_symlink("/proc/self/ns/pid", ec).string();
    for (char c : ns) {
      if (std::isdigit(static_cast<unsigned char>(c))) h.pid_ns += c;
    }
    h.pid = getpid();
    h.start_time = ProcessStartTime(h.pid).value_or("0");
    return h;
  }();
  return holder;
}

// This process under the host id the operator gave (several hosts run on one machine in
// tests: a holder of another id is another host, freed by its lease alone).
Holder HolderAs(const std::string& host_id) {
  Holder h = ThisHolder();
  if (!host_id.empty()) h.host = host_id;
  return h;
}

std::vector<std::string> SplitCookie(const std::string& cookie) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(cookie);
  while (std::getline(in, part, ':')) parts.push_back(part);
  return parts;
}

// Why the holder named by `cookie` is known to be gone, or nullopt when it may be
// alive (another host, another boot, another PID namespace, a live process): then only
// its lease frees the lock.
// `self` is this process as its cookies name it (the configured host id, if any).
std::optional<std::string> DeadHolderReason(const std::string& cookie, const Holder& self) {
  const auto parts = SplitCookie(cookie);
  if (parts.size() != 6 || parts[0] != self.host || self.boot.empty() || self.pid_ns.empty()) {
    return std::nullopt;
  }
  // Another boot id: this host rebooted since, or another machine uses the same host id
  // (cloned VMs share a hostname). Only the lease frees it: a live holder is never broken.
  if (parts[1] != self.boot) return std::nullopt;
  if (parts[2] != self.pid_ns) return std::nullopt;
  long pid = 0;
  try {
    pid = std::stol(parts[3]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (pid <= 0) return std::nullopt;
  const auto start = ProcessStartTime(pid);
  if (!start) return "pid " + parts[3] + " is gone";
  if (*start != parts[4]) return "pid " + parts[3] + " was reused";
  return std::nullopt;
}

// NUL-separated strings of a rados_list_lockers buffer.
std::vector<std::string> SplitNul(const std::vector<char>& buf, size_t len) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < len && pos < buf.size()) {
    std::string s(buf.data() + pos);
    pos += s.size() + 1;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

bool RbdBackend::BreakDeadHolders(PoolCtx& pool, const std::string& oid) {
  size_t tag_len = 64, clients_len = 1024, cookies_len = 1024, addrs_len = 1024;
  std::vector<char> tag, clients, cookies, addrs;
  const int n = RetryOnErange([&] {
    // Sized from what the previous call reported.
    tag.assign(tag_len, 0);
    clients.assign(clients_len, 0);
    cookies.assign(cookies_len, 0);
    addrs.assign(addrs_len, 0);
    int exclusive = 0;
    return static_cast<int>(rados_list_lockers(
        pool.io.get(), oid.c_str(), kLockName, &exclusive, tag.data(), &tag_len, clients.data(),
        &clients_len, cookies.data(), &cookies_len, addrs.data(), &addrs_len));
  });
  if (n <= 0) return false;  // gone meanwhile, or unreadable: the caller waits and retries
  const auto client_list = SplitNul(clients, clients_len);
  const auto cookie_list = SplitNul(cookies, cookies_len);
  bool broken = false;
  for (size_t i = 0; i < client_list.size() && i < cookie_list.size(); ++i) {
    const auto reason = DeadHolderReason(cookie_list[i], HolderAs(options_.host_id));
    if (!reason) continue;
    const int r = rados_break_lock(pool.io.get(), oid.c_str(), kLockName, client_list[i].c_str(),
                                   cookie_list[i].c_str());
    if (r < 0 && r != -ENOENT) {
      log_->warn("rados lock of a dead holder not broken lock={} holder={} errno={}",
                 pool.Where(oid), cookie_list[i], -r);
      continue;
    }
    log_->warn("rados lock of a dead holder broken lock={} holder={} reason=\"{}\"",
               pool.Where(oid), cookie_list[i], *reason);
    broken = true;
  }
  return broken;
}

std::unique_ptr<Lock> RbdBackend::AcquireLock(const std::string& key,
                                              std::chrono::milliseconds timeout) {
  ValidateName("lock", key);
  auto pool = LockPool();
  const std::string oid = kLockPrefix + key;
  // The cookie tells holders apart (two locks in one process must still exclude) and
  // names the holder, so a lock left by a crashed process of this host can be broken.
  const std::string cookie = HolderAs(options_.host_id).Cookie(util::RandomHex(16));
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  auto wait = std::chrono::milliseconds(20);
  for (;;) {
    timeval lease{RbdLock::kLease.count(), 0};
    const int r = rados_lock_exclusive(pool->io.get(), oid.c_str(), kLockName, cookie.c_str(),
                                       "cachemgr", &lease, 0);
    if (r == 0) {
      log_->debug("rados lock acquired lock={} ms={}", pool->Where(oid), MsSince(start));
      return std::make_unique<RbdLock>(pool, oid, cookie, log_);
    }
    if (r != -EBUSY && r != -EEXIST) Check(r, "lock", pool->Where(oid));
    if (BreakDeadHolders(*pool, oid)) continue;
    if (Clock::now() >= deadline) {
      throw Error(Errc::kBusy, "rbd lock " + key + " in " + location() +
                                   " is held by another owner (waited " +
                                   std::to_string(MsSince(start)) + " ms)");
    }
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(wait, deadline - Clock::now()));
    wait = std::min(wait * 2, std::chrono::milliseconds(500));
  }
}

std::shared_ptr<PoolCtx> RbdBackend::LockPool() {
  // A RADOS namespace (not an RBD one: nothing registers it) that holds only lock
  // objects, so ListLocks lists them and nothing of the images around them.
  const std::string& ns = options_.namespace_;
  return PoolNs(options_.pool, ns.empty() ? kLockNamespace : ns + "." + kLockNamespace);
}

std::vector<std::string> RbdBackend::ListLocks() {
  auto pool = LockPool();
  rados_list_ctx_t list = nullptr;
  Check(rados_nobjects_list_open(pool->io.get(), &list), "list lock objects", pool->Where(""));
  std::vector<std::string> keys;
  const char* oid = nullptr;
  int r = 0;
  while ((r = rados_nobjects_list_next(list, &oid, nullptr, nullptr)) == 0) {
    std::string name(oid);
    if (name.starts_with(kLockPrefix)) keys.push_back(name.substr(std::strlen(kLockPrefix)));
  }
  rados_nobjects_list_close(list);
  if (r != -ENOENT) Check(r, "list lock objects", pool->Where(""));
  return keys;
}

RbdLock::RbdLock(std::shared_ptr<PoolCtx> pool, std::string oid, std::string cookie,
                 std::shared_ptr<spdlog::logger> logger)
    : pool_(std::move(pool)),
      oid_(std::move(oid)),
      cookie_(std::move(cookie)),
      log_(std::move(logger)),
      renewal_(std::make_shared<Renewal>()) {
  renewal_->pool = pool_;
  renewal_->oid = oid_;
  renewal_->cookie = cookie_;
  renewal_->log = log_;
  renewer_ = std::thread([state = renewal_] { RenewLoop(state); });
}

RbdLock::~RbdLock() {
  // Destructors never throw: a failure here (a std::system_error from a mutex or a thread,
  // librados' own) is logged, and the lease ends the lock.
  try {
    Release();
  } catch (const std::exception& e) {
    log_->error("rados lock not released, the lease ends the lock lock={} error={}",
                pool_->Where(oid_), e.what());
    // A std::thread destroyed while joinable ends the process; the renewer owns its state.
    if (renewer_.joinable()) renewer_.detach();
  }
}

void RbdLock::Release() {
  bool renewer_done = false;
  {
    std::unique_lock lock(renewal_->mu);
    renewal_->stop = true;
    renewal_->cv.notify_all();
    renewer_done = renewal_->cv.wait_for(lock, kUnlockWait, [this] { return renewal_->done; });
  }
  if (!renewer_done) {
    // A renewal is stuck on an unreachable OSD: an unlock now could be overtaken by it,
    // and would be stuck as well. The lease ends the lock.
    renewer_.detach();
    log_->warn("rados lock renewal still pending, the lease ends the lock lock={}",
               pool_->Where(oid_));
    return;
  }
  renewer_.join();
  // Unlocking is a courtesy: the lease ends the lock anyway. With the OSD gone the unlock
  // would wait out the op timeout, so it gets a short wait and is left to finish alone.
  rados_completion_t c = nullptr;
  int r = rados_aio_create_completion2(nullptr, nullptr, &c);
  if (r == 0) {
    // Discarded: the object goes while still locked (the renewer is stopped, so nothing
    // makes it again); its lock goes with it.
    r = discard_ ? rados_aio_remove(pool_->io.get(), oid_.c_str(), c)
                 : rados_aio_unlock(pool_->io.get(), oid_.c_str(), kLockName, cookie_.c_str(), c);
    if (r == 0) {
      const auto deadline = std::chrono::steady_clock::now() + kUnlockWait;
      while (!rados_aio_is_complete(c) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      r = rados_aio_is_complete(c) ? rados_aio_get_return_value(c) : -ETIMEDOUT;
    }
    rados_aio_release(c);  // a pending op keeps its own reference
  }
  if (r < 0 && r != -ENOENT) {
    log_->warn("rados unlock failed, the lease ends the lock lock={} errno={}", pool_->Where(oid_),
               -r);
  }
}

void RbdLock::RenewLoop(const std::shared_ptr<Renewal>& state) noexcept {
  // The body of a thread the library starts: an exception escaping it would end the host
  // process (std::terminate), so it is logged; the lease then ends the lock.
  try {
    RenewUntilStopped(*state);
  } catch (const std::exception& e) {
    state->log->error("rados lock renewal stopped by an error lock={} error={}",
                      state->pool->Where(state->oid), e.what());
  }
}

void RbdLock::RenewUntilStopped(Renewal& state) {
  std::unique_lock lock(state.mu);
  while (!state.cv.wait_for(lock, kLease / 3, [&] { return state.stop; })) {
    lock.unlock();  // the destructor must be able to stop waiting for a stuck renewal
    timeval lease{kLease.count(), 0};
    const int r = rados_lock_exclusive(state.pool->io.get(), state.oid.c_str(), kLockName,
                                       state.cookie.c_str(), "cachemgr", &lease,
                                       LIBRADOS_LOCK_FLAG_MAY_RENEW);
    if (r < 0) {
      state.log->warn("rados lock renewal failed lock={} errno={}", state.pool->Where(state.oid),
                      -r);
    }
    lock.lock();
  }
  state.done = true;
  state.cv.notify_all();
}

}  // namespace cachemgr::storage::rbd
