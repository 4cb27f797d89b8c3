// storage/rbd/rbd_backend.cpp: the Backend on librbd/librados (see rbd_backend.h).
// Over 600 lines: the RADOS lock and snapshot/children code are to move to files of their
// own (the architecture work); watchers are apart already (rbd_watchers.cpp).
#include "storage/rbd/rbd_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "storage/factory.h"
#include "storage/rbd/rbd_error.h"
#include "storage/rbd/rbd_io.h"

namespace cachemgr::storage {

std::unique_ptr<Backend> MakeRbdBackend(const RbdBackendOptions& options,
                                        std::shared_ptr<spdlog::logger> logger) {
  return std::make_unique<rbd::RbdBackend>(options, std::move(logger));
}

}  // namespace cachemgr::storage

namespace cachemgr::storage::rbd {
namespace {

using Clock = std::chrono::steady_clock;

long long MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

uint64_t FeatureBits(const std::vector<std::string>& names) {
  static const std::map<std::string, uint64_t> kBits = {
      {"layering", RBD_FEATURE_LAYERING},          {"striping", RBD_FEATURE_STRIPINGV2},
      {"exclusive-lock", RBD_FEATURE_EXCLUSIVE_LOCK}, {"object-map", RBD_FEATURE_OBJECT_MAP},
      {"fast-diff", RBD_FEATURE_FAST_DIFF},        {"deep-flatten", RBD_FEATURE_DEEP_FLATTEN},
      {"journaling", RBD_FEATURE_JOURNALING},
  };
  uint64_t bits = 0;
  for (const auto& name : names) {
    auto it = kBits.find(name);
    if (it == kBits.end()) {
      throw Error(Errc::kConfig, "backend.rbd.features: unknown RBD feature '" + name + "'");
    }
    bits |= it->second;
  }
  // Clones need layering whatever the list says.
  return bits | RBD_FEATURE_LAYERING;
}

// The parent of an open image, with what is needed to follow the chain by id (the parent
// may be in the trash, where it has no name to open it by).
struct ParentSpec {
  std::string pool;
  std::string ns;
  std::string image_id;
  std::string image_name;
  std::string snap;
};

std::optional<ParentSpec> GetParent(rbd_image_t image, const std::string& where) {
  rbd_linked_image_spec_t img{};
  rbd_snap_spec_t snap{};
  const int r = rbd_get_parent(image, &img, &snap);
  if (r == -ENOENT) return std::nullopt;
  Check(r, "get parent of", where);
  ParentSpec p{img.pool_name, img.pool_namespace, img.image_id, img.image_name,
               snap.name != nullptr ? snap.name : ""};
  rbd_linked_image_spec_cleanup(&img);
  rbd_snap_spec_cleanup(&snap);
  return p;
}

// Every snapshot of an open image, of every namespace (user and trash): a clone v2
// parent snapshot removed while it has children lives on in the trash namespace.
std::vector<rbd_snap_info_t> ListAllSnaps(rbd_image_t image, const std::string& where,
                                          std::vector<std::string>* names) {
  std::vector<rbd_snap_info_t> snaps(16);
  for (;;) {
    int max = static_cast<int>(snaps.size());
    const int r = rbd_snap_list(image, snaps.data(), &max);
    if (r == -ERANGE) {
      snaps.resize(static_cast<size_t>(max) + 1);
      continue;
    }
    Check(r, "list snapshots of", where);
    snaps.resize(static_cast<size_t>(r));
    break;
  }
  names->clear();
  for (const auto& s : snaps) names->emplace_back(s.name);
  std::vector<rbd_snap_info_t> out = snaps;
  // rbd_snap_list_end frees the names; copy what is needed first.
  snaps.push_back(rbd_snap_info_t{});
  rbd_snap_list_end(snaps.data());
  for (size_t i = 0; i < out.size(); ++i) out[i].name = (*names)[i].c_str();
  return out;
}

std::vector<ImageRef> ListChildrenOfCurrentSnap(rbd_image_t image, const std::string& where) {
  std::vector<rbd_linked_image_spec_t> specs(8);
  size_t max = specs.size();
  for (;;) {
    max = specs.size();
    const int r = rbd_list_children3(image, specs.data(), &max);
    if (r == -ERANGE) {
      specs.resize(max);
      continue;
    }
    Check(r, "list children of", where);
    break;
  }
  std::vector<ImageRef> out;
  for (size_t i = 0; i < max; ++i) {
    out.push_back(ImageRef{specs[i].pool_name, specs[i].image_name});
  }
  rbd_linked_image_spec_list_cleanup(specs.data(), max);
  return out;
}

// Whether any snapshot of the image (opened read-only) still has clones.
bool AnySnapHasChildren(rbd_image_t image, const std::string& where) {
  std::vector<std::string> names;
  const auto snaps = ListAllSnaps(image, where, &names);
  bool found = false;
  for (const auto& s : snaps) {
    Check(rbd_snap_set_by_id(image, s.id), "set snapshot of", where);
    if (!ListChildrenOfCurrentSnap(image, where).empty()) {
      found = true;
      break;
    }
  }
  (void)rbd_snap_set(image, nullptr);  // back to the head
  return found;
}

// Throws kBusy when the named snapshot of an open image has clones.
void RefuseIfChildren(rbd_image_t image, const std::string& snap, const std::string& where) {
  Check(rbd_snap_set(image, snap.c_str()), "set snapshot", where);
  const auto children = ListChildrenOfCurrentSnap(image, where);
  (void)rbd_snap_set(image, nullptr);
  if (!children.empty()) {
    throw Error(Errc::kBusy, "rbd snapshot " + where + " has " +
                                 std::to_string(children.size()) + " clone(s), e.g. " +
                                 children.front().pool + "/" + children.front().name);
  }
}

struct ProgressCtx {
  const ProgressFn* fn;
};

int ProgressThunk(uint64_t done, uint64_t total, void* arg) {
  const auto* ctx = static_cast<ProgressCtx*>(arg);
  if (ctx->fn != nullptr && *ctx->fn) (*ctx->fn)(done, total);
  return 0;
}

std::string RandomHex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(n, '0');
  for (auto& c : s) c = kHex[rng() % 16];
  return s;
}

// Who holds a lock, as written in its cookie:
// host:boot-id:pid-namespace:pid:process-start-time:random.
struct Holder {
  std::string host, boot, pid_ns;
  long pid = 0;
  std::string start_time;

