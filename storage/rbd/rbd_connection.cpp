// One RADOS client per process and identity (rbd_connection.h).
#include "storage/rbd/rbd_connection.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "cachemgr/error.h"
#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {

namespace {

using Key = std::tuple<std::string, std::string, std::string, uint32_t, uint32_t>;

struct Registry {
  std::mutex mu;
  std::map<Key, std::weak_ptr<ClusterHandle>> clients;
  std::map<Key, std::string> fsids;
};

Registry& TheRegistry() {
  static Registry registry;
  return registry;
}

// The admin socket path ceph.conf gives this client (metavariables expanded); empty: none.
std::string AdminSocketPath(rados_t cluster) {
  std::string path(4096, '\0');
  if (rados_conf_get(cluster, "admin_socket", path.data(), path.size()) < 0) return {};
  path.resize(std::strlen(path.c_str()));
  return path;
}

// Whether an admin socket path is this process's own: it names our pid ($pid). A path
// without one ("$run_dir/$cluster-$name.asok" in [global], as many clusters have it) is
// the same for every client of that name on the host: each new client probes and may
// unlink the live one's socket. Such a path is not opened; the process then has no admin
// socket (rbd_connection.h).
bool PerProcess(const std::string& path) {
  if (path.empty() || path.find("$pid") != std::string::npos) return true;
  const std::string pid = std::to_string(::getpid());
  const std::string name = std::filesystem::path(path).filename().string();
  for (size_t at = name.find(pid); at != std::string::npos; at = name.find(pid, at + 1)) {
    const bool starts = at == 0 || std::isdigit(static_cast<unsigned char>(name[at - 1])) == 0;
    const size_t end = at + pid.size();
    const bool ends = end == name.size() || std::isdigit(static_cast<unsigned char>(name[end])) == 0;
    if (starts && ends) return true;
  }
  return false;
}

// A new connected client; its fsid in *fsid.
ClusterHandle Connect(const ConnectParams& p, std::string* fsid_out) {
  const std::string what = "cluster (conf " + p.conf + ", " + p.entity + ")";
  ClusterHandle handle;
  ClusterHandle* cluster = &handle;
  Check(rados_create2(cluster->out(), "ceph", p.entity.c_str(), 0), "create handle for", what);
  const int r = rados_conf_read_file(cluster->get(), p.conf.c_str());
  if (r < 0) {
    throw Error(Errc::kConfig,
                "backend.rbd.conf: cannot parse " + p.conf + ": " + std::strerror(-r));
  }
  auto set = [&](const char* key, const std::string& value) {
    Check(rados_conf_set(cluster->get(), key, value.c_str()), std::string("set ") + key, what);
  };
  if (!p.keyring.empty()) set("keyring", p.keyring);
  if (!PerProcess(AdminSocketPath(cluster->get()))) set("admin_socket", "");
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

  const int rc = rados_connect(cluster->get());
  if (rc < 0) {
    const std::string cause = rc == -ETIMEDOUT ? " (no monitor answered within " + connect_s + " s)"
                              : (rc == -EACCES || rc == -EPERM)
                                  ? " (cephx refused the key of " + p.entity + ")"
                                  : "";
    ThrowErrno(rc, "connect to", what + cause);
  }
  char fsid[64] = {};
  Check(rados_cluster_fsid(cluster->get(), fsid, sizeof(fsid)), "read fsid of", what);
  *fsid_out = fsid;
  return handle;
}

}  // namespace

Connection SharedConnection(const ConnectParams& params) {
  const Key key{params.conf, params.entity, params.keyring, params.connect_timeout_s,
                params.op_timeout_s};
  auto& reg = TheRegistry();
  // Held while connecting: a second caller with the same identity waits for this client
  // rather than making its own, and no client connects while another shuts down.
  std::lock_guard lock(reg.mu);
  if (auto it = reg.clients.find(key); it != reg.clients.end()) {
    if (auto live = it->second.lock()) return {std::move(live), reg.fsids[key]};
  }
  std::string fsid;
  auto made = std::make_unique<ClusterHandle>(Connect(params, &fsid));
  // The handle's last owner shuts the client down under the registry's lock.
  std::shared_ptr<ClusterHandle> shared(made.release(), [](ClusterHandle* h) {
    std::lock_guard drop(TheRegistry().mu);
    delete h;
  });
  reg.clients[key] = shared;
  reg.fsids[key] = fsid;
  return {std::move(shared), std::move(fsid)};
}

}  // namespace cachemgr::storage::rbd
