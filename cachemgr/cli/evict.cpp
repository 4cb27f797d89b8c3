// cachemgr evict: the periodic pass that cron or a systemd timer runs.
#include <CLI/CLI.hpp>
#include <chrono>
#include <optional>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

struct EvictArgs {
  bool dry_run = false;
  std::string flatten_older_than;
  bool no_source_check = false;
  std::optional<uint32_t> flatten_pinned_max;
};

int RunEvict(Context& ctx, const EvictArgs& args) {
  // The time reported is the command's, from here: opening the cache included.
  const auto start = std::chrono::steady_clock::now();
  EvictOptions options;
  options.dry_run = args.dry_run;
  options.check_source = !args.no_source_check;
  if (!args.flatten_older_than.empty())
    options.flatten_older_than = ParseDuration(args.flatten_older_than);
  options.flatten_pinned_max = args.flatten_pinned_max;

  // kBusy (another pass holds the lock) propagates: main maps it to exit 5.
  const EvictReport report = ctx.cache().RunEvictionPass(options);
  const auto wall = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);

  size_t done = 0, failed = 0;
  for (const auto& a : report.actions) {
    // Skipped (an image busy with a clone or a fill, an entry changed meanwhile) and left
    // alone (not the cache's) are not failures: the next pass looks again.
    const bool skipped = a.reason.find("skipped:") != std::string::npos || a.kind == "left alone";
    if (a.done)
      ++done;
    else if (!args.dry_run && !skipped)
      ++failed;
  }
  if (ctx.json) {
    nlohmann::json actions = nlohmann::json::array();
    for (const auto& a : report.actions)
      actions.push_back({{"kind", a.kind},
                         {"image_id", a.image_id},
                         {"name", a.name},
                         {"bytes", a.bytes},
                         {"reason", a.reason},
                         {"done", a.done}});
    PrintJson({{"dry_run", args.dry_run},
               {"actions", actions},
               {"done", done},
               {"failed", failed},
               {"entries_before", report.entries_before},
               {"entries_after", report.entries_after},
               {"bytes_before", report.bytes_before},
               {"bytes_after", report.bytes_after},
               {"pinned_bytes", report.pinned_bytes},
               {"source_requests", report.source_requests},
               {"ms", Millis(wall)}});
  } else {
    if (args.dry_run) std::cout << "dry run: nothing was changed\n";
    if (report.actions.empty()) {
      std::cout << "nothing to do\n";
    } else {
      Table table({"ACTION", "IMAGE", "NAME", "SIZE", "RESULT", "REASON"},
                  {false, false, false, true, false, false});
      for (const auto& a : report.actions)
        table.Add({a.kind, a.image_id.empty() ? "-" : a.image_id, a.name, HumanBytes(a.bytes),
                   a.done                                             ? "done"
                   : a.reason.find("skipped:") != std::string::npos ? "skipped"
                   : args.dry_run                                     ? "would do"
                                                                      : "FAILED",
                   a.reason});
      std::cout << table.Render();
    }
    std::cout << "entries " << report.entries_before << " -> " << report.entries_after << ", "
              << HumanBytes(report.bytes_before) << " -> " << HumanBytes(report.bytes_after)
              << ", pinned " << HumanBytes(report.pinned_bytes) << "; " << report.actions.size()
              << " actions, " << done << " done";
    if (failed) std::cout << ", " << failed << " failed";
    std::cout << ", " << report.source_requests << " source requests, in " << HumanDuration(wall)
              << '\n';
  }
  if (failed) {
    std::cout.flush();
    for (const auto& a : report.actions)
      if (!a.done)
        std::cerr << "cachemgr evict: " << a.kind << " " << Shown(a.name)
                  << " failed: " << Shown(a.reason) << '\n';
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace

void AddEvict(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<EvictArgs>();
  auto* sub =
      app.add_subcommand("evict", "the periodic pass: limits, stale, gone, gc, purge, flatten");
  sub->footer(
      "The periodic pass (cron, systemd timer): evict least recently used entries until "
      "cache.max_size_gb and cache.max_count hold, replace stale entries, drop entries whose "
      "image is gone from the source, remove half-made leftovers whose owner is gone, purge "
      "deferred deletes whose clones are gone, and optionally flatten the clones that pin "
      "evicted entries (RBD) and old volumes. Safe "
      "while prefills and creates run; exits 5 if another pass holds the lock.");
  sub->add_flag("--dry-run,-n", args->dry_run, "print what would be done; change nothing");
  sub->add_option("--flatten-older-than", args->flatten_older_than,
                  "flatten volumes older than DURATION (30d, 12h, 1h30m, 45s) so they no "
                  "longer depend on their entry");
  sub->add_option("--flatten-pinned-max", args->flatten_pinned_max,
                  "flatten up to N of the cache's clones that keep evicted entries pinned, "
                  "so those entries are purged (overrides cache.flatten_pinned_max; 0 = none)")
      ->check(CLI::Range(0, 1000));
  sub->add_flag("--no-source-check", args->no_source_check,
                "do not ask the source whether entries are stale or gone (source down)");
  sub->callback([&ctx, args] { ctx.run = [&ctx, args] { return RunEvict(ctx, *args); }; });
}

}  // namespace cachemgr::cli