  std::string Cookie(const std::string& random) const {
    return host + ":" + boot + ":" + pid_ns + ":" + std::to_string(pid) + ":" + start_time +
           ":" + random;
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
  const std::string stat = ReadFirstLine("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(paren + 1));
  std::string field;
  // Fields after the command: state (3rd) ... starttime (22nd).
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i == 3 && (field == "Z" || field == "X" || field == "x")) return std::nullopt;
    if (i == 22) return field;
  }
  return std::nullopt;
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
  if (parts.size() != 6 || parts[0] != self.host || self.boot.empty() ||
      self.pid_ns.empty()) {
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
  ssize_t n = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    tag.assign(tag_len, 0);
    clients.assign(clients_len, 0);
    cookies.assign(cookies_len, 0);
    addrs.assign(addrs_len, 0);
    int exclusive = 0;
    n = rados_list_lockers(pool.io.get(), oid.c_str(), kLockName, &exclusive, tag.data(),
                           &tag_len, clients.data(), &clients_len, cookies.data(),
                           &cookies_len, addrs.data(), &addrs_len);
    if (n != -ERANGE) break;
  }
  if (n <= 0) return false;  // gone meanwhile, or unreadable: the caller waits and retries
  const auto client_list = SplitNul(clients, clients_len);
  const auto cookie_list = SplitNul(cookies, cookies_len);
  bool broken = false;
  for (size_t i = 0; i < client_list.size() && i < cookie_list.size(); ++i) {
    const auto reason = DeadHolderReason(cookie_list[i], HolderAs(options_.host_id));
    if (!reason) continue;
    const int r = rados_break_lock(pool.io.get(), oid.c_str(), kLockName,
                                   client_list[i].c_str(), cookie_list[i].c_str());
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

std::string PoolCtx::Where(const std::string& name) const {
  return ns.empty() ? pool + "/" + name : pool + "/" + ns + "/" + name;
}

RbdBackend::RbdBackend(const RbdBackendOptions& options, std::shared_ptr<spdlog::logger> logger)
    : options_(options),
      log_(logger ? std::move(logger)
                  : std::make_shared<spdlog::logger>(
                        "rbd", std::make_shared<spdlog::sinks::null_sink_mt>())),
      features_(FeatureBits(options.features)) {
  ValidateName("pool", options_.pool);
  if (!options_.namespace_.empty()) ValidateName("namespace", options_.namespace_);
  if (access(options_.conf.c_str(), R_OK) != 0) {
    throw Error(Errc::kConfig, "backend.rbd.conf: cannot read " + options_.conf + ": " +
                                   std::strerror(errno));
  }
  if (!options_.keyring.empty() && access(options_.keyring.c_str(), R_OK) != 0) {
    throw Error(Errc::kConfig, "backend.rbd.keyring: cannot read " + options_.keyring + ": " +
                                   std::strerror(errno));
  }
  const auto start = Clock::now();
  const std::string entity = "client." + options_.client;
  const std::string what = "cluster (conf " + options_.conf + ", " + entity + ")";
  auto cluster = std::make_shared<ClusterHandle>();
  Check(rados_create2(cluster->out(), "ceph", entity.c_str(), 0), "create handle for", what);
  const int r = rados_conf_read_file(cluster->get(), options_.conf.c_str());
  if (r < 0) {
    throw Error(Errc::kConfig, "backend.rbd.conf: cannot parse " + options_.conf + ": " +
                                   std::strerror(-r));
  }
  auto set = [&](const char* key, const std::string& value) {
    Check(rados_conf_set(cluster->get(), key, value.c_str()), std::string("set ") + key, what);
  };
  if (!options_.keyring.empty()) set("keyring", options_.keyring);
  // Without these a dead monitor makes rados_connect wait 300 s and an unreachable OSD
  // makes an op wait forever.
  const std::string connect_s = std::to_string(std::max<uint32_t>(options_.connect_timeout_s, 1));
  const std::string op_s = std::to_string(options_.op_timeout_s);
  set("client_mount_timeout", connect_s);
  set("rados_mon_op_timeout", op_s);
  set("rados_osd_op_timeout", op_s);
  set("rbd_default_clone_format", "2");
  // Library code never writes to stdout/stderr: Ceph's own log goes nowhere.
  set("log_to_stderr", "false");
  set("err_to_stderr", "false");
  set("log_file", "");

  const int rc = rados_connect(cluster->get());
  if (rc < 0) {
    const std::string cause = rc == -ETIMEDOUT ? " (no monitor answered within " + connect_s + " s)"
                              : (rc == -EACCES || rc == -EPERM)
                                  ? " (cephx refused the key of " + entity + ")"
                                  : "";
    ThrowErrno(rc, "connect to", what + cause);
  }
  char fsid[64] = {};
  Check(rados_cluster_fsid(cluster->get(), fsid, sizeof(fsid)), "read fsid of", what);
  fsid_ = fsid;
  cluster_ = std::move(cluster);

  // Opening the configured pool now turns a missing pool into an error at start-up: a
  // config error naming the key (the pool is the operator's to create, not ours).
  std::shared_ptr<PoolCtx> pool;
  try {
    pool = Pool(options_.pool);
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
    throw Error(Errc::kConfig,
                "backend.rbd.pool: pool '" + options_.pool + "' does not exist in cluster " +
                    fsid_ + "; create it (ceph osd pool create " + options_.pool +
                    "; rbd pool init " + options_.pool + ") or name an existing pool");
  }
  if (!options_.namespace_.empty()) {
    bool exists = false;
    // The namespace check needs the default-namespace ioctx of the pool.
    auto base = PoolNs(options_.pool, "");
    Check(rbd_namespace_exists(base->io.get(), options_.namespace_.c_str(), &exists),
          "check namespace", options_.pool + "/" + options_.namespace_);
    if (!exists) {
      const int nr = rbd_namespace_create(base->io.get(), options_.namespace_.c_str());
      if (nr < 0 && nr != -EEXIST) {
        ThrowErrno(nr, "create namespace", options_.pool + "/" + options_.namespace_);
      }
      log_->info("rbd namespace created pool={} namespace={}", options_.pool,
                 options_.namespace_);
    }
  }
  log_->info("rbd connected conf={} client={} fsid={} location={} ms={}", options_.conf,
             entity, fsid_, location(), MsSince(start));
}

RbdBackend::~RbdBackend() = default;

std::string RbdBackend::location() const {
  return options_.namespace_.empty() ? options_.pool : options_.pool + "/" + options_.namespace_;
}

std::shared_ptr<PoolCtx> RbdBackend::Pool(const std::string& pool) {
  return PoolNs(pool, pool == options_.pool ? options_.namespace_ : std::string());
}

std::shared_ptr<PoolCtx> RbdBackend::PoolNs(const std::string& pool, const std::string& ns) {
  ValidateName("pool", pool);
  const std::string key = pool + "/" + ns;
  std::lock_guard lock(mu_);
  if (auto it = pools_.find(key); it != pools_.end()) return it->second;
  auto ctx = std::make_shared<PoolCtx>();
  ctx->cluster = cluster_;
  ctx->pool = pool;
  ctx->ns = ns;
  const int r = rados_ioctx_create(cluster_->get(), pool.c_str(), ctx->io.out());
  if (r == -ENOENT) {
    throw Error(Errc::kNotFound, "rbd pool " + pool + " does not exist (cluster " + fsid_ + ")");
  }
  Check(r, "open pool", pool);
  rados_ioctx_set_namespace(ctx->io.get(), ns.c_str());
  pools_.emplace(key, ctx);
  return ctx;
}

ImageHandle RbdBackend::OpenImage(const PoolCtx& pool, const std::string& name, bool read_only,
                                  const char* snap) {
  ValidateName("image", name);
  ImageHandle image;
  const int r = read_only ? rbd_open_read_only(pool.io.get(), name.c_str(), image.out(), snap)
                          : rbd_open(pool.io.get(), name.c_str(), image.out(), snap);
  if (r < 0) {
    ThrowErrno(r, "open", snap != nullptr ? pool.Where(name) + "@" + snap : pool.Where(name));
  }
  return image;
}

ImageOptionsHandle RbdBackend::NewImageOptions() const {
  ImageOptionsHandle opts;
  rbd_image_options_create(opts.out());
  Check(rbd_image_options_set_uint64(opts.get(), RBD_IMAGE_OPTION_FORMAT, 2), "set option", "format");
  Check(rbd_image_options_set_uint64(opts.get(), RBD_IMAGE_OPTION_FEATURES, features_), "set option",
        "features");
  return opts;
}

bool RbdBackend::Exists(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  ImageHandle image;
  const int r = rbd_open_read_only(pool->io.get(), ref.name.c_str(), image.out(), nullptr);
  if (r == -ENOENT) return false;
  Check(r, "open", pool->Where(ref.name));
  return true;
}

ImageInfo RbdBackend::Stat(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  ImageInfo info{ref, 0, std::nullopt};
  Check(rbd_get_size(image.get(), &info.size), "get size of", pool->Where(ref.name));
  if (auto p = GetParent(image.get(), pool->Where(ref.name))) {
    info.parent = SnapRef{ImageRef{p->pool, p->image_name}, p->snap};
  }
  return info;
}

std::map<std::string, std::string> RbdBackend::ListIdentities(const std::string& pool_name) {
  auto pool = Pool(pool_name);
  std::vector<rbd_image_spec_t> specs(64);
  size_t max = 0;
  for (;;) {
    max = specs.size();
    const int r = rbd_list2(pool->io.get(), specs.data(), &max);
    if (r == -ERANGE) {
      specs.resize(max);
      continue;
    }
    Check(r, "list images in", pool->Where(""));
    break;
  }
  // rbd_list2 gives each image's id with its name: the identity, in one round trip.
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < max; ++i) out.emplace(specs[i].name, specs[i].id);
  rbd_image_spec_list_cleanup(specs.data(), max);
  return out;
}

std::vector<std::string> RbdBackend::List(const std::string& pool_name) {
  std::vector<std::string> names;
  for (auto& [name, id] : ListIdentities(pool_name)) names.push_back(name);
  return names;  // sorted: the map's order
}

uint64_t RbdBackend::AllocatedBytes(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  uint64_t size = 0;
  Check(rbd_get_size(image.get(), &size), "get size of", pool->Where(ref.name));
  uint64_t used = 0;
  // Whole objects, from the object map when fast-diff is on: what `rbd du` reports, and
  // cheap. The parent's data is not counted: it is not this image's.
  auto cb = [](uint64_t, size_t len, int exists, void* arg) -> int {
    if (exists) *static_cast<uint64_t*>(arg) += len;
    return 0;
  };
  Check(rbd_diff_iterate2(image.get(), nullptr, 0, size, 0, 1, cb, &used), "diff",
        pool->Where(ref.name));
  return used;
}

std::unique_ptr<ImageWriter> RbdBackend::Create(const ImageRef& ref, uint64_t size) {
  auto pool = Pool(ref.pool);
  ValidateName("image", ref.name);
  auto opts = NewImageOptions();
  Check(rbd_create4(pool->io.get(), ref.name.c_str(), size, opts.get()), "create",
        pool->Where(ref.name));
  log_->debug("rbd image created image={} size={}", pool->Where(ref.name), size);
  return std::make_unique<RbdImageWriter>(pool, ref.name, size, options_.queue_depth,
                                          std::chrono::seconds(options_.op_timeout_s), log_);
}

bool RbdBackend::Adopt(const std::filesystem::path& /*raw_file*/, const ImageRef& ref) {
  ValidateName("image", ref.name);
  return false;  // RBD cannot take a file's blocks over; the caller streams it.
}

std::unique_ptr<ImageReader> RbdBackend::Open(const ImageRef& ref,
                                              const std::optional<std::string>& snap) {
  auto pool = Pool(ref.pool);
  if (snap) ValidateName("snapshot", *snap);
  auto image = OpenImage(*pool, ref.name, true, snap ? snap->c_str() : nullptr);
  return std::make_unique<RbdImageReader>(
      pool, std::move(image), snap ? pool->Where(ref.name) + "@" + *snap : pool->Where(ref.name));
}

void RbdBackend::Resize(const ImageRef& ref, uint64_t size) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, false);
  uint64_t current = 0;
  Check(rbd_get_size(image.get(), &current), "get size of", pool->Where(ref.name));
  if (size == current) return;
  if (size < current) {
    throw Error(Errc::kInvalidArgument, "rbd resize " + pool->Where(ref.name) + ": " +
                                            std::to_string(size) + " is smaller than its size " +
                                            std::to_string(current) + " (shrinking loses data)");
  }
  Check(rbd_resize(image.get(), size), "resize", pool->Where(ref.name));
}

