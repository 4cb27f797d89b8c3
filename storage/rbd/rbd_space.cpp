// The RBD backend's free space: the entry pool's MAX AVAIL, the figure `ceph df` prints,
// asked of the monitors (`{"prefix": "df", "format": "json"}`) through librados.
#include <rados/librados.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cachemgr/error.h"
#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_error.h"

namespace cachemgr::storage::rbd {

namespace {

struct MonBuffers {
  char* out = nullptr;
  size_t out_len = 0;
  char* status = nullptr;
  size_t status_len = 0;
  ~MonBuffers() {
    if (out != nullptr) rados_buffer_free(out);
    if (status != nullptr) rados_buffer_free(status);
  }
};

uint64_t Field(const nlohmann::json& stats, const char* key) {
  auto it = stats.find(key);
  return it != stats.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

}  // namespace

SpaceInfo RbdBackend::FreeSpace() {
  const std::string what = "pool " + options_.pool;
  const char* cmd[] = {R"({"prefix": "df", "format": "json"})"};
  MonBuffers buf;
  const int r = rados_mon_command(cluster_->get(), cmd, 1, "", 0, &buf.out, &buf.out_len,
                                  &buf.status, &buf.status_len);
  if (r < 0) {
    ThrowErrno(r, "mon command df (free space of)", what);
  }
  nlohmann::json df;
  try {
    df = nlohmann::json::parse(std::string(buf.out != nullptr ? buf.out : "", buf.out_len));
  } catch (const nlohmann::json::exception& e) {
    throw Error(Errc::kBackend, what + ": the monitors' df answer is not JSON (" +
                                    std::string(e.what()) +
                                    "); check the cluster with `ceph df --format json`");
  }
  // The figures come from the ceph-mgr (the monitors only relay them): a cluster whose mgr
  // never ran answers with no OSDs and no pools.
  const bool no_stats =
      !df.contains("stats") || !df["stats"].is_object() || df["stats"].value("num_osds", 0) == 0;
  if (no_stats) {
    throw Error(Errc::kBackend, what +
                                    ": the cluster reports no free space (`ceph df` is empty: "
                                    "no ceph-mgr has reported statistics); start a ceph-mgr, "
                                    "or turn the free-space floor off "
                                    "(cache.min_free_percent and cache.min_free_gb 0)");
  }
  if (df.contains("pools") && df["pools"].is_array()) {
    for (const auto& p : df["pools"]) {
      if (!p.is_object() || p.value("name", "") != options_.pool || !p.contains("stats")) continue;
      const auto& stats = p["stats"];
      SpaceInfo info;
      // MAX AVAIL: what clients may still write to the pool (replication and the fullest
      // OSD's full ratio already applied). The pool's total is taken as its stored bytes
      // (client data, the same unit) plus that, not the cluster's raw total, which counts
      // every replica and the other pools: the percent floor is then a share of what this
      // pool could hold. Ceph before Nautilus has no "stored": bytes_used then.
      info.avail_bytes = Field(stats, "max_avail");
      const uint64_t stored =
          stats.contains("stored") ? Field(stats, "stored") : Field(stats, "bytes_used");
      info.total_bytes = stored + info.avail_bytes;
      return info;
    }
  }
  throw Error(Errc::kBackend, what +
                                  ": not in the monitors' df answer; check that the pool "
                                  "exists and that client." +
                                  options_.client + " may run `ceph df` (mon 'allow r')");
}

}  // namespace cachemgr::storage::rbd
