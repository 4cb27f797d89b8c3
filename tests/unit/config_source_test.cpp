// The config's source section: its bounds, Keystone auth and the clouds of clouds.yaml.
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
