// RBD-specific behaviour of the RBD backend, on the real cluster of the "ceph" fixture
// (and, for cephx, on a cluster this test starts itself).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "cachemgr/error.h"
#include "rbd_target.h"
#include "rbd_test_helpers.h"
#include "storage/factory.h"
#include "storage/rbd/rbd_error.h"
#include "support/cluster.h"
#include "support/test_util.h"

namespace cachemgr {
namespace {

using namespace rbdtest;  // NOLINT(google-build-using-namespace): the tests' helpers

TEST_CASE("errno maps to error codes in one place") {
  using storage::rbd::ErrcFromErrno;
  CHECK(ErrcFromErrno(-ENOENT) == Errc::kNotFound);
  CHECK(ErrcFromErrno(-EEXIST) == Errc::kAlreadyExists);
  CHECK(ErrcFromErrno(-EBUSY) == Errc::kBusy);
  CHECK(ErrcFromErrno(-ETIMEDOUT) == Errc::kTimeout);
  CHECK(ErrcFromErrno(-EACCES) == Errc::kUnauthorized);
  CHECK(ErrcFromErrno(-EPERM) == Errc::kUnauthorized);
  CHECK(ErrcFromErrno(-EIO) == Errc::kBackend);
  auto e = Catch([] { storage::rbd::ThrowErrno(-ENOENT, "open", "volumes/x"); });
  CHECK(e.code() == Errc::kNotFound);
  CHECK(Contains(e.what(), "open volumes/x"));
  CHECK(Contains(e.what(), "No such file or directory"));
}

TEST_CASE("identity: location, pools and fsid") {
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  CHECK(b->kind() == "rbd");
  CHECK(b->location() == "volumes/" + options.namespace_);
  CHECK(b->entry_pool() == "volumes");
  CHECK(b->volume_pool() == "volumes");
  std::string out;
  REQUIRE(test::RunCommand({"ceph", "--conf", options.conf, "fsid"}, &out) == 0);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  CHECK(b->cluster_id() == out);
  CHECK_FALSE(b->Adopt("/nonexistent", {"volumes", "x"}));
}

TEST_CASE("a missing pool is a config error naming the pool and its key") {
  auto options = test::FixtureRbdOptions();
  options.pool = "no-such-pool";
  auto e = Catch([&] { storage::MakeRbdBackend(options, nullptr); });
  CHECK(e.code() == Errc::kConfig);
  CHECK(Contains(e.what(), "no-such-pool"));
  CHECK(Contains(e.what(), "backend.rbd.pool"));
}

TEST_CASE("monitors down: kTimeout within the connect timeout, no hang") {
  test::TempDir dir("rbd-dead");
  const int port = DeadPort();
  test::WriteFile(dir / "ceph.conf", "[global]\nmon_host = v2:127.0.0.1:" +
                                         std::to_string(port) +
                                         "\nauth_cluster_required = none\n"
                                         "auth_service_required = none\n"
                                         "auth_client_required = none\n");
  RbdBackendOptions options;
  options.conf = (dir / "ceph.conf").string();
  options.connect_timeout_s = 3;
  const auto start = std::chrono::steady_clock::now();
  auto e = Catch([&] { storage::MakeRbdBackend(options, nullptr); });
  const auto waited = std::chrono::steady_clock::now() - start;
  CHECK(e.code() == Errc::kTimeout);
  CHECK(Contains(e.what(), "3 s"));
  // Behaviour, not speed: without the timeout librados waits 300 s.
  CHECK(waited < std::chrono::seconds(3 + 15));
  CHECK(waited >= std::chrono::seconds(2));
}

TEST_CASE("an unreadable conf or keyring is a config error") {
  RbdBackendOptions options;
  options.conf = "/nonexistent/ceph.conf";
  CHECK(Catch([&] { storage::MakeRbdBackend(options, nullptr); }).code() == Errc::kConfig);
  options = test::FixtureRbdOptions();
  options.keyring = "/nonexistent/keyring";
  auto e = Catch([&] { storage::MakeRbdBackend(options, nullptr); });
  CHECK(e.code() == Errc::kConfig);
  CHECK(Contains(e.what(), "/nonexistent/keyring"));
  options = test::FixtureRbdOptions();
  options.features = {"layering", "warp-drive"};
  CHECK(Catch([&] { storage::MakeRbdBackend(options, nullptr); }).code() == Errc::kConfig);
}

// A cephx cluster of this test's own, stopped by pid at the end.
class CephxCluster {
 public:
  CephxCluster() : dir_("cephx") {
    std::string out;
    started_ = test::RunCommand({Script("ceph-start.sh"), (dir_ / "c").string(), "--cephx"},
                                &out) == 0;
    REQUIRE_MESSAGE(started_, "ceph-start.sh --cephx failed: " << out);
  }
  ~CephxCluster() { test::RunCommand({Script("ceph-stop.sh"), (dir_ / "c").string()}); }
  std::filesystem::path conf() const { return dir_ / "c" / "ceph.conf"; }
  std::filesystem::path keyring() const { return dir_ / "c" / "keyring"; }
  std::filesystem::path dir() const { return dir_.path(); }

