#include "common.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <iostream>
#include <limits>
#include <stdexcept>

extern char** environ;

namespace cachemgr::bench {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  // Linear interpolation between closest ranks (numpy's default), so report.py agrees.
  double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = static_cast<size_t>(std::ceil(rank));
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

Series& Results::Add(Series s) {
  series_.push_back(std::move(s));
  return series_.back();
}

void Results::Write(const std::string& path) const {
  nlohmann::json doc;
  doc["series"] = nlohmann::json::array();
  for (const auto& s : series_) {
    doc["series"].push_back({{"scenario", s.scenario},
                             {"name", s.name},
                             {"unit", s.unit},
                             {"samples", s.samples},
                             {"extra", s.extra}});
  }
  if (path == "-") {
    std::cout << doc.dump(1) << "\n";
    return;
  }
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path);
  out << doc.dump(1) << "\n";
  if (!out) throw std::runtime_error("short write to " + path);
}

ChildResult RunChild(const std::vector<std::string>& argv, bool quiet) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  auto start = Clock::now();
  pid_t pid = 0;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  return WaitChild(pid, start);
}

ChildResult WaitChild(pid_t pid, Clock::time_point start) {
  int status = 0;
  struct rusage usage {};
  if (wait4(pid, &status, 0, &usage) < 0) throw std::runtime_error("wait4 failed");
  ChildResult r;
  r.wall_ms = MsSince(start);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.max_rss_kib = static_cast<uint64_t>(usage.ru_maxrss);
  return r;
}

std::string UniqueTag() {
  static std::atomic<uint64_t> n{0};
  return std::to_string(getpid()) + "-" + std::to_string(n.fetch_add(1));
}

Args::Args(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0 && i + 1 < argc) {
      kv_.emplace_back(a.substr(2), argv[++i]);
    } else {
      positional_.push_back(a);
    }
  }
}

std::string Args::Get(const std::string& key) const {
  for (const auto& [k, v] : kv_) {
    if (k == key) return v;
  }
  throw std::runtime_error("missing --" + key);
}

std::string Args::Get(const std::string& key, const std::string& fallback) const {
  for (const auto& [k, v] : kv_) {
    if (k == key) return v;
  }
  return fallback;
}

long Args::GetInt(const std::string& key, long fallback) const {
  for (const auto& [k, v] : kv_) {
    if (k == key) return std::stol(v);
  }
  return fallback;
}

}  // namespace cachemgr::bench