void RbdBackend::Rename(const ImageRef& from, const std::string& to_name) {
  auto pool = Pool(from.pool);
  ValidateName("image", from.name);
  ValidateName("image", to_name);
  Check(rbd_rename(pool->io.get(), from.name.c_str(), to_name.c_str()), "rename",
        pool->Where(from.name) + " to " + to_name);
}

std::string RbdBackend::Identity(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  // The id is what the image keeps across rename, flatten and the trash; `rbd cp` and a
  // new image of the same name get a new one.
  char id[256] = {};  // ids are a few hex digits; this is far more than librbd writes
  Check(rbd_get_id(image.get(), id, sizeof id - 1), "get id of", pool->Where(ref.name));
  return id;
}

void RbdBackend::RemoveAllSnapshots(rbd_image_t image, const std::string& where) {
  std::vector<std::string> names;
  for (const auto& s : ListAllSnaps(image, where, &names)) {
    rbd_snap_namespace_type_t type{};
    Check(rbd_snap_get_namespace_type(image, s.id, &type), "get snapshot namespace of", where);
    if (type != RBD_SNAP_NAMESPACE_TYPE_USER) continue;
    int is_protected = 0;
    Check(rbd_snap_is_protected(image, s.name, &is_protected), "check protection of",
          where + "@" + s.name);
    if (is_protected) {
      Check(rbd_snap_unprotect(image, s.name), "unprotect", where + "@" + s.name);
    }
    Check(rbd_snap_remove(image, s.name), "remove snapshot", where + "@" + s.name);
  }
}

