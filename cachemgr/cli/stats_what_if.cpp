// cli/stats_what_if.cpp: the hit ratio other cache sizes would have had, and the size a
// target hit ratio needs, from the reuse-distance histograms (Cache::WhatIf).
#include "stats_what_if.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.h"

namespace cachemgr::cli {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string Percent(double ratio) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f%%", 100.0 * ratio);
  return s;
}

std::string Factor(double f) {
  char s[16];
  std::snprintf(s, sizeof s, "%gx", f);
  return s;
}

std::string Gib(double gb) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", gb);
  return s;
}

const char* kLimits =
    "A model: LRU stack distances predict a cache that evicts only by LRU at its limits; "
    "pinned entries, stale replacements, uncached images and hosts sharing a pool make the "
    "real figure differ. Distances of 64 entries and more are kept in buckets 1/8 of a "
    "power of two wide, the hits inside one interpolated; the two limits are modelled "
    "apart, and with both the lower ratio is shown (an upper bound).";

}  // namespace

std::string WhatIfTable(const WhatIfReport& r) {
  if (r.accesses == 0) {
    return "No accesses recorded yet: the what-if needs volumes made from the cache "
           "(hits and misses) since this version.\n";
  }
  std::string text = "accesses " + std::to_string(r.accesses) + ", first accesses (cold) " +
                     std::to_string(r.cold) + ", measured hit ratio " +
                     Percent(static_cast<double>(r.measured_hits) / r.accesses) +
                     ", best possible " + Percent(r.max_hit_ratio) + "\n\n";
  Table t({"SIZE", "MAX_COUNT", "MAX_SIZE", "HIT RATIO", "BY COUNT", "BY SIZE"},
          {false, true, true, true, true, true});
  for (const auto& row : r.rows) {
    t.Add({Factor(row.factor) + (row.factor == 1 ? " (today)" : ""),
           row.max_count ? std::to_string(row.max_count) : "unlimited",
           row.max_size_gb > 0 ? Gib(row.max_size_gb) : "unlimited", Percent(row.hit_ratio),
           Percent(row.hit_ratio_by_count), Percent(row.hit_ratio_by_size)});
  }
  text += t.Render();
  text += "\nfor a hit ratio of " + Percent(r.target_hit_ratio) + ": ";
  if (r.count_for_target && r.size_gb_for_target) {
    text += "max_count " + std::to_string(*r.count_for_target) + ", or max_size_gb " +
            Gib(*r.size_gb_for_target) + "\n";
  } else {
    text += "no size reaches it (the first accesses miss at any size; best " +
            Percent(r.max_hit_ratio) + ")\n";
  }
  return text + "\n" + kLimits + "\n";
}

std::string WhatIfJson(const WhatIfReport& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : r.rows) {
    rows.push_back({{"factor", row.factor},
                    {"max_count", row.max_count},
                    {"max_size_gb", row.max_size_gb},
                    {"hit_ratio", row.hit_ratio},
                    {"hit_ratio_by_count", row.hit_ratio_by_count},
                    {"hit_ratio_by_size", row.hit_ratio_by_size}});
  }
  nlohmann::json target = {{"hit_ratio", r.target_hit_ratio},
                           {"max_count", nullptr},
                           {"max_size_gb", nullptr}};
  if (r.count_for_target) target["max_count"] = *r.count_for_target;
  if (r.size_gb_for_target) target["max_size_gb"] = *r.size_gb_for_target;
  return nlohmann::json{{"accesses", r.accesses},
                        {"cold", r.cold},
                        {"measured_hits", r.measured_hits},
                        {"measured_hit_ratio",
                         r.accesses ? static_cast<double>(r.measured_hits) / r.accesses : 0.0},
                        {"max_hit_ratio", r.max_hit_ratio},
                        {"sizes", rows},
                        {"target", target},
                        {"model_limits", kLimits}}
             .dump(2) +
         "\n";
}

}  // namespace cachemgr::cli
