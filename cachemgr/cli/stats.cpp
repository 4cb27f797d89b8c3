// cachemgr stats: counters and sizes, as a table, JSON, or Prometheus text.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common.h"
#include "stats_what_if.h"

namespace cachemgr::cli {
namespace {

nlohmann::json PoolJson(const PoolTotals& p) {
  nlohmann::json hosts = nlohmann::json::object();
  for (const auto& [host, at] : p.hosts) hosts[host] = at;
  return {{"entries", p.entries}, {"cached_bytes", p.bytes}, {"pinned_bytes", p.pinned_bytes},
          {"last_pass_at", p.at},  {"last_pass_host", p.host}, {"hosts", hosts}};
}

struct StatsArgs {
  bool prometheus = false;
  std::string output;
  bool what_if = false;            // --what-if: other cache sizes (stats_what_if.cpp)
  double target_hit_ratio = 0.9;
};

// The text exposition format (version 0.0.4) that node_exporter's textfile collector
// reads: HELP and TYPE before each metric family, one sample a line.
std::string Prometheus(const Stats& s) {
  std::ostringstream out;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
        << name << ' ' << value << '\n';
  };
  metric("cachemgr_hits_total", "counter", "Volumes made from a cached entry.", s.hits);
  metric("cachemgr_misses_total", "counter", "Volumes whose image had to be fetched first.",
         s.misses);
  metric("cachemgr_direct_total", "counter",
         "Volumes cloned straight from the source's own RBD image.", s.direct);
  metric("cachemgr_direct_refused_total", "counter",
         "Source RBD locations refused for a direct clone (fetched instead).", s.direct_refused);
  metric("cachemgr_instant_total", "counter",
         "Misses served at once as an import of the image's file (cache.instant_miss).",
         s.instant);
  metric("cachemgr_imports_pending", "gauge",
         "Instant misses' imports not finished yet (pool-wide).", s.imports_pending);
  metric("cachemgr_bad_entries", "gauge",
         "Entries whose import found bytes other than the image's, with volumes left.",
         s.bad_entries);
  metric("cachemgr_bad_volumes", "gauge",
         "Volumes made from those entries: their bytes are not the image's.", s.bad_volumes);
  metric("cachemgr_evictions_total", "counter", "Entries evicted.", s.evictions);
  metric("cachemgr_stale_total", "counter", "Entries replaced because the image changed.", s.stale);
  metric("cachemgr_errors_total", "counter", "Failed operations.", s.errors);
  metric("cachemgr_downloaded_bytes_total", "counter", "Bytes fetched from the source.",
         s.bytes_downloaded);
  metric("cachemgr_saved_bytes_total", "counter", "Virtual bytes not copied thanks to clones.",
         s.bytes_saved);
  metric("cachemgr_entries", "gauge", "Cache entries.", s.entries);
  metric("cachemgr_cached_bytes", "gauge",
         "Bytes the entries take, as counted by cache.size_accounting.", s.cached_bytes);
  metric("cachemgr_pinned_bytes", "gauge", "Bytes of evicted entries kept for their clones.",
         s.pinned_bytes);
  metric("cachemgr_volumes", "gauge", "Volumes recorded.", s.volumes);
  metric("cachemgr_leftovers", "gauge",
         "Temporaries dead writers left, until the next eviction pass.", s.leftovers);
  metric("cachemgr_leftover_bytes", "gauge", "Bytes those leftovers hold.", s.leftover_bytes);
  metric("cachemgr_half_made", "gauge",
         "Fills, evictions and volume creates not finished (in progress or left by a dead "
         "process until the next eviction pass).",
         s.half_made);
  metric("cachemgr_left_alone", "gauge",
         "Objects the last eviction pass left alone: cache-like names the cache did not make.",
         s.left_alone);
  metric("cachemgr_dead_work_dirs", "gauge",
         "Working dirs of dead fills in conversion.dir, until the eviction pass removes them.",
         s.dead_work_dirs);
  metric("cachemgr_max_size_bytes", "gauge", "cache.max_size_gb in bytes; 0 = unlimited.",
         static_cast<uint64_t>(s.max_size_gb * 1024.0 * 1024.0 * 1024.0));
  // Not *_count: that suffix belongs to histograms and summaries (promtool says so).
  metric("cachemgr_max_entries", "gauge", "cache.max_count; 0 = unlimited.", s.max_count);
  // The whole pool (every host sharing it), as the last eviction pass on any host saw it.
  metric("cachemgr_pool_entries", "gauge",
         "Cache entries in the pool across every host sharing it (last pass).", s.pool.entries);
  metric("cachemgr_pool_cached_bytes", "gauge",
         "Bytes of the pool's cache entries across every host (last pass).", s.pool.bytes);
  metric("cachemgr_pool_pinned_bytes", "gauge",
         "Bytes of the pool's evicted entries kept for their clones (last pass).",
         s.pool.pinned_bytes);
  metric("cachemgr_pool_last_pass_timestamp_seconds", "gauge",
         "When the last eviction pass on any host sharing the pool ran.",
         static_cast<uint64_t>(std::max<int64_t>(0, s.pool.at)));
  metric("cachemgr_pool_hosts", "gauge", "Hosts that have run an eviction pass on the pool.",
         static_cast<uint64_t>(s.pool.hosts.size()));
  // Apart from cachemgr_misses_total (no label), so that a sum over it counts no miss twice.
  out << "# HELP cachemgr_misses_by_reason_total Misses by why they happened.\n"
         "# TYPE cachemgr_misses_by_reason_total counter\n";
  for (const auto& [reason, m] : s.misses_by_reason)
    out << "cachemgr_misses_by_reason_total{reason=\"" << reason << "\"} " << m.count << '\n';
  out << "# HELP cachemgr_miss_bytes_total Bytes fetched from the source by misses, by why "
         "they happened.\n"
         "# TYPE cachemgr_miss_bytes_total counter\n";
  for (const auto& [reason, m] : s.misses_by_reason)
    out << "cachemgr_miss_bytes_total{reason=\"" << reason << "\"} " << m.bytes_downloaded
        << '\n';
  out << "# HELP cachemgr_volume_creates_total Volumes made, by plan.\n"
         "# TYPE cachemgr_volume_creates_total counter\n";
  for (const auto& [plan, ps] : s.by_plan)
    out << "cachemgr_volume_creates_total{plan=\"" << plan << "\"} " << ps.count << '\n';
  out << "# HELP cachemgr_volume_create_seconds_total Time spent making volumes, by plan.\n"
         "# TYPE cachemgr_volume_create_seconds_total counter\n";
  for (const auto& [plan, ps] : s.by_plan) {
    char v[64];
    std::snprintf(v, sizeof v, "%.6f", static_cast<double>(ps.total.count()) / 1e6);
    out << "cachemgr_volume_create_seconds_total{plan=\"" << plan << "\"} " << v << '\n';
  }
  return out.str();
}

// The textfile collector may read at any moment: write a temp file, then rename.
void WriteAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw Error{Errc::kIo, "--output " + tmp + ": cannot write"};
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error{Errc::kIo, "--output " + path + ": cannot rename into place"};
  }
}