 private:
  test::TempDir dir_;
  bool started_ = false;
};

TEST_CASE("cephx: the right key connects, a bad key is kUnauthorized") {
  CephxCluster cluster;
  RbdBackendOptions options;
  options.conf = cluster.conf().string();
  options.keyring = cluster.keyring().string();
  options.connect_timeout_s = 10;
  {
    auto b = storage::MakeRbdBackend(options, nullptr);
    ImageRef ref{"volumes", Unique("cephx")};
    Import(*b, ref, Data(1 * kMiB, 3));
    CHECK(ReadAll(*b, ref) == Data(1 * kMiB, 3));
    b->Remove(ref);
  }
  // Same name, another key: generated by ceph-authtool, unknown to the monitors.
  auto bad = cluster.dir() / "bad.keyring";
  REQUIRE(test::RunCommand({"ceph-authtool", "--create-keyring", bad.string(), "--gen-key", "-n",
                            "client.admin"}) == 0);
  options.keyring = bad.string();
  const auto start = std::chrono::steady_clock::now();
  auto e = Catch([&] { storage::MakeRbdBackend(options, nullptr); });
  CHECK(e.code() == Errc::kUnauthorized);
  CHECK(Contains(e.what(), "client.admin"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10 + 15));
  // A client the cluster does not know at all.
  options.keyring = cluster.keyring().string();
  options.client = "nobody";
  CHECK(Catch([&] { storage::MakeRbdBackend(options, nullptr); }).code() ==
        Errc::kUnauthorized);
}

TEST_CASE("a sparse 1 GiB raw file with 64 MiB of data imports as ~64 MiB used") {
  test::TempDir dir("rbd-sparse");
  const auto raw = dir / "sparse.raw";
  test::WriteRawImage(raw, 1024 * kMiB, 64 * kMiB, 42);
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  ImageRef ref{"volumes", Unique("sparse")};

  int fd = ::open(raw.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  auto writer = b->Create(ref, 1024 * kMiB);
  std::vector<std::byte> buf(1 * kMiB + 12345);  // odd size: exercises re-alignment
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    REQUIRE(n >= 0);
    if (n == 0) break;
    writer->Append({buf.data(), static_cast<size_t>(n)});
  }
  ::close(fd);
  auto stats = writer->Finish();
  CHECK(stats.bytes_in == 1024 * kMiB);
  CHECK(stats.bytes_written == 64 * kMiB);

  CHECK(b->Stat(ref).size == 1024 * kMiB);
  const uint64_t used = b->AllocatedBytes(ref);
  CHECK(used >= 64 * kMiB);
  CHECK(used <= 68 * kMiB);

  // What an operator sees with `rbd du`.
  std::string out;
  REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "du", "--format", "json",
                            "volumes/" + options.namespace_ + "/" + ref.name},
                           &out) == 0);
  auto j = nlohmann::json::parse(out);
  REQUIRE(j["images"].size() == 1);
  const uint64_t du_used = j["images"][0]["used_size"].get<uint64_t>();
  MESSAGE("rbd du used_size=" << du_used << " provisioned=" << j["images"][0]["provisioned_size"]);
  CHECK(du_used >= 64 * kMiB);
  CHECK(du_used <= 68 * kMiB);

  // The data read back is the file's.
  auto reader = b->Open(ref, std::nullopt);
  std::string head(1 * kMiB, '\0');
  REQUIRE(reader->Read(63 * kMiB, {reinterpret_cast<std::byte*>(head.data()), head.size()}) ==
          head.size());
  std::ifstream in(raw, std::ios::binary);
  in.seekg(63 * kMiB);
  std::string expect(1 * kMiB, '\0');
  in.read(expect.data(), expect.size());
  CHECK(head == expect);
  b->Remove(ref);
}