RemoveOutcome RbdBackend::Remove(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  const std::string where = pool->Where(ref.name);
  bool has_children = false;
  {
    auto image = OpenImage(*pool, ref.name, true);
    has_children = AnySnapHasChildren(image.get(), where);
  }
  if (has_children) {
    // Clone v2 children keep reading from a trashed parent; gc purges it later.
    Check(rbd_trash_move(pool->io.get(), ref.name.c_str(), 0), "move to trash", where);
    log_->info("rbd image has clones, moved to trash image={}", where);
    return RemoveOutcome::kTrashed;
  }
  {
    auto image = OpenImage(*pool, ref.name, false);
    RemoveAllSnapshots(image.get(), where);
  }
  const int r = rbd_remove(pool->io.get(), ref.name.c_str());
  if (r == -EBUSY) {
    // Name what holds it, so the operator (and the pass's log) sees the cause.
    Check(r, "remove", where + " (" + DescribeBusy(*pool, ref.name) + ")");
  }
  Check(r, "remove", where);
  log_->debug("rbd image removed image={}", where);
  return RemoveOutcome::kRemoved;
}

void RbdBackend::CreateSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  Check(rbd_snap_create(image.get(), snap.snap.c_str()), "create snapshot",
        pool->Where(snap.image.name) + "@" + snap.snap);
}

