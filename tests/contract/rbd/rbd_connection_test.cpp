// One RADOS client per process and identity (storage/rbd/rbd_connection.h), and no
// admin socket on a path that every client of the same name on the host shares.
#include <doctest/doctest.h>
#include <rados/librados.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <cstring>
#include <fstream>
#include <string>

#include "rbd_target.h"
#include "storage/factory.h"
#include "storage/rbd/rbd_connection.h"
#include "support/cluster.h"
#include "support/test_util.h"

using namespace cachemgr;
using namespace cachemgr::storage::rbd;

namespace {

ConnectParams Params(const std::string& conf) {
  const auto o = test::FixtureRbdOptions();
  return {.conf = conf,
          .entity = "client." + o.client,
          .keyring = o.keyring,
          .connect_timeout_s = o.connect_timeout_s,
          .op_timeout_s = o.op_timeout_s};
}

std::string ConfValue(rados_t cluster, const char* key) {
  std::string v(4096, '\0');
  REQUIRE(rados_conf_get(cluster, key, v.data(), v.size()) == 0);
  v.resize(std::strlen(v.c_str()));
  return v;
}

bool IsSocket(const std::filesystem::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// The fixture's ceph.conf plus a [client] section with `admin_socket = path`.
std::filesystem::path ConfWithAdminSocket(const test::TempDir& dir, const std::string& path) {
  const auto conf = dir.path() / "ceph.conf";
  std::filesystem::copy_file(test::CephConf(), conf);
  std::ofstream(conf, std::ios::app) << "\n[client]\nadmin_socket = " << path << "\n";
  return conf;
}

}  // namespace

TEST_CASE("backends of one identity share one client, which goes with the last of them") {
  const auto params = Params(test::CephConf().string());
  uint64_t first_id = 0;
  {
    auto a = SharedConnection(params);
    auto b = SharedConnection(params);
    REQUIRE(a.cluster);
    CHECK(a.cluster.get() == b.cluster.get());
    CHECK_FALSE(a.fsid.empty());
    CHECK(a.fsid == b.fsid);
    first_id = rados_get_instance_id(a.cluster->get());
    // Another identity (here: other timeouts) is another client.
    auto other_params = params;
    other_params.op_timeout_s += 1;
    auto c = SharedConnection(other_params);
    CHECK(c.cluster.get() != a.cluster.get());
    CHECK(rados_get_instance_id(c.cluster->get()) != first_id);
  }
  // All dropped: the next caller gets a new client.
  auto d = SharedConnection(params);
  CHECK(rados_get_instance_id(d.cluster->get()) != first_id);

  // The backends of the library use it too.
  auto backend = storage::MakeRbdBackend(test::FixtureRbdOptions(), nullptr);
  auto e = SharedConnection(params);
  CHECK(e.cluster.get() == d.cluster.get());
}

TEST_CASE("an admin socket path shared by every client of the name is not opened") {
  test::TempDir dir("asok");
  const auto shared = dir.path() / "ceph-client.admin.asok";
  auto conn = SharedConnection(Params(ConfWithAdminSocket(dir, shared.string()).string()));
  CHECK(ConfValue(conn.cluster->get(), "admin_socket").empty());
  CHECK_FALSE(std::filesystem::exists(shared));

  // A path of its own ($pid in it) is the operator's choice, and kept.
  test::TempDir own_dir("asok");
  auto own = SharedConnection(
      Params(ConfWithAdminSocket(own_dir, (own_dir.path() / "$cluster-$name.$pid.asok").string())
                 .string()));
  const auto expect = own_dir.path() / ("ceph-client.admin." + std::to_string(::getpid()) + ".asok");
  CHECK(ConfValue(own.cluster->get(), "admin_socket") == expect.string());
  CHECK(IsSocket(expect));
}