// `stats --json`: every counter and size, and the pool's totals.
std::string StatsJson(const Stats& s) {
  nlohmann::json by_plan = nlohmann::json::object();
  for (const auto& [plan, ps] : s.by_plan)
    by_plan[plan] = {{"count", ps.count},
                     {"total_ms", Millis(ps.total)},
                     {"mean_ms", ps.count ? Millis(ps.total) / ps.count : 0.0}};
  nlohmann::json by_reason = nlohmann::json::object();
  for (const auto& [reason, m] : s.misses_by_reason)
    by_reason[reason] = {{"count", m.count}, {"bytes_downloaded", m.bytes_downloaded}};
  return nlohmann::json{{"hits", s.hits},
                        {"misses", s.misses},
                        {"direct", s.direct},
                        {"direct_refused", s.direct_refused},
                        {"instant", s.instant},
                        {"imports_pending", s.imports_pending},
                        {"bad_entries", s.bad_entries},
                        {"bad_volumes", s.bad_volumes},
                        {"evictions", s.evictions},
                        {"stale", s.stale},
                        {"errors", s.errors},
                        {"bytes_downloaded", s.bytes_downloaded},
                        {"bytes_saved", s.bytes_saved},
                        {"entries", s.entries},
                        {"cached_bytes", s.cached_bytes},
                        {"pinned_bytes", s.pinned_bytes},
                        {"volumes", s.volumes},
                        {"leftovers", s.leftovers},
                        {"leftover_bytes", s.leftover_bytes},
                        {"half_made", s.half_made},
                        {"left_alone", s.left_alone},
                        {"dead_work_dirs", s.dead_work_dirs},
                        {"max_size_gb", s.max_size_gb},
                        {"max_count", s.max_count},
                        {"by_plan", by_plan},
                        {"misses_by_reason", by_reason},
                        {"pool", PoolJson(s.pool)}}
             .dump(2) +
         "\n";
}