TEST_CASE("import failures leave no image: data past the size, abandoned writer") {
  auto b = storage::MakeRbdBackend(test::FixtureRbdOptions(), nullptr);
  ImageRef ref{"volumes", Unique("toolong")};
  {
    auto w = b->Create(ref, 8 * kMiB);
    w->Append(Bytes(Data(6 * kMiB, 1)));
    auto e = Catch([&] { w->Append(Bytes(Data(4 * kMiB, 2))); });
    CHECK(e.code() == Errc::kInvalidArgument);
    CHECK(Contains(e.what(), ref.name));
  }
  CHECK_FALSE(b->Exists(ref));
  // A queue depth of 1 still imports correctly (every write waits for the previous).
  auto options = test::FixtureRbdOptions();
  options.queue_depth = 1;
  auto b1 = storage::MakeRbdBackend(options, nullptr);
  const std::string content = Data(9 * kMiB + 77, 5);
  Import(*b1, ref, content);
  CHECK(ReadAll(*b, ref).substr(0, content.size()) == content);
  b->Remove(ref);
}

TEST_CASE("remove of an image with clones goes to the RBD trash; clones still read") {
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  ImageRef base{"volumes", Unique("base")};
  const std::string content = Data(6 * kMiB, 9) + std::string(2 * kMiB, '\0');
  Import(*b, base, content);
  SnapRef snap{base, "snap"};
  b->CreateSnapshot(snap);
  b->ProtectSnapshot(snap);
  ImageRef c1{"volumes", Unique("c1")};
  ImageRef c2{"volumes", Unique("c2")};
  b->Clone(snap, c1);
  b->Clone(snap, c2);
  auto children = b->Children(snap);
  CHECK(children.size() == 2);

  CHECK(b->Remove(base) == storage::RemoveOutcome::kTrashed);
  CHECK_FALSE(b->Exists(base));
  // The operator's view: it is in the RBD trash of the namespace.
  std::string out;
  REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "trash", "ls", "--format", "json",
                            "volumes/" + options.namespace_},
                           &out) == 0);
  CHECK(Contains(out, base.name));
  CHECK(ReadAll(*b, c1) == content);
  CHECK(ReadAll(*b, c2) == content);

  auto entry = [&]() -> std::optional<storage::TrashEntry> {
    for (const auto& e : b->ListTrash())
      if (e.original == base) return e;
    return std::nullopt;
  };
  REQUIRE(entry());
  CHECK(entry()->has_children);
  CHECK_FALSE(b->PurgeTrash(*entry()));
  CHECK(b->Remove(c1) == storage::RemoveOutcome::kRemoved);
  CHECK_FALSE(b->PurgeTrash(*entry()));  // c2 still reads from it
  CHECK(ReadAll(*b, c2) == content);
  CHECK(b->Remove(c2) == storage::RemoveOutcome::kRemoved);
  REQUIRE(entry());
  CHECK_FALSE(entry()->has_children);
  CHECK(b->PurgeTrash(*entry()));
  CHECK_FALSE(entry());
}

