// One RADOS client per process and identity (storage/rbd/rbd_connection.h), and no
// admin socket on a path that every client of the same name on the host shares.
#include "storage/rbd/rbd_connection.h"

#include <doctest/doctest.h>
#include <rados/librados.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "rbd_target.h"
#include "storage/factory.h"
#include "support/cluster.h"
#include "support/test_util.h"

using namespace cachemgr;
using namespace cachemgr::storage::rbd;

namespace {

ConnectParams Params(const std::string& conf) {
  auto o = test::FixtureRbdOptions();
  o.conf = conf;
  return ConnectParamsOf(o);
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

TEST_CASE("the library's clients open no admin socket, whatever ceph.conf names") {
  // One path for every client of the name (as many [global] sections have it), and one
  // of the process's own: neither is opened.
  for (const std::string leaf : {"$cluster-$name.asok", "$cluster-$name.$pid.asok"}) {
    CAPTURE(leaf);
    test::TempDir dir("asok");
    auto conn =
        SharedConnection(Params(ConfWithAdminSocket(dir, (dir.path() / leaf).string()).string()));
    CHECK(ConfValue(conn.cluster->get(), "admin_socket").empty());
    size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
      entries += IsSocket(e.path()) ? 1 : 0;
    }
    CHECK(entries == 0);
  }
}

TEST_CASE("a forked child connects a client of its own") {
  const auto params = Params(test::CephConf().string());
  auto parent = SharedConnection(params);
  const uint64_t parent_id = rados_get_instance_id(parent.cluster->get());
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The parent's client has no threads here: a reused one would hang. A new one answers.
    ::alarm(60);  // a hang fails the test (nothing read) instead of stalling it
    uint64_t id = 0;
    try {
      auto child = SharedConnection(params);
      id = child.cluster.get() == parent.cluster.get()
               ? 0
               : rados_get_instance_id(child.cluster->get());
    } catch (...) {
      id = 0;
    }
    (void)::write(fds[1], &id, sizeof id);
    ::_exit(0);
  }
  ::close(fds[1]);
  uint64_t child_id = 0;
  const bool read =
      ::read(fds[0], &child_id, sizeof child_id) == static_cast<ssize_t>(sizeof child_id);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(read);
  CHECK(child_id != 0);
  CHECK(child_id != parent_id);
}