// `stats` for people: a table of counters and sizes, then one of the plans' times.
std::string StatsTable(const Stats& s) {
  const uint64_t creates = s.hits + s.misses + s.direct;
  char ratio[32] = "-";
  if (creates) std::snprintf(ratio, sizeof ratio, "%.1f%%", 100.0 * s.hits / creates);
  Table t({"STAT", "VALUE"}, {false, true});
  t.Add({"entries",
         std::to_string(s.entries) + (s.max_count ? " of " + std::to_string(s.max_count) : "")});
  t.Add({"cached", HumanBytes(s.cached_bytes) + (s.max_size_gb > 0
                                                     ? " of " + HumanBytes(static_cast<uint64_t>(
                                                                    s.max_size_gb * (1ull << 30)))
                                                     : "")});
  t.Add({"pinned", HumanBytes(s.pinned_bytes)});
  t.Add({"volumes", std::to_string(s.volumes)});
  t.Add({"leftovers", std::to_string(s.leftovers) + " (" + HumanBytes(s.leftover_bytes) + ")"});
  t.Add({"half-made", std::to_string(s.half_made)});
  t.Add({"left alone", std::to_string(s.left_alone)});
  t.Add({"dead work dirs", std::to_string(s.dead_work_dirs)});
  t.Add({"hits", std::to_string(s.hits)});
  t.Add({"misses", std::to_string(s.misses)});
  t.Add({"direct", std::to_string(s.direct)});
  t.Add({"direct refused", std::to_string(s.direct_refused)});
  if (s.instant || s.imports_pending || s.bad_entries) {
    t.Add({"instant misses", std::to_string(s.instant)});
    t.Add({"imports pending", std::to_string(s.imports_pending)});
    t.Add({"bad entries", std::to_string(s.bad_entries) + " (" + std::to_string(s.bad_volumes) +
                              " volume(s) with bytes that are not the image's)"});
  }
  t.Add({"hit ratio", ratio});
  t.Add({"evictions", std::to_string(s.evictions)});
  t.Add({"stale", std::to_string(s.stale)});
  t.Add({"errors", std::to_string(s.errors)});
  t.Add({"downloaded", HumanBytes(s.bytes_downloaded)});
  t.Add({"saved by clones", HumanBytes(s.bytes_saved)});
  if (s.pool.at > 0) {
    t.Add({"pool entries", std::to_string(s.pool.entries) + " (all hosts, pass by " +
                               s.pool.host + " at " + HumanTime(s.pool.at) + ")"});
    t.Add({"pool cached", HumanBytes(s.pool.bytes)});
    t.Add({"pool pinned", HumanBytes(s.pool.pinned_bytes)});
    t.Add({"pool hosts", std::to_string(s.pool.hosts.size())});
  } else {
    t.Add({"pool entries", "- (no eviction pass has run on the pool yet)"});
  }
  std::string text = t.Render();
  if (!s.by_plan.empty()) {
    Table p({"PLAN", "COUNT", "MEAN", "TOTAL"}, {false, true, true, true});
    for (const auto& [plan, ps] : s.by_plan)
      p.Add({plan, std::to_string(ps.count), ps.count ? HumanDuration(ps.total / ps.count) : "-",
             HumanDuration(ps.total)});
    text += "\n" + p.Render();
  }
  if (s.misses > 0) {
    Table m({"MISS REASON", "COUNT", "DOWNLOADED"}, {false, true, true});
    for (const auto& [reason, ms] : s.misses_by_reason)
      m.Add({reason, std::to_string(ms.count), HumanBytes(ms.bytes_downloaded)});
    text += "\n" + m.Render();
  }
  return text;
}

