// cli/common.cpp: the shared parsers, printers and the lazily opened cache.
#include "common.h"

#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <sstream>

#include "cachemgr/config.h"
#include "cachemgr/logging.h"

namespace cachemgr::cli {

std::filesystem::path Context::ConfigPath() const {
  return config_path.empty() ? DefaultConfigPath() : std::filesystem::path(config_path);
}

const Options& Context::options() {
  if (!options_) {
    options_ = LoadConfigFile(FindConfigFile(config_path));
    if (!log_level.empty()) options_->log.level = log_level;
  }
  return *options_;
}

std::shared_ptr<spdlog::logger> Context::logger() {
  if (logger_) return logger_;
  LogOptions log = options_ ? options_->log : LogOptions{};
  if (!log_level.empty()) log.level = log_level;
  // The tool is quiet: stderr carries warnings and errors unless asked for more.
  spdlog::level::level_enum on_stderr = spdlog::level::warn;
  if (!log_level.empty()) {
    on_stderr = ParseLogLevel(log_level);
  } else if (verbose > 0) {
    on_stderr = verbose == 1 ? spdlog::level::info : spdlog::level::debug;
  }
  const spdlog::level::level_enum in_file = ParseLogLevel(log.level);
  // The logger lets through what either sink wants; each sink keeps its own level.
  log.level = spdlog::level::to_string_view(std::min(on_stderr, in_file)).data();
  try {
    logger_ = MakeLogger(log);
  } catch (const Error& e) {
    if (log.file.empty()) throw;
    // A log file this user cannot write must not stop the command: stderr only.
    const std::string file = log.file;
    log.file.clear();
    logger_ = MakeLogger(log);
    logger_->warn("log.file {} cannot be opened ({}); logging to stderr only: make it "
                  "writable by this user or change log.file",
                  file, e.what());
  }
  auto& sinks = logger_->sinks();
  if (!sinks.empty()) sinks.front()->set_level(on_stderr);  // stderr comes first
  for (size_t i = 1; i < sinks.size(); ++i) sinks[i]->set_level(in_file);
  return logger_;
}

void Context::LogToFile(const std::string& line) {
  if (!logger_) {
    if (!options_) return;  // no config loaded: no log file known
    try {
      logger();
    } catch (const Error&) {
      return;
    }
  }
  const auto& sinks = logger_->sinks();
  for (size_t i = 1; i < sinks.size(); ++i) {
    if (!sinks[i]->should_log(spdlog::level::err)) continue;  // log.level off
    sinks[i]->log(spdlog::details::log_msg(logger_->name(), spdlog::level::err, OneLine(line)));
    sinks[i]->flush();
  }
}

Cache& Context::cache() {
  if (!cache_) {
    const Options& opts = options();
    cache_ = Cache::Open(opts, logger());
  }
  return *cache_;
}

namespace {

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

}  // namespace

uint64_t ParseSize(std::string_view text) {
  const std::string s = Trim(text);
  auto bad = [&](const std::string& why) {
    return Error{Errc::kInvalidArgument, "size '" + std::string(text) + "': " + why};
  };
  if (s.empty()) throw bad("empty");
  size_t pos = 0;
  while (pos < s.size() && (std::isdigit(static_cast<unsigned char>(s[pos])) || s[pos] == '.'))
    ++pos;
  if (pos == 0) throw bad("expected a number of bytes or a number with K, M, G or T");
  const std::string number = s.substr(0, pos);
  if (std::count(number.begin(), number.end(), '.') > 1) throw bad("malformed number");
  std::string suffix = Trim(s.substr(pos));
  for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // Accept "G", "GB", "GiB" alike: all mean powers of 1024 here, as qemu-img and rbd do.
  if (suffix.size() == 3 && suffix[1] == 'I' && suffix[2] == 'B') suffix.resize(1);
  if (suffix.size() == 2 && suffix[1] == 'B') suffix.resize(1);
  int shift = 0;
  if (suffix.empty() || suffix == "B")
    shift = 0;
  else if (suffix == "K")
    shift = 10;
  else if (suffix == "M")
    shift = 20;
  else if (suffix == "G")
    shift = 30;
  else if (suffix == "T")
    shift = 40;
  else
    throw bad("unknown suffix '" + suffix + "' (use K, M, G or T; powers of 1024)");
  const long double value = std::strtold(number.c_str(), nullptr);
  const long double bytes = value * std::pow(2.0L, shift);
  if (!std::isfinite(bytes) || bytes >= 18446744073709551615.0L) throw bad("too large");
  if (shift == 0 && number.find('.') != std::string::npos) throw bad("bytes must be whole");
  return static_cast<uint64_t>(std::llround(bytes));
}

std::chrono::seconds ParseDuration(std::string_view text) {
  const std::string s = Trim(text);
  auto bad = [&](const std::string& why) {
    return Error{Errc::kInvalidArgument, "duration '" + std::string(text) + "': " + why};
  };
  if (s.empty()) throw bad("empty");
  uint64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == start) throw bad("expected a number, e.g. 30d, 12h, 1h30m, 45s");
    if (i - start > 12) throw bad("too large");
    const uint64_t n = std::stoull(s.substr(start, i - start));
    uint64_t unit = 1;
    if (i < s.size()) {
      switch (s[i]) {
        case 's':
          unit = 1;
          break;
        case 'm':
          unit = 60;
          break;
        case 'h':
          unit = 3600;
          break;
        case 'd':
          unit = 86400;
          break;
        case 'w':
          unit = 7 * 86400;
          break;
        default:
          throw bad(std::string("unknown unit '") + s[i] + "' (use s, m, h, d or w)");
      }
      ++i;
    } else if (start != 0) {
      throw bad("a unit is needed after every number but a lone one");
    }
    total += n * unit;
  }
  return std::chrono::seconds(total);
}