void RbdBackend::ProtectSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  const std::string where = pool->Where(snap.image.name) + "@" + snap.snap;
  int is_protected = 0;
  Check(rbd_snap_is_protected(image.get(), snap.snap.c_str(), &is_protected),
        "check protection of", where);
  if (is_protected) return;  // protecting twice is not an error for the engine
  Check(rbd_snap_protect(image.get(), snap.snap.c_str()), "protect", where);
}

void RbdBackend::UnprotectSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  const std::string where = pool->Where(snap.image.name) + "@" + snap.snap;
  int is_protected = 0;
  Check(rbd_snap_is_protected(image.get(), snap.snap.c_str(), &is_protected),
        "check protection of", where);
  if (!is_protected) return;
  // librbd lets a snapshot with clone v2 children be unprotected (v2 counts children
  // itself); the engine relies on protection meaning "clones depend on this".
  RefuseIfChildren(image.get(), snap.snap, where);
  Check(rbd_snap_unprotect(image.get(), snap.snap.c_str()), "unprotect", where);
}

void RbdBackend::RemoveSnapshot(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, false);
  const std::string where = pool->Where(snap.image.name) + "@" + snap.snap;
  // With clone v2 librbd would move a snapshot that has children to the snapshot trash;
  // refuse instead, so a snapshot never disappears from under its clones silently.
  RefuseIfChildren(image.get(), snap.snap, where);
  Check(rbd_snap_remove(image.get(), snap.snap.c_str()), "remove snapshot", where);
}

