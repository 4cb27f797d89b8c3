// storage/rbd/rbd_connection.h: one RADOS client per process and identity.
//
// Every backend (and every other user in the process: a test, an embedding program's
// second cache) that connects with the same conf, client, keyring and timeouts shares
// one connected cluster handle; it is shut down when the last of them drops it. One
// monitor handshake per process and identity rather than per backend, and fewer clients
// made and shut down beside ones at work (librados 16 is fragile, rbd_ctx_lock.h). What
// the conf file or keyring say is read when the client connects: an edited ceph.conf
// takes effect once every backend of the identity has gone (a new Cache then connects).
// A forked child shares nothing with its parent's clients (it connects its own).
//
// The library's clients open no admin socket, whatever ceph.conf says: the common
// "$run_dir/$cluster-$name.asok" of a [global] section is one path for every client of
// the name on the host, and each new client probes the live one's socket and may unlink
// it. The library's own log is where its clients are seen.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cachemgr/options.h"
#include "storage/rbd/rbd_handles.h"

namespace cachemgr::storage::rbd {

struct ConnectParams {
  std::string conf;     // ceph.conf path (read by librados)
  std::string entity;   // "client.<name>"
  std::string keyring;  // empty: whatever ceph.conf says
  uint32_t connect_timeout_s = 10;
  uint32_t op_timeout_s = 60;
};

// The identity a backend with these options connects as.
ConnectParams ConnectParamsOf(const RbdBackendOptions& options);

struct Connection {
  std::shared_ptr<ClusterHandle> cluster;
  std::string fsid;
};

// The process's connected client for params, connecting one when none is alive. Throws
// cachemgr::Error: kConfig (unparsable conf), kTimeout (no monitor answered within the
// connect timeout), kUnauthorized (cephx refused the key), others as librados says.
Connection SharedConnection(const ConnectParams& params);

}  // namespace cachemgr::storage::rbd
