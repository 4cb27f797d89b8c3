// MakeLogger (programs) and OrNull (the library): levels, the rotating file, stderr.
#include "cachemgr/logging.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>

#include "cachemgr/error.h"
#include "log/log.h"
#include "support/test_util.h"

namespace fs = std::filesystem;
using cachemgr::Errc;
using cachemgr::Error;
using cachemgr::LogOptions;
using cachemgr::MakeLogger;
using cachemgr::test::ReadFile;
using cachemgr::test::TempDir;

namespace {

// Sends fd 2 to a file for one scope, so a test can see what was written to stderr.
class CaptureStderr {
 public:
  explicit CaptureStderr(const fs::path& file) {
    fflush(stderr);
    saved_ = dup(2);
    const int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    dup2(fd, 2);
    close(fd);
  }
  ~CaptureStderr() {
    fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
  }

 private:
  int saved_ = -1;
};

LogOptions Opts(const std::string& level, const std::string& file = "", uint32_t max_file_mb = 10,
                uint32_t max_files = 3) {
  LogOptions o;
  o.level = level;
  o.file = file;
  o.max_file_mb = max_file_mb;
  o.max_files = max_files;
  return o;
}

}  // namespace

TEST_CASE("log levels parse, and a bad one names log.level") {
  CHECK(cachemgr::ParseLogLevel("trace") == spdlog::level::trace);
  CHECK(cachemgr::ParseLogLevel("warn") == spdlog::level::warn);
  CHECK(cachemgr::ParseLogLevel("error") == spdlog::level::err);
  CHECK(cachemgr::ParseLogLevel("off") == spdlog::level::off);
  try {
    MakeLogger(Opts("loud"));
    FAIL("no error for level loud");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find("log.level") != std::string::npos);
    CHECK(std::string(e.what()).find("'loud'") != std::string::npos);
  }
}

TEST_CASE("the logger writes at its level to stderr and the file") {
  TempDir dir("log");
  const fs::path file = dir / "cm.log";
  const fs::path err = dir / "stderr.txt";
  {
    CaptureStderr capture(err);
    auto logger = MakeLogger(Opts("warn", file.string()));
    CHECK(logger->level() == spdlog::level::warn);
    logger->info("quiet image=a");
    logger->warn("loud image=b");
    logger->flush();
  }
  const std::string in_file = ReadFile(file);
  CHECK(in_file.find("loud image=b") != std::string::npos);
  CHECK(in_file.find("quiet") == std::string::npos);
  const std::string on_stderr = ReadFile(err);
  CHECK(on_stderr.find("loud image=b") != std::string::npos);
  CHECK(on_stderr.find("quiet") == std::string::npos);
}

TEST_CASE("a message's control and non-ASCII bytes are escaped on stderr and in the file") {
  TempDir dir("log");
  const fs::path file = dir / "cm.log";
  const fs::path err = dir / "stderr.txt";
  {
    CaptureStderr capture(err);
    auto logger = MakeLogger(Opts("info", file.string()));
    // A name found on disk that would forge a second line and colour the terminal.
    logger->warn("removed path=a\n2026-01-01 error forged \x1b[31mred\x7f\xff caf\xc3\xa9");
    logger->flush();
  }
  for (const auto& text : {ReadFile(file), ReadFile(err)}) {
    CAPTURE(text);
    CHECK(text.find("removed path=a\\x0a2026-01-01 error forged \\x1b[31mred\\x7f\\xff "
                    "caf\\xc3\\xa9") != std::string::npos);
    CHECK(std::count(text.begin(), text.end(), '\n') == 1);
    CHECK(text.find('\x1b') == std::string::npos);
  }
}

TEST_CASE("with to_stderr false nothing reaches stderr") {
  TempDir dir("log");
  const fs::path err = dir / "stderr.txt";
  {
    CaptureStderr capture(err);
    auto logger = MakeLogger(Opts("trace", (dir / "cm.log").string()), false);
    logger->error("only in the file");
    logger->flush();
  }
  CHECK(ReadFile(err).empty());
  CHECK(ReadFile(dir / "cm.log").find("only in the file") != std::string::npos);
}

TEST_CASE("the log file rotates and keeps max_files") {
  TempDir dir("log");
  const fs::path file = dir / "cm.log";
  auto logger = MakeLogger(Opts("info", file.string(), 1, 2), false);
  const std::string line(1000, 'x');
  for (int i = 0; i < 4000; ++i) logger->info("{} n={}", line, i);  // ~4 MB
  logger->flush();
  CHECK(fs::exists(dir / "cm.log"));
  CHECK(fs::exists(dir / "cm.1.log"));
  CHECK(fs::exists(dir / "cm.2.log"));
  CHECK_FALSE(fs::exists(dir / "cm.3.log"));
  CHECK(fs::file_size(dir / "cm.1.log") <= 1024 * 1024 + 2048);
}

TEST_CASE("a log file that cannot be opened names log.file") {
  TempDir dir("log");
  // A regular file where a directory should be: the log cannot be created under it.
  cachemgr::test::WriteFile(dir / "notadir", "x");
  try {
    MakeLogger(Opts("info", (dir / "notadir/cm.log").string()), false);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kConfig);
    CHECK(std::string(e.what()).find("log.file") != std::string::npos);
  }
}

TEST_CASE("OrNull: the given logger, else the registered one, else one that drops") {
  std::ostringstream out;
  auto given = std::make_shared<spdlog::logger>(
      "given", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  CHECK(cachemgr::log::OrNull(given) == given);

  REQUIRE(spdlog::get("cachemgr") == nullptr);
  auto dropped = cachemgr::log::OrNull(nullptr);
  REQUIRE(dropped != nullptr);
  dropped->error("goes nowhere");  // must not crash or write anywhere

  auto registered = std::make_shared<spdlog::logger>(
      "cachemgr", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  spdlog::register_logger(registered);
  CHECK(cachemgr::log::OrNull(nullptr) == registered);
  cachemgr::log::OrNull(nullptr)->warn("via registry");
  CHECK(out.str().find("via registry") != std::string::npos);
  spdlog::drop("cachemgr");
}