std::vector<SnapInfo> RbdBackend::ListSnapshots(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  const std::string where = pool->Where(ref.name);
  std::vector<std::string> names;
  std::vector<SnapInfo> out;
  for (const auto& s : ListAllSnaps(image.get(), where, &names)) {
    rbd_snap_namespace_type_t type{};
    Check(rbd_snap_get_namespace_type(image.get(), s.id, &type), "get snapshot namespace of",
          where);
    if (type != RBD_SNAP_NAMESPACE_TYPE_USER) continue;
    int is_protected = 0;
    Check(rbd_snap_is_protected(image.get(), s.name, &is_protected), "check protection of",
          where + "@" + s.name);
    out.push_back(SnapInfo{s.name, is_protected != 0});
  }
  return out;
}

void RbdBackend::Clone(const SnapRef& parent, const ImageRef& child) {
  auto parent_pool = Pool(parent.image.pool);
  auto child_pool = Pool(child.pool);
  ValidateName("image", parent.image.name);
  ValidateName("snapshot", parent.snap);
  ValidateName("image", child.name);
  auto opts = NewImageOptions();
  Check(rbd_image_options_set_uint64(opts.get(), RBD_IMAGE_OPTION_CLONE_FORMAT, 2), "set option",
        "clone_format");
  const auto start = Clock::now();
  Check(rbd_clone3(parent_pool->io.get(), parent.image.name.c_str(), parent.snap.c_str(),
                   child_pool->io.get(), child.name.c_str(), opts.get()),
        "clone", parent_pool->Where(parent.image.name) + "@" + parent.snap + " to " +
                     child_pool->Where(child.name));
  log_->debug("rbd clone parent={}@{} volume={} ms={}", parent_pool->Where(parent.image.name),
              parent.snap, child_pool->Where(child.name), MsSince(start));
}