std::string HumanBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10 ? "%.2f %s" : (v < 100 ? "%.1f %s" : "%.0f %s"), v,
                kUnits[u]);
  return buf;
}

double Millis(std::chrono::microseconds d) { return static_cast<double>(d.count()) / 1000.0; }

std::string HumanDuration(std::chrono::microseconds d) {
  char buf[32];
  const double ms = Millis(d);
  if (ms < 1)
    std::snprintf(buf, sizeof buf, "%.2f ms", ms);
  else if (ms < 1000)
    std::snprintf(buf, sizeof buf, "%.0f ms", ms);
  else if (ms < 60000)
    std::snprintf(buf, sizeof buf, "%.1f s", ms / 1000);
  else {
    const long long s = static_cast<long long>(ms / 1000);
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  }
  return buf;
}

std::string HumanTime(int64_t unix_seconds) {
  if (unix_seconds <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

Table::Table(std::vector<std::string> header, std::vector<bool> right_align)
    : header_(std::move(header)), right_(std::move(right_align)) {
  right_.resize(header_.size(), false);
}

void Table::Add(std::vector<std::string> row) {
  row.resize(header_.size());
  // Names found on the backend may hold any byte: a newline would forge a row, an
  // escape sequence reach the terminal. Shown as \xNN, uncut (--json has them exact).
  for (auto& cell : row) cell = Shown(cell);
  rows_.push_back(std::move(row));
}

std::string Table::Render() const {
  std::vector<size_t> width(header_.size());
  for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
  for (const auto& r : rows_)
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < cells.size(); ++c) {
      const size_t pad = width[c] - cells[c].size();
      if (c) l += "  ";
      if (right_[c])
        l += std::string(pad, ' ') + cells[c];
      else
        l += cells[c] + (c + 1 < cells.size() ? std::string(pad, ' ') : "");
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out << l << '\n';
  };
  line(header_);
  for (const auto& r : rows_) line(r);
  return out.str();
}

// Bytes that are not UTF-8 (a path or a tool's output in a message) are written as
// U+FFFD: one JSON document whatever the text holds.
void PrintJson(const nlohmann::json& doc) {
  std::cout << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
}

std::string Shown(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      out += {'\\', 'x', kHex[u >> 4], kHex[u & 0xf]};
    }
  }
  return out;
}

std::string OneLine(std::string text) {
  // A tool's output inside a message (qemu-img check, a server's answer) spans lines.
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\n' || c == '\r') {
      if (!out.empty() && out.back() != ' ') out += "; ";
    } else {
      out += c;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) out.pop_back();
  return Shown(out);  // a name quoted in it may hold any byte
}

nlohmann::json ToJson(const EntryInfo& e) {
  return {{"image_id", e.image_id},
          {"backend", e.backend},
          {"pool", e.pool},
          {"cache_name", e.cache_name},
          {"state", std::string(EntryStateName(e.state))},
          {"virtual_size", e.virtual_size},
          {"allocated_bytes", e.allocated_bytes},
          {"disk_format", e.disk_format},
          {"checksum", e.checksum},
          {"os_hash_algo", e.os_hash_algo},
          {"os_hash_value", e.os_hash_value},
          {"image_updated_at", e.image_updated_at},
          {"depth", e.depth},
          {"created_at", e.created_at},
          {"last_used", e.last_used},
          {"hits", e.hits},
          {"volumes", e.volumes},
          {"pinned", e.pinned}};
}

nlohmann::json ToJson(const VolumeInfo& v) {
  return {{"name", v.name},   {"image_id", v.image_id},     {"plan", std::string(PlanName(v.plan))},
          {"depth", v.depth}, {"size_bytes", v.size_bytes}, {"created_at", v.created_at}};
}

bool ProgressOnTerminal() {
  const char* term = std::getenv("TERM");
  return isatty(STDERR_FILENO) && !(term && std::string_view(term) == "dumb");
}

StageBar::StageBar() : enabled_(ProgressOnTerminal()) {}

StageBar::~StageBar() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
}

ProgressFn StageBar::fn() {
  if (!enabled_) return {};
  return [this](const Progress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && p.done_bytes != p.total_bytes) return;
    last_ = now;
    drawn_ = true;
    std::fprintf(stderr, "\r\033[K%-8s %s %s", p.stage.c_str(),
                 Bar(p.done_bytes, p.total_bytes, 30).c_str(), HumanBytes(p.done_bytes).c_str());
    std::fflush(stderr);
  };
}

std::string Bar(uint64_t done, uint64_t total, int width) {
  std::string bar = "[";
  if (total == 0) {
    bar += std::string(width, '.');
    return bar + "]   ?%";
  }
  const double f = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  const int filled = static_cast<int>(f * width);
  bar += std::string(filled, '#') + std::string(width - filled, '.');
  char pct[16];
  std::snprintf(pct, sizeof pct, "] %3d%%", static_cast<int>(f * 100));
  return bar + pct;
}

}  // namespace cachemgr::cli