TEST_CASE("direct clone: parent in another pool's default namespace") {
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  // Glance keeps its images in "images" (default namespace) with a protected "snap".
  ImageRef glance{"images", Unique("glance")};
  const std::string content = Data(5 * kMiB, 21);
  Import(*b, glance, content);
  std::string out;
  REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "info", "images/" + glance.name},
                           &out) == 0);
  SnapRef snap{glance, "snap"};
  b->CreateSnapshot(snap);
  b->ProtectSnapshot(snap);
  ImageRef vol{"volumes", Unique("vol")};
  b->Clone(snap, vol);
  CHECK(ReadAll(*b, vol) == content);
  auto parent = b->Parent(vol);
  REQUIRE(parent);
  CHECK(*parent == snap);
  CHECK(b->Depth(vol) == 1);
  // A second level: the entry is cloned again, and its parent chain crosses pools.
  SnapRef vsnap{vol, "s"};
  b->CreateSnapshot(vsnap);
  b->ProtectSnapshot(vsnap);
  ImageRef vol2{"volumes", Unique("vol2")};
  b->Clone(vsnap, vol2);
  CHECK(b->Depth(vol2) == 2);
  uint64_t last = 0;
  uint64_t total = 0;
  b->Flatten(vol2, [&](uint64_t done, uint64_t t) {
    last = done;
    total = t;
  });
  // Progress is reported in objects; it moves, and never past the total.
  CHECK(total > 0);
  CHECK(last > 0);
  CHECK(last <= total);
  CHECK(b->Depth(vol2) == 0);
  CHECK(b->Remove(vol2) == storage::RemoveOutcome::kRemoved);
  CHECK(b->Remove(vol) == storage::RemoveOutcome::kRemoved);
  CHECK(b->Remove(glance) == storage::RemoveOutcome::kRemoved);
}

TEST_CASE("clones get the configured features, format 2") {
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  ImageRef base{"volumes", Unique("feat")};
  Import(*b, base, Data(1 * kMiB, 2));
  b->CreateSnapshot({base, "snap"});
  b->ProtectSnapshot({base, "snap"});
  ImageRef clone{"volumes", Unique("featc")};
  b->Clone({base, "snap"}, clone);
  for (const auto& ref : {base, clone}) {
    std::string out;
    REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "info", "--format", "json",
                              "volumes/" + options.namespace_ + "/" + ref.name},
                             &out) == 0);
    auto j = nlohmann::json::parse(out);
    CHECK(j["format"] == 2);
    std::vector<std::string> features = j["features"];
    for (const char* f : {"layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}) {
      CAPTURE(f);
      CHECK(std::find(features.begin(), features.end(), f) != features.end());
    }
  }
  b->Remove(clone);
  b->Remove(base);
}

