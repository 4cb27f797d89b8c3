// The config file: reading it, naming it and its lines, its relative paths, where it is
// looked for, and the folders it may name.
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
