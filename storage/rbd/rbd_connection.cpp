// One RADOS client per process and identity (rbd_connection.h).
#include "storage/rbd/rbd_connection.h"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "cachemgr/error.h"
#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {

namespace {

using Key = std::tuple<std::string, std::string, std::string, uint32_t, uint32_t>;

// One identity's client. Its mutex is held while it connects, so a second caller of the
// same identity waits for that client rather than making its own; callers of other
// identities do not wait (an unreachable cluster stalls only its own).
struct Slot {
  std::mutex mu;
  std::weak_ptr<ClusterHandle> client;
  std::string fsid;
};

struct Registry {
  std::mutex mu;  // the map only; never held across a librados call
  std::map<Key, std::shared_ptr<Slot>> slots;
};

// Leaked on purpose: a handle dropped during static destruction still finds nothing freed.
Registry* g_registry = nullptr;
std::once_flag g_registry_once;

Registry& TheRegistry() {
  std::call_once(g_registry_once, [] {
    g_registry = new Registry;
    // A forked child (a Python multiprocessing worker) has none of the parent's librados
    // threads: the parent's clients do nothing there, and a mutex a parent thread held at
    // the fork stays held. The child starts with a registry of its own.
    (void)pthread_atfork(nullptr, nullptr, [] { g_registry = new Registry; });
  });
  return *g_registry;
}

// A new connected client; its fsid in *fsid_out.
ClusterHandle Connect(const ConnectParams& p, std::string* fsid_out) {
  const std::string what = "cluster (conf " + p.conf + ", " + p.entity + ")";
  ClusterHandle cluster;
  Check(rados_create2(cluster.out(), "ceph", p.entity.c_str(), 0), "create handle for", what);
  const int r = rados_conf_read_file(cluster.get(), p.conf.c_str());
  if (r < 0) {
    throw Error(Errc::kConfig,
                "backend.rbd.conf: cannot parse " + p.conf + ": " + std::strerror(-r));
  }
  auto set = [&](const char* key, const std::string& value) {
    Check(rados_conf_set(cluster.get(), key, value.c_str()), std::string("set ") + key, what);
  };
  if (!p.keyring.empty()) set("keyring", p.keyring);
  // No admin socket (rbd_connection.h): a path ceph.conf gives every client of a name is
  // probed and unlinked by each new one, and the tool's commands are short-lived.
  set("admin_socket", "");
  // Without these a dead monitor makes rados_connect wait 300 s and an unreachable OSD
  // makes an op wait forever.
  const std::string connect_s = std::to_string(std::max<uint32_t>(p.connect_timeout_s, 1));
  const std::string op_s = std::to_string(p.op_timeout_s);
  set("client_mount_timeout", connect_s);
  set("rados_mon_op_timeout", op_s);
  set("rados_osd_op_timeout", op_s);
  set("rbd_default_clone_format", "2");
  // Library code never writes to stdout/stderr: Ceph's own log goes nowhere.
  set("log_to_stderr", "false");
  set("err_to_stderr", "false");
  set("log_file", "");

  const int rc = rados_connect(cluster.get());
  if (rc < 0) {
    const std::string cause = rc == -ETIMEDOUT ? " (no monitor answered within " + connect_s + " s)"
                              : (rc == -EACCES || rc == -EPERM)
                                  ? " (cephx refused the key of " + p.entity + ")"
                                  : "";
    ThrowErrno(rc, "connect to", what + cause);
  }
  char fsid[64] = {};
  Check(rados_cluster_fsid(cluster.get(), fsid, sizeof(fsid)), "read fsid of", what);
  *fsid_out = fsid;
  return cluster;
}

std::shared_ptr<Slot> SlotFor(const Key& key) {
  auto& reg = TheRegistry();
  std::lock_guard lock(reg.mu);
  // Slots whose client is gone and that nobody is connecting go first: the map stays as
  // small as the identities in use.
  for (auto it = reg.slots.begin(); it != reg.slots.end();) {
    const bool idle = it->second.use_count() == 1 && it->second->client.expired();
    it = idle && it->first != key ? reg.slots.erase(it) : std::next(it);
  }
  auto& slot = reg.slots[key];
  if (!slot) slot = std::make_shared<Slot>();
  return slot;
}

}  // namespace

ConnectParams ConnectParamsOf(const RbdBackendOptions& options) {
  return {.conf = options.conf,
          .entity = "client." + options.client,
          .keyring = options.keyring,
          .connect_timeout_s = options.connect_timeout_s,
          .op_timeout_s = options.op_timeout_s};
}

Connection SharedConnection(const ConnectParams& params) {
  const auto slot = SlotFor(
      {params.conf, params.entity, params.keyring, params.connect_timeout_s, params.op_timeout_s});
  std::lock_guard lock(slot->mu);
  if (auto live = slot->client.lock()) return {std::move(live), slot->fsid};
  std::string fsid;
  auto made = std::make_shared<ClusterHandle>(Connect(params, &fsid));
  slot->client = made;
  slot->fsid = fsid;
  return {std::move(made), std::move(fsid)};
}

}  // namespace cachemgr::storage::rbd