void RbdBackend::CopyFrom(const ImageRef& source, const char* snap, const ImageRef& dest,
                          const ProgressFn& progress) {
  auto src_pool = Pool(source.pool);
  auto dst_pool = Pool(dest.pool);
  ValidateName("image", dest.name);
  auto image = OpenImage(*src_pool, source.name, true, snap);
  auto opts = NewImageOptions();
  ProgressCtx ctx{&progress};
  const auto start = Clock::now();
  // rbd_copy (not deep copy): it reads through the parent chain, so the copy is an
  // independent image even when the source is a clone; zero runs stay holes.
  Check(rbd_copy_with_progress4(image.get(), dst_pool->io.get(), dest.name.c_str(), opts.get(),
                                ProgressThunk, &ctx, 4096),
        "copy", src_pool->Where(source.name) + (snap ? std::string("@") + snap : "") + " to " +
                    dst_pool->Where(dest.name));
  log_->debug("rbd copy source={} dest={} ms={}", src_pool->Where(source.name),
              dst_pool->Where(dest.name), MsSince(start));
}

void RbdBackend::Copy(const SnapRef& source, const ImageRef& dest, const ProgressFn& progress) {
  ValidateName("snapshot", source.snap);
  CopyFrom(source.image, source.snap.c_str(), dest, progress);
}

void RbdBackend::Copy(const ImageRef& source, const ImageRef& dest, const ProgressFn& progress) {
  CopyFrom(source, nullptr, dest, progress);
}

void RbdBackend::Flatten(const ImageRef& ref, const ProgressFn& progress) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, false);
  ProgressCtx ctx{&progress};
  const auto start = Clock::now();
  const int r = rbd_flatten_with_progress(image.get(), ProgressThunk, &ctx);
  if (r == -EINVAL && !GetParent(image.get(), pool->Where(ref.name))) return;  // nothing to do
  Check(r, "flatten", pool->Where(ref.name));
  log_->info("rbd flatten image={} ms={}", pool->Where(ref.name), MsSince(start));
}

std::optional<SnapRef> RbdBackend::Parent(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  auto p = GetParent(image.get(), pool->Where(ref.name));
  if (!p) return std::nullopt;
  return SnapRef{ImageRef{p->pool, p->image_name}, p->snap};
}

uint32_t RbdBackend::Depth(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  std::string where = pool->Where(ref.name);
  uint32_t depth = 0;
  // Follow the chain by image id: a parent may sit in the trash under its old name.
  while (auto p = GetParent(image.get(), where)) {
    if (++depth > 64) {
      throw Error(Errc::kCorrupt, "rbd parent chain of " + pool->Where(ref.name) +
                                      " is longer than 64 (a loop?)");
    }
    auto parent_pool = PoolNs(p->pool, p->ns);
    where = parent_pool->Where(p->image_name);
    ImageHandle parent;
    Check(rbd_open_by_id_read_only(parent_pool->io.get(), p->image_id.c_str(), parent.out(),
                                   nullptr),
          "open parent", where);
    image = std::move(parent);
  }
  return depth;
}

std::vector<ImageRef> RbdBackend::Children(const SnapRef& snap) {
  auto pool = Pool(snap.image.pool);
  ValidateName("snapshot", snap.snap);
  auto image = OpenImage(*pool, snap.image.name, true, snap.snap.c_str());
  return ListChildrenOfCurrentSnap(image.get(), pool->Where(snap.image.name) + "@" + snap.snap);
}