TEST_CASE("an image a killed client held open and locked is removed once it is cut off") {
  // The state a create killed mid-write leaves: its watch on the header (kept until the
  // OSD times it out, 30 s) and the image's exclusive lock. Cutting the client off
  // (blocklist its watch, break its lock) lets the remove go through at once.
  auto options = test::FixtureRbdOptions();
  auto b = storage::MakeRbdBackend(options, nullptr);
  ImageRef ref{"volumes", Unique("held")};
  Import(*b, ref, Data(4 * kMiB, 3));
  const std::string spec = Spec(options, ref);
  const pid_t pid = StartRbdBench(options, spec, "write");
  // Wait until the writer holds the exclusive lock (librbd breaks it once the watch is gone).
  bool locked = false;
  for (int i = 0; i < 200 && !locked; ++i) {
    std::string out;
    test::RunCommand({"rbd", "--conf", options.conf, "lock", "ls", spec}, &out);
    locked = Contains(out, "exclusive lock");
    if (!locked) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(locked);

  const auto start = std::chrono::steady_clock::now();
  CHECK(b->EvictWatchers(ref) >= 1);
  // The OSDs see the new map quickly; the remove is retried briefly as the pass does.
  bool removed = false;
  std::string last;
  for (int i = 0; i < 40 && !removed; ++i) {
    try {
      b->Remove(ref);
      removed = true;
    } catch (const Error& e) {
      last = e.what();
      REQUIRE_MESSAGE(e.code() == Errc::kBusy, last);
      // A busy remove names what keeps the image.
      CHECK_MESSAGE(Contains(last, "watchers ["), last);
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  CHECK_MESSAGE(removed, last);
  CHECK_FALSE(b->Exists(ref));
  // Well inside the 30 s the OSD would have taken to time the watch out by itself.
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
}

TEST_CASE("a removal empties the image before its removal under the lock, never a watched one") {
  // The removal's data deletion runs outside the process's image-context lock: the image is
  // shrunk to nothing first (storage/rbd/rbd_remove.cpp). Never while another client has
  // it open: its bytes stay whole and the removal is refused.
  auto options = test::FixtureRbdOptions();
  std::ostringstream log_text;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text);
  auto logger = std::make_shared<spdlog::logger>("rbd-remove-test", sink);
  logger->set_level(spdlog::level::debug);
  auto b = storage::MakeRbdBackend(options, logger);
  const std::string content = Data(12 * kMiB, 7);

  ImageRef plain{"volumes", Unique("trimmed")};
  Import(*b, plain, content);
  b->Remove(plain);
  CHECK_FALSE(b->Exists(plain));
  CHECK_MESSAGE(Contains(log_text.str(), "trimmed_first=true"), log_text.str());

  // In a group: rbd_remove refuses it (EMLINK), so it is not emptied first.
  ImageRef grouped{"volumes", Unique("grouped")};
  Import(*b, grouped, content);
  const std::string ns_part = options.namespace_.empty() ? "" : options.namespace_ + "/";
  const std::string group = "volumes/" + ns_part + Unique("group");
  REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "group", "create", group}) == 0);
  REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "group", "image", "add", group,
                            "volumes/" + ns_part + grouped.name}) == 0);
  auto group_refused = Catch([&] { b->Remove(grouped); });
  CHECK_MESSAGE(ReadAll(*b, grouped) == content, group_refused.what());
  REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "group", "image", "rm", group,
                            "volumes/" + ns_part + grouped.name}) == 0);
  REQUIRE(test::RunCommand({"rbd", "--conf", options.conf, "group", "rm", group}) == 0);
  b->Remove(grouped);

  ImageRef watched{"volumes", Unique("watched")};
  Import(*b, watched, content);
  const std::string spec = Spec(options, watched);
  const pid_t pid = StartRbdBench(options, spec, "read");
  bool open_elsewhere = false;
  for (int i = 0; i < 200 && !open_elsewhere; ++i) {
    std::string out;
    test::RunCommand({"rbd", "--conf", options.conf, "status", spec}, &out);
    open_elsewhere = Contains(out, "watcher=");
    if (!open_elsewhere) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto refused = Catch([&] { b->Remove(watched); });
  const bool same = ReadAll(*b, watched) == content;
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(open_elsewhere);
  CHECK(refused.code() == Errc::kBusy);
  CHECK(same);
  // Cut off, the dead reader no longer keeps it.
  CHECK(b->EvictWatchers(watched) >= 1);
  bool removed = false;
  for (int i = 0; i < 40 && !removed; ++i) {
    try {
      b->Remove(watched);
      removed = true;
    } catch (const Error& e) {
      REQUIRE_MESSAGE(e.code() == Errc::kBusy, e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  CHECK(removed);
}

TEST_CASE("a lock held by a destroyed holder is free again; waiting for it works") {
  auto options = test::FixtureRbdOptions();
  auto a = storage::MakeRbdBackend(options, nullptr);
  auto b = storage::MakeRbdBackend(options, nullptr);
  const std::string key = Unique("lock");
  auto held = a->AcquireLock(key, std::chrono::milliseconds(500));
  auto e = Catch([&] { b->AcquireLock(key, std::chrono::milliseconds(300)); });
  CHECK(e.code() == Errc::kBusy);
  CHECK(Contains(e.what(), key));
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    held.reset();
  });
  auto got = b->AcquireLock(key, std::chrono::seconds(20));
  release.join();
  CHECK(got);
}

}  // namespace
}  // namespace cachemgr
