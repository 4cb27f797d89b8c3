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
#include "config_test_util.h"
#include "support/test_util.h"

using cachemgr::BackendType;
using cachemgr::CloneMode;
using cachemgr::Errc;
using cachemgr::Error;
using cachemgr::Options;
using cachemgr::ParseConfig;
using cachemgr::SizeAccounting;
using cachemgr::SourceType;
using cachemgr::test::ConfigError;
using cachemgr::test::ScopedEnv;
using cachemgr::test::TempDir;
using cachemgr::test::WriteFile;

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

TEST_CASE("cache.events_max_age_days and events_max_rows: read, defaulted, bounded") {
  Options defaults = ParseConfig("{}", "test.yaml");
  CHECK(defaults.cache.events_max_age_days == 90);
  CHECK(defaults.cache.events_max_rows == 1000000);
  Options o = ParseConfig("cache:\n  events_max_age_days: 400\n  events_max_rows: 5000000\n",
                          "test.yaml");
  CHECK(o.cache.events_max_age_days == 400);
  CHECK(o.cache.events_max_rows == 5000000);
  // 0 turns either bound off.
  o = ParseConfig("cache: {events_max_age_days: 0, events_max_rows: 0}", "test.yaml");
  CHECK(o.cache.events_max_age_days == 0);
  CHECK(o.cache.events_max_rows == 0);
  CHECK(ConfigError("cache:\n  events_max_rows: 10\n")
            .find("test.yaml:2: cache.events_max_rows: must be 0 (no limit) or >= 1000 (got 10)") !=
        std::string::npos);
  CHECK(ConfigError("cache: {events_max_age_days: 40000}")
            .find("cache.events_max_age_days: must be between 0 and 36500 (got 40000)") !=
        std::string::npos);
  CHECK(ConfigError("cache: {events_max_age_days: -1}").find("cache.events_max_age_days") !=
        std::string::npos);
  CHECK(ConfigError("cache: {events_max_rows: many}")
            .find("cache.events_max_rows: expected an integer, got 'many'") != std::string::npos);
}

TEST_CASE("cache.min_free_percent, min_free_gb, on_no_room: read, defaulted, bounded") {
  Options defaults = ParseConfig("{}", "test.yaml");
  CHECK(defaults.cache.min_free_percent == 0);
  CHECK(defaults.cache.min_free_gb == 0);
  CHECK(defaults.cache.on_no_room == cachemgr::OnNoRoom::kUncached);
  Options o = ParseConfig("cache:\n  min_free_percent: 12.5\n  min_free_gb: 0.25\n"
                          "  on_no_room: refuse\n",
                          "test.yaml");
  CHECK(o.cache.min_free_percent == 12.5);
  CHECK(o.cache.min_free_gb == 0.25);
  CHECK(o.cache.on_no_room == cachemgr::OnNoRoom::kRefuse);
  CHECK(ConfigError("cache:\n  min_free_percent: 100\n")
            .find("test.yaml:2: cache.min_free_percent: must be between 0 and 99") !=
        std::string::npos);
  CHECK(ConfigError("cache: {min_free_percent: -1}").find("cache.min_free_percent") !=
        std::string::npos);
  CHECK(ConfigError("cache: {min_free_gb: -0.5}").find("cache.min_free_gb: must be >= 0") !=
        std::string::npos);
  CHECK(ConfigError("cache: {min_free_gb: 1e30}").find("at most 1048576 (1 PiB)") !=
        std::string::npos);
  CHECK(ConfigError("cache: {min_free_gb: lots}")
            .find("cache.min_free_gb: expected a number, got 'lots'") != std::string::npos);
  CHECK(ConfigError("cache: {on_no_room: wait}").find("cache.on_no_room: must be one of") !=
        std::string::npos);
}

TEST_CASE("cache.flatten_pinned_max and flatten_pinned_budget_s: read, defaulted, bounded") {
  Options defaults = ParseConfig("{}", "test.yaml");
  CHECK(defaults.cache.flatten_pinned_max == 0);  // off unless asked for
  CHECK(defaults.cache.flatten_pinned_budget_s == 300);
  Options o = ParseConfig("cache:\n  flatten_pinned_max: 4\n  flatten_pinned_budget_s: 0\n",
                          "test.yaml");
  CHECK(o.cache.flatten_pinned_max == 4);
  CHECK(o.cache.flatten_pinned_budget_s == 0);
  CHECK(ConfigError("cache:\n  flatten_pinned_max: 5000\n")
            .find("test.yaml:2: cache.flatten_pinned_max: must be between 0 and 1000 (got 5000)") !=
        std::string::npos);
  CHECK(ConfigError("cache: {flatten_pinned_budget_s: 100000}")
            .find("cache.flatten_pinned_budget_s: must be between 0 and 86400 (got 100000)") !=
        std::string::npos);
  CHECK(ConfigError("cache: {flatten_pinned_max: -1}").find("cache.flatten_pinned_max") !=
        std::string::npos);
}
