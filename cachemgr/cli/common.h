// cli/common.h: what every subcommand shares: the global options, the lazily opened
// cache, and the small parsers and printers (sizes, durations, tables, progress).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cachemgr/cache.h"
#include "cachemgr/error.h"
#include "cachemgr/options.h"

namespace CLI {
class App;
}
namespace spdlog {
class logger;
}

namespace cachemgr::cli {

// Exit codes: the contract in --help, README and ../shared/CLI.md.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitRefused = 4;
inline constexpr int kExitBusy = 5;

// The one mapping from library error codes to exit codes (defined in main.cpp).
int ExitCodeFor(Errc code) noexcept;

// Global options and the resources every subcommand may need. The cache is opened on
// first use so that `--help` and usage errors never touch the config.
class Context {
 public:
  std::string config_path;  // --config; empty: DefaultConfigPath()
  bool json = false;        // --json
  // What stderr shows: warnings and errors by default; -v info, -vv debug; --log-level
  // sets stderr and the log file alike. The log file (log.file) keeps the config's
  // log.level otherwise.
  std::string log_level;    // --log-level; empty: see above
  int verbose = 0;          // -v count

  // The subcommand's body, set by its parse callback; returns the exit code.
  std::function<int()> run;

  std::filesystem::path ConfigPath() const;
  const Options& options();  // loads and validates the config once (kConfig on failure)
  // Writes an error line to log.file (not stderr: the caller printed it there already).
  void LogToFile(const std::string& line);
  std::shared_ptr<spdlog::logger> logger();
  Cache& cache();  // opens the cache once

 private:
  std::optional<Options> options_;
  std::shared_ptr<spdlog::logger> logger_;
  std::unique_ptr<Cache> cache_;
};

// Each subcommand registers itself on the app (one file each).
void AddCreate(CLI::App& app, Context& ctx);
void AddDelete(CLI::App& app, Context& ctx);
void AddPrefill(CLI::App& app, Context& ctx);
void AddEvict(CLI::App& app, Context& ctx);
void AddList(CLI::App& app, Context& ctx);
void AddShow(CLI::App& app, Context& ctx);
void AddStats(CLI::App& app, Context& ctx);
void AddVerify(CLI::App& app, Context& ctx);
void AddRebuildIndex(CLI::App& app, Context& ctx);
void AddDoctor(CLI::App& app, Context& ctx);
void AddFinishImport(CLI::App& app, Context& ctx);  // import.cpp

// "10G", "512M", "1048576", "1.5T": bytes or K/M/G/T (powers of 1024). Throws
// Error{kInvalidArgument} naming the text.
uint64_t ParseSize(std::string_view text);
// "30d", "12h", "1h30m", "45s", "90" (seconds). Throws Error{kInvalidArgument}.
std::chrono::seconds ParseDuration(std::string_view text);

std::string HumanBytes(uint64_t bytes);                  // "1.5 GiB", "512 B"
std::string HumanDuration(std::chrono::microseconds d);  // "12 ms", "3.4 s", "2m05s"
std::string HumanTime(int64_t unix_seconds);             // "2024-05-01 12:00:00" (local), "-" for 0
double Millis(std::chrono::microseconds d);

// A plain-text table: columns padded to their widest cell, numbers right-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header, std::vector<bool> right_align = {});
  void Add(std::vector<std::string> row);
  std::string Render() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

// Prints `doc` as the one JSON document on stdout.
// `text` on one line: line breaks become "; ", other bytes outside printable ASCII \xNN.
std::string OneLine(std::string text);
// `text` for a terminal or a table cell: every byte outside printable ASCII as \xNN, so a
// name found on the backend cannot forge a row or send an escape sequence.
std::string Shown(std::string_view text);
void PrintJson(const nlohmann::json& doc);

nlohmann::json ToJson(const EntryInfo& e);
nlohmann::json ToJson(const VolumeInfo& v);

// True when progress bars may be drawn (stderr is a terminal and TERM is not "dumb").
bool ProgressOnTerminal();
// "[#####.....]  45%" of `width` cells; total 0 draws an indeterminate bar.
std::string Bar(uint64_t done, uint64_t total, int width);

// One call's progress as a bar on stderr ("stage [####..] 1.2 GiB", at most 10 redraws/s)
// when ProgressOnTerminal(); fn() is empty otherwise. The destructor erases a bar drawn.
class StageBar {
 public:
  StageBar();
  ~StageBar();
  StageBar(const StageBar&) = delete;
  StageBar& operator=(const StageBar&) = delete;
  // The callback to hand to the library; valid while this object lives.
  ProgressFn fn();

 private:
  bool enabled_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace cachemgr::cli
