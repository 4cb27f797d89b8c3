#include "log/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "cachemgr/logging.h"

namespace cachemgr {

namespace log {

std::shared_ptr<spdlog::logger> OrNull(std::shared_ptr<spdlog::logger> logger) {
  if (logger) return logger;
  if (auto registered = spdlog::get("cachemgr")) return registered;
  // One shared drop-everything logger; it is never registered, so it cannot clash with
  // a program's own "cachemgr" logger registered later.
  static const auto null_logger = std::make_shared<spdlog::logger>(
      "cachemgr", std::make_shared<spdlog::sinks::null_sink_mt>());
  return null_logger;
}

}  // namespace log

spdlog::level::level_enum ParseLogLevel(std::string_view level) {
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
      {"err", spdlog::level::err},     {"critical", spdlog::level::critical},
      {"off", spdlog::level::off}};
  for (const auto& [name, value] : kLevels) {
    if (level == name) return value;
  }
  throw Error(Errc::kConfig,
              "log.level: must be one of trace, debug, info, warn, error, critical, off (got '" +
                  std::string(level) + "')");
}

namespace {

// %* : the message with every byte outside printable ASCII as \xNN (util::Printable's
// form, uncut). Messages carry names found on disk or sent by a server; a newline or a
// terminal escape in one must not forge a log line or garble a terminal.
class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*tm*/,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (const char c : msg.payload) {
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u < 0x7f) {
        dest.push_back(c);
      } else {
        const char esc[4] = {'\\', 'x', kHex[u >> 4], kHex[u & 0xf]};
        dest.append(esc, esc + 4);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessage>();
  }
};

std::unique_ptr<spdlog::formatter> Escaping(const std::string& pattern) {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<EscapedMessage>('*').set_pattern(pattern);
  return f;
}

}  // namespace

std::shared_ptr<spdlog::logger> MakeLogger(const LogOptions& options, bool to_stderr) {
  const auto level = ParseLogLevel(options.level);
  std::vector<spdlog::sink_ptr> sinks;
  if (to_stderr) {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    sink->set_formatter(Escaping("cachemgr: %^%l%$: %*"));
    sinks.push_back(std::move(sink));
  }
  if (!options.file.empty()) {
    if (options.max_file_mb == 0 || options.max_files == 0) {
      throw Error(Errc::kConfig, "log.max_file_mb and log.max_files: must be >= 1");
    }
    try {
      auto sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          options.file, static_cast<std::size_t>(options.max_file_mb) * 1024 * 1024,
          options.max_files);
      sink->set_formatter(Escaping("%Y-%m-%dT%H:%M:%S.%e%z %l [%P] %*"));
      sinks.push_back(std::move(sink));
    } catch (const spdlog::spdlog_ex& e) {
      throw Error(Errc::kConfig, "log.file: cannot open " + options.file + ": " + e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("cachemgr", sinks.begin(), sinks.end());
  logger->set_level(level);
  // A file written by cron or systemd should hold warnings even if the process dies.
  logger->flush_on(spdlog::level::warn);
  return logger;
}

}  // namespace cachemgr