int RunStats(Context& ctx, const StatsArgs& args) {
  if (args.prometheus && ctx.json) {
    throw Error(Errc::kInvalidArgument,
                "--json and --prometheus are two output formats: give one of them");
  }
  if (args.what_if) {
    if (args.prometheus) {
      throw Error(Errc::kInvalidArgument,
                  "--what-if prints a table or --json, not --prometheus: give one of them");
    }
    const WhatIfReport r = ctx.cache().WhatIf(args.target_hit_ratio);
    const std::string text = ctx.json ? WhatIfJson(r) : WhatIfTable(r);
    if (!args.output.empty()) {
      WriteAtomically(args.output, text);
    } else {
      std::cout << text;
    }
    return kExitOk;
  }
  const Stats s = ctx.cache().GetStats();
  std::string text = args.prometheus ? Prometheus(s) : ctx.json ? StatsJson(s) : StatsTable(s);
  // Volumes made from an entry found bad are named, not only counted.
  if (s.bad_entries > 0 && !args.prometheus) {
    const auto bad = ctx.cache().BadEntries();
    if (ctx.json) {
      auto doc = nlohmann::json::parse(text);
      doc["bad"] = nlohmann::json::array();
      for (const auto& b : bad) {
        doc["bad"].push_back({{"image_id", b.image_id}, {"reason", b.reason}, {"at", b.at},
                              {"volumes", b.volumes}});
      }
      text = doc.dump(2) + "\n";
    } else {
      for (const auto& b : bad) {
        std::string volumes;
        for (const auto& v : b.volumes) volumes += " " + v;
        text += "bad entry of image " + b.image_id + " (" + b.reason + "): volumes" + volumes + "\n";
      }
    }
  }
  if (!args.output.empty())
    WriteAtomically(args.output, text);
  else
    std::cout << text;
  return kExitOk;
}

}  // namespace

void AddStats(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<StatsArgs>();
  auto* sub = app.add_subcommand("stats", "counters and sizes; --prometheus for node_exporter");
  sub->footer(
      "Counters (hits, misses, evictions, bytes downloaded and saved) and sizes, as a "
      "table, --json, or --prometheus: the text format for node_exporter's textfile "
      "collector (metrics cachemgr_*), e.g. --prometheus --output "
      "/var/lib/node_exporter/textfile/cachemgr.prom (written atomically).");
  sub->add_flag("--prometheus", args->prometheus, "Prometheus text exposition format");
  sub->add_option("--output,-o", args->output,
                  "write to FILE (temp file + rename) instead of stdout");
  sub->add_flag("--what-if", args->what_if,
                "hit ratio at 0.5x, 1x, 2x and 4x of max_count and max_size_gb, and the size "
                "a target hit ratio needs (from the recorded reuse distances)");
  sub->add_option("--target-hit-ratio", args->target_hit_ratio,
                  "with --what-if: the hit ratio to size for, in (0, 1] (default 0.9)")
      ->check(CLI::Range(0.000001, 1.0));
  sub->callback([&ctx, args] { ctx.run = [&ctx, args] { return RunStats(ctx, *args); }; });
}

}  // namespace cachemgr::cli