std::map<std::string, std::string> RbdBackend::GetMetadata(const ImageRef& ref) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, true);
  std::string keys(4096, '\0');
  std::string values(4096, '\0');
  for (;;) {
    size_t key_len = keys.size();
    size_t val_len = values.size();
    const int r =
        rbd_metadata_list(image.get(), "", 0, keys.data(), &key_len, values.data(), &val_len);
    if (r == -ERANGE) {
      keys.resize(std::max(key_len, keys.size() * 2));
      values.resize(std::max(val_len, values.size() * 2));
      continue;
    }
    Check(r, "list metadata of", pool->Where(ref.name));
    keys.resize(key_len);
    values.resize(val_len);
    break;
  }
  // Both buffers are NUL-separated lists, key i pairs with value i.
  std::map<std::string, std::string> out;
  size_t kpos = 0;
  size_t vpos = 0;
  while (kpos < keys.size() && keys[kpos] != '\0') {
    const std::string key(keys.c_str() + kpos);
    const std::string value(values.c_str() + vpos);
    kpos += key.size() + 1;
    vpos += value.size() + 1;
    out.emplace(key, value);
  }
  return out;
}

void RbdBackend::SetMetadata(const ImageRef& ref, const std::string& key,
                             const std::string& value) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, false);
  Check(rbd_metadata_set(image.get(), key.c_str(), value.c_str()), "set metadata " + key + " on",
        pool->Where(ref.name));
}

void RbdBackend::RemoveMetadata(const ImageRef& ref, const std::string& key) {
  auto pool = Pool(ref.pool);
  auto image = OpenImage(*pool, ref.name, false);
  const int r = rbd_metadata_remove(image.get(), key.c_str());
  if (r == -ENOENT) return;  // already gone: the state the caller wants
  Check(r, "remove metadata " + key + " from", pool->Where(ref.name));
}

std::vector<TrashEntry> RbdBackend::ListTrash() {
  auto pool = Pool(options_.pool);
  std::vector<rbd_trash_image_info_t> infos(16);
  size_t n = 0;
  for (;;) {
    n = infos.size();
    const int r = rbd_trash_list(pool->io.get(), infos.data(), &n);
    if (r == -ERANGE) {
      infos.resize(n);
      continue;
    }
    Check(r, "list trash of", location());
    break;
  }
  std::vector<TrashEntry> out;
  for (size_t i = 0; i < n; ++i) {
    const auto& info = infos[i];
    if (info.source != RBD_TRASH_IMAGE_SOURCE_USER &&
        info.source != RBD_TRASH_IMAGE_SOURCE_USER_PARENT) {
      continue;  // mirroring/migration/in-progress removals are not ours to purge
    }
    TrashEntry e{info.id, ImageRef{options_.pool, info.name}, false, info.id};
    ImageHandle image;
    const int r = rbd_open_by_id_read_only(pool->io.get(), info.id, image.out(), nullptr);
    if (r == -ENOENT) continue;  // purged meanwhile
    Check(r, "open trashed", pool->Where(info.name) + " (id " + info.id + ")");
    e.has_children = AnySnapHasChildren(image.get(), pool->Where(info.name));
    out.push_back(std::move(e));
  }
  rbd_trash_list_cleanup(infos.data(), n);
  return out;
}

bool RbdBackend::PurgeTrash(const TrashEntry& entry) {
  auto pool = Pool(entry.original.pool.empty() ? options_.pool : entry.original.pool);
  const std::string where = pool->Where(entry.original.name) + " (trash id " + entry.id + ")";
  {
    ImageHandle image;
    Check(rbd_open_by_id(pool->io.get(), entry.id.c_str(), image.out(), nullptr), "open trashed",
          where);
    if (AnySnapHasChildren(image.get(), where)) return false;
    RemoveAllSnapshots(image.get(), where);
  }
  Check(rbd_trash_remove(pool->io.get(), entry.id.c_str(), false), "purge from trash", where);
  log_->info("rbd trashed image purged image={}", where);
  return true;
}

std::unique_ptr<Lock> RbdBackend::AcquireLock(const std::string& key,
                                              std::chrono::milliseconds timeout) {
  ValidateName("lock", key);
  auto pool = LockPool();
  const std::string oid = kLockPrefix + key;
  // The cookie tells holders apart (two locks in one process must still exclude) and
  // names the holder, so a lock left by a crashed process of this host can be broken.
  const std::string cookie = HolderAs(options_.host_id).Cookie(RandomHex(16));
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
  Check(rados_nobjects_list_open(pool->io.get(), &list), "list lock objects",
        pool->Where(""));
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

}  // namespace cachemgr::storage::rbd
