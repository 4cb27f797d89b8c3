// cachemgr doctor: check config, backend, source, qemu-img and permissions.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

int Print(Context& ctx, const std::vector<Check>& checks) {
  size_t failed = 0;
  for (const auto& c : checks) failed += c.ok ? 0 : 1;
  if (ctx.json) {
    nlohmann::json doc = nlohmann::json::array();
    for (const auto& c : checks)
      doc.push_back({{"name", c.name},
                     {"ok", c.ok},
                     {"warning", c.warning},
                     {"detail", c.detail},
                     {"fix", c.fix}});
    PrintJson({{"checks", doc}, {"failed", failed}});
  } else {
    for (const auto& c : checks) {
      std::cout << (!c.ok ? "FAIL " : c.warning ? "WARN " : "ok   ") << c.name;
      // Details name what was found on the backend: one line, escaped (OneLine).
      if (!c.detail.empty()) std::cout << ": " << OneLine(c.detail);
      std::cout << '\n';
      if ((!c.ok || c.warning) && !c.fix.empty())
        std::cout << "     fix: " << OneLine(c.fix) << '\n';
    }
    std::cout << checks.size() - failed << " ok, " << failed << " failed\n";
  }
  return failed ? kExitFailed : kExitOk;
}

int RunDoctor(Context& ctx) {
  // A config that does not load is the first thing doctor reports, in its own format,
  // and still a config error (exit 2) as for every other command.
  try {
    ctx.options();
  } catch (const Error& e) {
    if (e.code() != Errc::kConfig) throw;
    Print(ctx, {{"config", false, e.what(),
                 "fix the key named above in " + ctx.ConfigPath().string() +
                     " (every key is described in examples/cachemgr.yaml)"}});
    return kExitUsage;
  }
  std::vector<Check> checks;
  checks.push_back({"config file", true, ctx.ConfigPath().string() + " loads", ""});
  try {
    auto more = ctx.cache().Doctor();
    checks.insert(checks.end(), more.begin(), more.end());
  } catch (const Error& e) {
    // Open itself failed (cluster down, index unwritable): that is a finding, not a crash.
    std::string fix;
    switch (e.code()) {
      case Errc::kBusy:
        fix = "another process holds the index or the cluster lock named in the message: "
              "wait for it to finish (or find it with fuser on the index file) and run "
              "doctor again";
        break;
      case Errc::kCorrupt:
        fix = "the index is damaged: run `cachemgr rebuild-index`, which sets it aside and "
              "rebuilds it from the backend";
        break;
      default:
        fix = "see the message: check the backend section of the config, that the cluster "
              "is reachable and that the index folder is writable";
    }
    checks.push_back({"open", false, e.what(), fix});
  }
  return Print(ctx, checks);
}

}  // namespace

void AddDoctor(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("doctor", "check config, backend, source, qemu-img, permissions");
  sub->footer(
      "Check the config, the backend (cluster, pool, root folder), the source, qemu-img and "
      "permissions; print each check as ok or FAIL with what to do. Exit 1 if any failed.");
  sub->callback([&ctx] { ctx.run = [&ctx] { return RunDoctor(ctx); }; });
}

}  // namespace cachemgr::cli
