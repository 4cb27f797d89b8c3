// The YAML config: defaults, every key, aliases, and a table of every error class.
#include "cachemgr/config.h"

#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "support/test_util.h"

using cachemgr::BackendType;
using cachemgr::CloneMode;
using cachemgr::Errc;
using cachemgr::Error;
using cachemgr::Options;
using cachemgr::ParseConfig;
using cachemgr::SizeAccounting;
using cachemgr::SourceType;
using cachemgr::test::TempDir;
using cachemgr::test::WriteFile;

namespace {

// The kConfig error a text gives, or a failed check if it parses.
std::string ConfigError(const std::string& yaml) {
  try {
    ParseConfig(yaml, "test.yaml");
  } catch (const Error& e) {
    CHECK_MESSAGE(e.code() == Errc::kConfig, "code ", cachemgr::ErrcName(e.code()));
    return e.what();
  }
  FAIL_CHECK("parsed without error: " << yaml);
  return "";
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

}  // namespace

TEST_CASE("defaults when keys are absent") {
  for (const char* text : {"", "# only a comment\n", "cache:\n", "backend: {}\n"}) {
    CAPTURE(text);
    const Options o = ParseConfig(text);
    const Options d;
    CHECK(o.index == d.index);
    CHECK(o.backend.type == BackendType::kLocal);
    CHECK(o.backend.local.root == "/var/lib/cachemgr");
    CHECK(o.backend.local.mode == 0644);
    CHECK(o.backend.rbd.pool == "volumes");
    CHECK(o.backend.rbd.queue_depth == 16);
    CHECK(o.source.type == SourceType::kGlance);
    CHECK(o.source.glance.endpoint == "http://127.0.0.1:9292");
    CHECK(o.cache.max_size_gb == 0);
    CHECK(o.cache.max_count == 0);
    CHECK(o.cache.max_clone_depth == 5);
    CHECK(o.cache.size_accounting == SizeAccounting::kProvisioned);
    CHECK(o.cache.source_check_interval_s == 60);
    CHECK(o.cache.share_use_interval_s == 60);
    CHECK(o.host_id.empty());
    CHECK(o.log.level == "info");
  }
}

TEST_CASE("every key of the contract is read") {
  const Options o = ParseConfig(R"(
index: /srv/cm/index.db
backend:
  type: rbd
  local:
    root: /srv/cm
    clone_mode: reflink
    owner: qemu
    group: kvm
    mode: "0640"
  rbd:
    conf: /etc/ceph/other.conf
    client: cinder
    keyring: /etc/ceph/ceph.client.cinder.keyring
    pool: cache
    namespace: tenant1
    queue_depth: 32
    connect_timeout_s: 5
    op_timeout_s: 30
    features: [layering, exclusive-lock]
source:
  type: file
  glance:
    endpoint: https://glance.example:9292
    token: secret
    ca_file: /etc/ssl/ca.pem
    timeout_s: 12
    retries: 0
  file:
    dir: /srv/images
cache:
  max_size_gb: 12.5
  max_count: 40
  max_clone_depth: 0
  size_accounting: allocated
  stale_on_updated_at: true
  source_check_interval_s: 0
  share_use_interval_s: 5
host_id: node-7.rack2
conversion:
  dir: /srv/conv
  max_virtual_size_gb: 64
  qemu_img: /usr/local/bin/qemu-img
  timeout_s: 100
  cpu_limit_s: 50
  address_space_mb: 2048
log:
  level: debug
  file: /var/log/cachemgr.log
  max_file_mb: 5
  max_files: 2
)");
  CHECK(o.index == "/srv/cm/index.db");
  CHECK(o.backend.type == BackendType::kRbd);
  CHECK(o.backend.local.root == "/srv/cm");
  CHECK(o.backend.local.clone_mode == CloneMode::kReflink);
  CHECK(o.backend.local.owner == "qemu");
  CHECK(o.backend.local.group == "kvm");
  CHECK(o.backend.local.mode == 0640);
  CHECK(o.backend.rbd.conf == "/etc/ceph/other.conf");
  CHECK(o.backend.rbd.client == "cinder");
  CHECK(o.backend.rbd.keyring == "/etc/ceph/ceph.client.cinder.keyring");
  CHECK(o.backend.rbd.pool == "cache");
  CHECK(o.backend.rbd.namespace_ == "tenant1");
  CHECK(o.backend.rbd.queue_depth == 32);
  CHECK(o.backend.rbd.connect_timeout_s == 5);
  CHECK(o.backend.rbd.op_timeout_s == 30);
  CHECK(o.backend.rbd.features == std::vector<std::string>{"layering", "exclusive-lock"});
  CHECK(o.source.type == SourceType::kFile);
  CHECK(o.source.glance.endpoint == "https://glance.example:9292");
  CHECK(o.source.glance.token == "secret");
  CHECK(o.source.glance.ca_file == "/etc/ssl/ca.pem");
  CHECK(o.source.glance.timeout_s == 12);
  CHECK(o.source.glance.retries == 0);
  CHECK(o.source.file.dir == "/srv/images");
  CHECK(o.cache.max_size_gb == doctest::Approx(12.5));
  CHECK(o.cache.max_count == 40);
  CHECK(o.cache.max_clone_depth == 0);
  CHECK(o.cache.size_accounting == SizeAccounting::kAllocated);
  CHECK(o.cache.stale_on_updated_at);
  CHECK(o.cache.source_check_interval_s == 0);
  CHECK(o.cache.share_use_interval_s == 5);
  CHECK(o.host_id == "node-7.rack2");
  CHECK(o.conversion.dir == "/srv/conv");
  CHECK(o.conversion.max_virtual_size_gb == doctest::Approx(64));
  CHECK(o.conversion.qemu_img == "/usr/local/bin/qemu-img");
  CHECK(o.conversion.timeout_s == 100);
  CHECK(o.conversion.cpu_limit_s == 50);
  CHECK(o.conversion.address_space_mb == 2048);
  CHECK(o.log.level == "debug");
  CHECK(o.log.file == "/var/log/cachemgr.log");
  CHECK(o.log.max_file_mb == 5);
  CHECK(o.log.max_files == 2);
}

TEST_CASE("Cinder's option names are accepted as aliases") {
  const Options o = ParseConfig(
      "cache:\n"
      "  image_volume_cache_max_size_gb: 200\n"
      "  image_volume_cache_max_count: 50\n"
      "  rbd_max_clone_depth: 3\n");
  CHECK(o.cache.max_size_gb == doctest::Approx(200));
  CHECK(o.cache.max_count == 50);
  CHECK(o.cache.max_clone_depth == 3);
}

TEST_CASE("mode accepts an octal string, quoted or not") {
  CHECK(ParseConfig("backend: {local: {mode: \"0600\"}}").backend.local.mode == 0600);
  CHECK(ParseConfig("backend: {local: {mode: 0755}}").backend.local.mode == 0755);
  CHECK(ParseConfig("backend: {local: {mode: 644}}").backend.local.mode == 0644);
}

TEST_CASE("hard-link adoption of file-source images is off unless configured") {
  CHECK_FALSE(ParseConfig("backend: {local: {}}").backend.local.hardlink_prefill);
  CHECK(ParseConfig("backend: {local: {hardlink_prefill: true}}").backend.local.hardlink_prefill);
}

TEST_CASE("every error class names the key path and the rule") {
  struct Case {
    const char* what;
    std::string yaml;
    std::vector<std::string> expect;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {"malformed YAML gives line and column", "cache:\n  max_size_gb: [1, 2\n",
       {"test.yaml:", "invalid YAML"}},
      {"malformed YAML: bad indentation", "cache:\n  max_count: 1\n max_size_gb: 2\n",
       {"test.yaml:3:", "invalid YAML"}},
      {"top level is not a map", "- a\n- b\n", {"expected a map"}},
      {"a section that is not a map", "cache: 5\n", {"cache: expected a map, got '5'"}},
      {"wrong type: integer", "source:\n  glance:\n    timeout_s: abc\n",
       {"test.yaml:3:", "source.glance.timeout_s: expected an integer, got 'abc'"}},
      {"wrong type: float for an integer", "cache: {max_count: 1.5}",
       {"cache.max_count: expected an integer, got '1.5'"}},
      {"wrong type: number", "cache: {max_size_gb: lots}",
       {"cache.max_size_gb: expected a number, got 'lots'"}},
      {"wrong type: bool", "cache: {stale_on_updated_at: maybe}",
       {"cache.stale_on_updated_at: expected true or false, got 'maybe'"}},
      {"wrong type: string given a map", "index: {a: 1}", {"index: expected a string, got a map"}},
      {"wrong type: list", "backend: {rbd: {features: layering}}",
       {"backend.rbd.features: expected a list of strings"}},
      {"negative size", "cache:\n  max_size_gb: -1\n",
       {"test.yaml:2:", "cache.max_size_gb: must be >= 0"}},
      {"negative count", "cache: {max_count: -3}", {"cache.max_count: must be >= 0 (got -3)"}},
      {"integer out of range", "backend: {rbd: {queue_depth: 99999999999}}",
       {"backend.rbd.queue_depth: must be between 0 and 4294967295"}},
      {"queue depth range", "backend: {rbd: {queue_depth: 0}}",
       {"backend.rbd.queue_depth: must be between 1 and 256 (got 0)"}},
      {"queue depth too large", "backend: {rbd: {queue_depth: 257}}",
       {"backend.rbd.queue_depth: must be between 1 and 256"}},
      {"clone depth too large", "cache: {max_clone_depth: 1000}", {"cache.max_clone_depth: must be <= 64"}},
      {"timeout of zero", "source: {glance: {timeout_s: 0}}", {"source.glance.timeout_s: must be >= 1"}},
      {"unknown key with suggestion", "cache:\n  max_sise_gb: 1\n",
       {"test.yaml:2:", "cache.max_sise_gb: unknown key; did you mean max_size_gb?"}},
      {"unknown top-level key", "backnd:\n  type: rbd\n", {"backnd: unknown key; did you mean backend?"}},
      {"unknown key, nothing close", "log:\n  colour: red\n",
       {"log.colour: unknown key; known keys here: level, file, max_file_mb, max_files"}},
      {"unknown nested key", "backend: {rbd: {queue_dept: 4}}",
       {"backend.rbd.queue_dept: unknown key; did you mean queue_depth?"}},
      {"bad enum", "backend:\n  type: foo\n",
       {"backend.type: must be one of local, rbd (got 'foo')"}},
      {"bad clone mode", "backend: {local: {clone_mode: fast}}",
       {"backend.local.clone_mode: must be one of auto, qcow2, reflink, copy (got 'fast')"}},
      {"bad size accounting", "cache: {size_accounting: virtual}",
       {"cache.size_accounting: must be one of provisioned, allocated"}},
      {"bad source type", "source: {type: s3}", {"source.type: must be one of glance, file"}},
      {"bad mode", "backend: {local: {mode: \"0988\"}}",
       {"backend.local.mode: expected an octal mode such as \"0644\""}},
      {"mode too large", "backend: {local: {mode: \"17777\"}}", {"backend.local.mode:"}},
      {"alias and key together", "cache:\n  max_size_gb: 1\n  image_volume_cache_max_size_gb: 2\n",
       {"test.yaml:3:", "cache.image_volume_cache_max_size_gb:", "cache.max_size_gb",
        "keep one of them"}},
      {"count alias and key together", "cache: {max_count: 1, image_volume_cache_max_count: 2}",
       {"cache.image_volume_cache_max_count:"}},
      {"depth alias and key together", "cache: {rbd_max_clone_depth: 1, max_clone_depth: 2}",
       {"cache.rbd_max_clone_depth:"}},
      {"key set twice", "cache:\n  max_count: 1\n  max_count: 2\n",
       {"cache.max_count: set twice"}},
      {"rbd backend without a pool", "backend:\n  type: rbd\n  rbd:\n    pool: \"\"\n",
       {"backend.rbd.pool: must not be empty"}},
      {"rbd client with prefix", "backend: {type: rbd, rbd: {client: client.admin}}",
       {"backend.rbd.client: give the name without the 'client.' prefix"}},
      {"rbd without layering", "backend: {type: rbd, rbd: {features: [exclusive-lock]}}",
       {"backend.rbd.features: must include layering"}},
      {"unknown rbd feature", "backend: {rbd: {features: [layering, turbo]}}",
       {"backend.rbd.features[1]: must be one of"}},
      {"relative local root from a string", "backend: {local: {root: cache}}",
       {"backend.local.root: must be an absolute path"}},
      {"glance endpoint not a URL", "source: {glance: {endpoint: glance:9292}}",
       {"source.glance.endpoint: must be an http:// or https:// URL"}},
      {"bad log level", "log:\n  level: loud\n",
       {"test.yaml:2:", "log.level: must be one of trace, debug, info"}},
      {"conversion size zero", "conversion: {max_virtual_size_gb: 0}",
       {"conversion.max_virtual_size_gb: must be > 0"}},
      {"empty index", "index: \"\"", {"index: must not be empty"}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    const std::string msg = ConfigError(c.yaml);
    CAPTURE(msg);
    for (const auto& e : c.expect) CHECK(msg.find(e) != std::string::npos);
  }
}

TEST_CASE("a missing or unreadable file is a config error naming it") {
  TempDir dir("config");
  const auto missing = dir / "nope.yaml";
  try {
    cachemgr::LoadConfigFile(missing);
    FAIL("no error for a missing file");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find(missing.string()) != std::string::npos);
    CHECK(std::string(e.what()).find("No such file") != std::string::npos);
  }
  CHECK_THROWS_AS(cachemgr::LoadConfigFile(dir.path()), Error);
}

TEST_CASE("errors from a file name the file and the line") {
  TempDir dir("config");
  const auto path = dir / "cm.yaml";
  WriteFile(path, "index: /tmp/x.db\ncache:\n  max_size_gb: -2\n");
  try {
    cachemgr::LoadConfigFile(path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == path.string() + ":3: cache.max_size_gb: must be >= 0 (0 = unlimited)");
  }
}

TEST_CASE("relative paths in a file are resolved against its directory") {
  TempDir dir("config");
  const auto path = dir / "cm.yaml";
  WriteFile(path,
            "index: state/index.db\n"
            "backend: {local: {root: ../cache}}\n"
            "source: {type: file, file: {dir: images}}\n"
            "conversion: {dir: /abs/conv, qemu_img: qemu-img}\n"
            "log: {file: logs/cm.log}\n");
  const Options o = cachemgr::LoadConfigFile(path);
  CHECK(o.index == (dir.path() / "state/index.db").string());
  CHECK(o.backend.local.root == (dir.path().parent_path() / "cache").string());
  CHECK(o.source.file.dir == (dir.path() / "images").string());
  CHECK(o.conversion.dir == "/abs/conv");
  CHECK(o.conversion.qemu_img == "qemu-img");  // a program name stays a name (PATH lookup)
  CHECK(o.log.file == (dir.path() / "logs/cm.log").string());
}

TEST_CASE("the config path comes from $CACHEMGR_CONFIG, else /etc/cachemgr") {
  {
    ScopedEnv env("CACHEMGR_CONFIG", "/srv/conf/cm.yaml");
    CHECK(cachemgr::DefaultConfigPath() == "/srv/conf/cm.yaml");
  }
  {
    ScopedEnv env("CACHEMGR_CONFIG", nullptr);
    CHECK(cachemgr::DefaultConfigPath() == "/etc/cachemgr/cachemgr.yaml");
  }
  {
    ScopedEnv env("CACHEMGR_CONFIG", "");
    CHECK(cachemgr::DefaultConfigPath() == "/etc/cachemgr/cachemgr.yaml");
  }
  // The file named by the variable is the one that is read.
  TempDir dir("config");
  WriteFile(dir / "env.yaml", "cache: {max_count: 7}\n");
  ScopedEnv env("CACHEMGR_CONFIG", (dir / "env.yaml").c_str());
  CHECK(cachemgr::LoadConfigFile(cachemgr::DefaultConfigPath()).cache.max_count == 7);
}

TEST_CASE("ValidateOptions checks options built in code") {
  Options o;
  CHECK_NOTHROW(cachemgr::ValidateOptions(o));
  o.backend.type = BackendType::kRbd;
  o.backend.rbd.pool.clear();
  CHECK_THROWS_WITH_AS(cachemgr::ValidateOptions(o), "backend.rbd.pool: must not be empty", Error);
  o = Options{};
  o.backend.local.root = "relative/dir";
  CHECK_THROWS_AS(cachemgr::ValidateOptions(o), Error);
  o = Options{};
  o.cache.max_size_gb = -0.5;
  CHECK_THROWS_WITH_AS(cachemgr::ValidateOptions(o), "cache.max_size_gb: must be >= 0 (0 = unlimited)",
                       Error);
  o = Options{};
  o.backend.rbd.queue_depth = 300;
  CHECK_THROWS_AS(cachemgr::ValidateOptions(o), Error);
}

TEST_CASE("a config that is not a regular file of sane size is refused at once, naming it") {
  TempDir dir("config");
  std::string path;
  SUBCASE("a character device that never ends") { path = "/dev/zero"; }
  SUBCASE("a FIFO with no writer (would block for ever)") {
    path = (dir / "fifo.yaml").string();
    REQUIRE(mkfifo(path.c_str(), 0600) == 0);
  }
  SUBCASE("a directory") { path = dir.path().string(); }
  SUBCASE("a file over 1 MiB") {
    path = (dir / "huge.yaml").string();
    WriteFile(path, "# " + std::string((1 << 20) + 10, 'x') + "\n");
  }
  const auto start = std::chrono::steady_clock::now();
  try {
    cachemgr::LoadConfigFile(path);
    FAIL("no error for " << path);
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
}

TEST_CASE("no config file found names every place it looked") {
  TempDir dir("config");
  {
    ScopedEnv env("CACHEMGR_CONFIG", nullptr);
    if (!std::filesystem::exists("/etc/cachemgr/cachemgr.yaml")) {
      try {
        cachemgr::FindConfigFile("");
        FAIL("no error");
      } catch (const Error& e) {
        CHECK(e.code() == Errc::kConfig);
        const std::string m = e.what();
        CHECK(m.find("--config") != std::string::npos);
        CHECK(m.find("$CACHEMGR_CONFIG") != std::string::npos);
        CHECK(m.find("/etc/cachemgr/cachemgr.yaml") != std::string::npos);
      }
    }
    const auto given = (dir / "given.yaml").string();
    CHECK_THROWS_WITH_AS(cachemgr::FindConfigFile(given), doctest::Contains(given.c_str()), Error);
    WriteFile(given, "cache: {max_count: 2}\n");
    CHECK(cachemgr::FindConfigFile(given) == given);
  }
  const auto from_env = (dir / "env.yaml").string();
  ScopedEnv env("CACHEMGR_CONFIG", from_env.c_str());
  CHECK_THROWS_WITH_AS(cachemgr::FindConfigFile(""), doctest::Contains(from_env.c_str()), Error);
}

TEST_CASE("system folders are refused as root, index folder and conversion dir") {
  TempDir dir("config");
  std::filesystem::create_directory_symlink("/etc", dir / "etc-link");
  const std::vector<std::string> system = {"/",
                                           "/etc",
                                           "/usr",
                                           "/usr/lib",
                                           "/bin",
                                           "/lib64",
                                           "/boot",
                                           "/dev",
                                           "/proc/self",
                                           "/sys",
                                           "/run",
                                           "/var",
                                           "/var/lib",
                                           "/home",
                                           "/root",
                                           "/tmp",
                                           "/tmp/../etc/ssl",
                                           (dir / "etc-link").string(),
                                           (dir / "etc-link" / "x").string()};
  for (const auto& folder : system) {
    CAPTURE(folder);
    Options o;
    o.backend.local.root = folder;
    CHECK_THROWS_WITH_AS(cachemgr::ValidateOptions(o), doctest::Contains("backend.local.root"),
                         Error);
    o = Options{};
    o.index = folder + "/index.db";
    CHECK_THROWS_WITH_AS(cachemgr::ValidateOptions(o), doctest::Contains("index"), Error);
    o = Options{};
    o.conversion.dir = folder;
    CHECK_THROWS_WITH_AS(cachemgr::ValidateOptions(o), doctest::Contains("conversion.dir"), Error);
  }
  for (const std::string& folder : std::vector<std::string>{
           "/var/lib/cachemgr", "/srv/cache", "/tmp/cachemgr", (dir / "cache").string()}) {
    CAPTURE(folder);
    Options o;
    o.backend.local.root = folder;
    o.index = folder + "/index.db";
    o.conversion.dir = folder + "/conversion";
    CHECK_NOTHROW(cachemgr::ValidateOptions(o));
  }
}

TEST_CASE("no folder the cache writes in may be inside the image store; the root may not hold it") {
  TempDir dir("config");
  const std::string images = (dir / "images").string();
  std::filesystem::create_directories(images);
  std::filesystem::create_directory_symlink(images, dir / "images-link");
  auto base = [&] {
    Options o;
    o.backend.type = cachemgr::BackendType::kLocal;
    o.source.type = SourceType::kFile;
    o.source.file.dir = images;
    o.backend.local.root = (dir / "cache").string();
    o.index = (dir / "cache" / "index.db").string();
    o.conversion.dir = (dir / "conversion").string();
    return o;
  };
  auto error_of = [](const Options& o) -> std::string {
    try {
      cachemgr::ValidateOptions(o);
    } catch (const Error& e) {
      CHECK(e.code() == Errc::kConfig);
      return e.what();
    }
    return "accepted";
  };
  auto names = [](const std::string& msg, const std::string& key) {
    return msg.find(key) != std::string::npos && msg.find("source.file.dir") != std::string::npos;
  };
  CHECK_NOTHROW(cachemgr::ValidateOptions(base()));
  for (const std::string& inside :
       {images, images + "/", images + "/sub", (dir / "images-link" / "x").string()}) {
    CAPTURE(inside);
    Options o = base();
    o.conversion.dir = inside;
    CHECK(names(error_of(o), "conversion.dir: "));
    o = base();
    o.index = inside + "/index.db";
    CHECK(names(error_of(o), "index: "));
    o = base();
    o.backend.local.root = inside;
    CHECK(names(error_of(o), "backend.local.root: "));
  }
  // The image store inside the local root (whose folders the pass sweeps) is refused; inside
  // the index's folder or conversion.dir it is not (they write and sweep only their own
  // files and the cache's working dirs directly in them).
  Options o = base();
  o.source.file.dir = (dir / "cache" / "images").string();
  CHECK(names(error_of(o), "backend.local.root: "));
  o = base();
  o.source.file.dir = (dir / "conversion" / "images").string();
  CHECK_NOTHROW(cachemgr::ValidateOptions(o));
  o = base();
  o.backend.local.root = (dir / "root").string();
  o.source.file.dir = (dir / "cache" / "images").string();  // beside the index
  CHECK_NOTHROW(cachemgr::ValidateOptions(o));
  // A sibling whose name only begins like the store is apart from it.
  o = base();
  o.conversion.dir = images + "-conversion";
  CHECK_NOTHROW(cachemgr::ValidateOptions(o));
}

TEST_CASE("the source's bounds: direct_pools, min_rate_kib_s, max_list_pages, max_image_gb") {
  auto d = ParseConfig("", "test.yaml");
  CHECK(!d.source.glance.direct_pools);  // unset: Glance's rbd store pools
  CHECK(d.source.glance.min_rate_kib_s == 1024);
  CHECK(d.source.glance.max_list_pages == 10000);
  CHECK(d.source.max_image_gb == 0);
  CHECK(!d.source.allow_unverified);
  auto o = ParseConfig(
      "source:\n  glance:\n    direct_pools: [images, images-ssd]\n    min_rate_kib_s: 64\n"
      "    max_list_pages: 5\n  max_image_gb: 2.5\n  allow_unverified: true\n",
      "test.yaml");
  REQUIRE(o.source.glance.direct_pools);
  CHECK(*o.source.glance.direct_pools == std::vector<std::string>{"images", "images-ssd"});
  CHECK(o.source.glance.min_rate_kib_s == 64);
  CHECK(o.source.glance.max_list_pages == 5);
  CHECK(o.source.max_image_gb == 2.5);
  CHECK(o.source.allow_unverified);
  auto none = ParseConfig("source:\n  glance:\n    direct_pools: []\n", "test.yaml");
  REQUIRE(none.source.glance.direct_pools);
  CHECK(none.source.glance.direct_pools->empty());
  CHECK(ConfigError("source:\n  glance:\n    min_rate_kib_s: 0\n")
            .find("source.glance.min_rate_kib_s") != std::string::npos);
  CHECK(ConfigError("source:\n  max_image_gb: -1\n").find("source.max_image_gb") !=
        std::string::npos);
  CHECK(ConfigError("source:\n  glance:\n    direct_pools: [\"\"]\n")
            .find("source.glance.direct_pools[0]") != std::string::npos);
}

TEST_CASE("Keystone auth: the endpoint from the catalog unless written, auth or cloud not both") {
  const std::string head = "source:\n  type: glance\n  glance:\n";
  const std::string auth =
      "    auth:\n      auth_url: https://ks.example:5000\n"
      "      application_credential_id: abc\n      application_credential_secret: s3cr3t\n";
  Options o = ParseConfig(head + auth);
  CHECK(o.source.glance.endpoint.empty());  // found in the catalog
  CHECK(o.source.glance.auth.credential_files == std::vector<std::string>{"<string>"});
  o = ParseConfig(head + "    endpoint: https://glance.example:9292\n" + auth);
  CHECK(o.source.glance.endpoint == "https://glance.example:9292");
  // Without Keystone an endpoint is needed, and the default is Glance on loopback.
  CHECK(ParseConfig(head + "    token: t\n").source.glance.endpoint == "http://127.0.0.1:9292");
  const std::string both = ConfigError(head + auth + "    cloud: mine\n");
  CHECK(both.find("source.glance.cloud: set auth or cloud, not both") != std::string::npos);
  CHECK(both.find("s3cr3t") == std::string::npos);
}

TEST_CASE("a named cloud of clouds.yaml, secure.yaml merged, $OS_CLOUD as the last resort") {
  TempDir dir;
  const auto clouds = dir.path() / "clouds.yaml";
  const auto secure = dir.path() / "secure.yaml";
  WriteFile(clouds,
            "clouds:\n"
            "  prod:\n"
            "    region_name: RegionTwo\n"
            "    interface: internal\n"
            "    cacert: ~/ca.pem\n"
            "    auth:\n"
            "      auth_url: https://ks.example:5000/v3\n"
            "      username: svc\n"
            "      project_name: services\n"
            "      domain_name: Corp\n"
            "  app:\n"
            "    auth_type: v3applicationcredential\n"
            "    auth: {auth_url: 'https://ks.example', application_credential_id: id1,\n"
            "           application_credential_secret: sec}\n"
            "  tok:\n"
            "    auth_type: token\n"
            "    auth: {auth_url: 'https://ks.example', token: abc}\n"
            "  insecure:\n"
            "    verify: false\n"
            "    auth: {auth_url: 'https://ks.example', username: u, password: p}\n");
  WriteFile(secure, "clouds:\n  prod:\n    auth:\n      password: from-secure\n");
  ScopedEnv file("OS_CLIENT_CONFIG_FILE", clouds.c_str());
  ScopedEnv secure_file("OS_CLIENT_SECURE_FILE", secure.c_str());
  ScopedEnv home("HOME", dir.path().c_str());
  ScopedEnv cloud("OS_CLOUD", nullptr);
  const std::string head = "source:\n  type: glance\n  glance:\n";

  Options o = ParseConfig(head + "    cloud: prod\n");
  const auto& a = o.source.glance.auth;
  CHECK(a.auth_url == "https://ks.example:5000/v3");
  CHECK(a.username == "svc");
  CHECK(a.password == "from-secure");
  CHECK(a.project_name == "services");
  CHECK(a.user_domain_name == "Corp");
  CHECK(a.project_domain_name == "Corp");
  CHECK(a.region_name == "RegionTwo");
  CHECK(a.interface == "internal");
  CHECK(o.source.glance.ca_file == (dir.path() / "ca.pem").string());
  CHECK(o.source.glance.endpoint.empty());
  CHECK(a.credential_files == std::vector<std::string>{secure.string()});  // clouds.yaml: no secret

  {
    ScopedEnv env_cloud("OS_CLOUD", "app");
    o = ParseConfig(head);
    CHECK(o.source.glance.auth.application_credential_id == "id1");
    // The config's own credentials win over $OS_CLOUD.
    CHECK(!ParseConfig(head + "    token: t\n").source.glance.auth.enabled());
    // $OS_CLOUD means nothing to a file source.
    CHECK(ParseConfig("source:\n  type: file\n  file:\n    dir: /srv/images\n")
              .source.glance.auth.application_credential_id.empty());
  }
  std::string e = ConfigError(head + "    cloud: tok\n");
  CHECK(e.find("auth_type: 'token' is not spoken here") != std::string::npos);
  e = ConfigError(head + "    cloud: insecure\n");
  CHECK(e.find("always verifies TLS") != std::string::npos);
  e = ConfigError(head + "    cloud: nope\n");
  CHECK(e.find(clouds.string() + ": no cloud 'nope' (named by source.glance.cloud)") !=
        std::string::npos);
  CHECK(e.find("it has: prod, app, tok, insecure") != std::string::npos);
}

TEST_CASE("Keystone settings a create would trip over are config errors, secrets unquoted") {
  const std::string head = "source:\n  type: glance\n  glance:\n";
  CHECK(ConfigError(head + "    auth:\n      application_credential_id: a\n"
                           "      application_credential_secret: s3cr3t\n")
            .find("source.glance.auth.auth_url: missing") != std::string::npos);
  const std::string url = "    auth:\n      auth_url: https://ks.example/v3\n";
  CHECK(ConfigError(head + url + "      application_credential_id: a\n")
            .find("application_credential_secret: missing") != std::string::npos);
  CHECK(ConfigError(head + url + "      username: u\n").find("source.glance.auth.password: missing") !=
        std::string::npos);
  CHECK(ConfigError(head + url + "      password: s3cr3t\n").find("no credentials") !=
        std::string::npos);
  const std::string app = "      application_credential_id: a\n      application_credential_secret: s3cr3t\n";
  std::string e = ConfigError(head + url + app + "      interface: PUBLIC\n");
  CHECK(e.find("source.glance.auth.interface: must be public, internal or admin") != std::string::npos);
  CHECK(e.find("s3cr3t") == std::string::npos);
  e = ConfigError(head + "    auth:\n      auth_url: https://admin:UrlPw99@ks.example/v3\n" + app);
  CHECK(e.find("credentials in the URL") != std::string::npos);
  CHECK(e.find("UrlPw99") == std::string::npos);
  e = ConfigError(head + "    endpoint: http://svc:EpPw55@glance.example:9292\n");
  CHECK(e.find("source.glance.endpoint: credentials in the URL") != std::string::npos);
  CHECK(e.find("EpPw55") == std::string::npos);
}

TEST_CASE("clouds.yaml: every spelling of verify off is refused; only secret files are listed") {
  TempDir dir;
  const auto clouds = dir.path() / "clouds.yaml";
  ScopedEnv file("OS_CLIENT_CONFIG_FILE", clouds.c_str());
  ScopedEnv secure_file("OS_CLIENT_SECURE_FILE", (dir.path() / "none.yaml").c_str());
  ScopedEnv cloud("OS_CLOUD", nullptr);
  const std::string head = "source:\n  type: glance\n  glance:\n    cloud: c\n";
  for (std::string off : {"false", "FALSE", "No", "NO", "off", "Off", "n", "0"}) {
    CAPTURE(off);
    WriteFile(clouds, "clouds:\n  c:\n    verify: " + off +
                          "\n    auth: {auth_url: 'https://ks', username: u, password: p}\n");
    CHECK(ConfigError(head).find("always verifies TLS") != std::string::npos);
  }
  WriteFile(clouds, "clouds:\n  c:\n    verify: true\n    auth: {auth_url: 'https://ks', "
                    "application_credential_id: i, application_credential_secret: s}\n");
  CHECK(ParseConfig(head).source.glance.auth.credential_files ==
        std::vector<std::string>{clouds.string()});
  // The id in clouds.yaml, the secret elsewhere (secure.yaml): clouds.yaml holds no secret.
  const auto secure = dir.path() / "secure.yaml";
  ScopedEnv secure_env("OS_CLIENT_SECURE_FILE", secure.c_str());
  WriteFile(clouds, "clouds:\n  c:\n    auth: {auth_url: 'https://ks', application_credential_id: i}\n"
                    "    auth_type: v3applicationcredential\n");
  WriteFile(secure, "clouds:\n  c:\n    auth: {application_credential_secret: s}\n");
  CHECK(ParseConfig(head).source.glance.auth.credential_files ==
        std::vector<std::string>{secure.string()});
  // Messages that point the right way.
  std::filesystem::remove(secure);
  WriteFile(clouds, "clouds:\n  c: just a string\n");
  CHECK(ConfigError(head).find("clouds.c: expected a map") != std::string::npos);
  WriteFile(clouds, "clouds:\n  c:\n    auth: {auth_url: 'ftp://ks', application_credential_secret: [x]}\n");
  CHECK(ConfigError(head).find("clouds.c.auth.application_credential_secret: expected a string") !=
        std::string::npos);
  WriteFile(clouds, "clouds:\n  c:\n    auth: {auth_url: 'ftp://ks', username: u, password: p}\n");
  CHECK(ConfigError(head).find(clouds.string() + ": clouds.c.auth.auth_url: 'ftp://ks'") !=
        std::string::npos);
  std::filesystem::remove(clouds);
  std::filesystem::create_directory(clouds);
  CHECK(ConfigError(head).find("not a regular file (a directory)") != std::string::npos);
}

TEST_CASE("host_id: names a host in locks and records; anything else is refused") {
  CHECK(ParseConfig("host_id: compute-01\n", "t.yaml").host_id == "compute-01");
  for (const char* bad : {"host_id: \"a b\"\n", "host_id: \"a:b\"\n", "host_id: \"../x\"\n",
                          "host_id: \"-x\"\n", "host_id: \".x\"\n", "host_id: [a]\n"}) {
    CAPTURE(bad);
    CHECK(ConfigError(bad).find("host_id") != std::string::npos);
  }
  CHECK(ConfigError("host_id: " + std::string(65, 'h') + "\n").find("host_id") !=
        std::string::npos);
}
