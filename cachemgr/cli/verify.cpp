// cachemgr verify [IMAGE_ID...]: re-hash entries against the source's checksum.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

int RunVerify(Context& ctx, const std::vector<std::string>& requested) {
  Cache& cache = ctx.cache();
  std::vector<std::string> ids = requested;
  if (ids.empty()) {
    for (const auto& e : cache.List())
      if (e.state == EntryState::kReady && !e.pinned) ids.push_back(e.image_id);
    // Entries an instant miss's import found bad (on any host) still have volumes.
    for (const auto& b : cache.BadEntries())
      if (std::find(ids.begin(), ids.end(), b.image_id) == ids.end()) ids.push_back(b.image_id);
  }

  std::vector<VerifyResult> results;
  for (const auto& id : ids) {
    try {
      results.push_back(cache.Verify(id));
    } catch (const Error& e) {
      // One unreadable entry must not hide the verdict on the others; integrity errors
      // count as mismatches, other errors fail the run after the rest are checked.
      if (e.code() == Errc::kCorrupt)
        results.push_back({id, false, e.what()});
      else if (requested.size() == 1)
        throw;
      else
        results.push_back({id, false, std::string("error: ") + e.what()});
    }
  }
  size_t bad = 0;
  for (const auto& r : results) bad += r.ok ? 0 : 1;
  if (ctx.json) {
    nlohmann::json doc = nlohmann::json::array();
    for (const auto& r : results)
      doc.push_back({{"image_id", r.image_id}, {"ok", r.ok}, {"detail", r.detail}});
    PrintJson({{"results", doc}, {"checked", results.size()}, {"mismatched", bad}});
  } else {
    for (const auto& r : results)
      std::cout << (r.ok ? "ok       " : "MISMATCH ") << r.image_id << "  " << r.detail << '\n';
    std::cout << results.size() << " checked, " << bad << " mismatched\n";
  }
  if (!bad) return kExitOk;
  std::cout.flush();
  for (const auto& r : results) {
    if (r.ok) continue;
    const std::string line = "cachemgr verify: image " + r.image_id + ": " + r.detail;
    std::cerr << OneLine(line) << '\n';
    ctx.LogToFile(line);
  }
  return kExitRefused;
}

}  // namespace

void AddVerify(CLI::App& app, Context& ctx) {
  auto ids = std::make_shared<std::vector<std::string>>();
  auto* sub =
      app.add_subcommand("verify", "re-hash entries against the source (exit 4 on a mismatch)");
  sub->footer(
      "Re-read cached entries (all ready ones, or the ids given) and compare them with the "
      "source's checksum. Exit 4 when any entry does not match.");
  sub->add_option("IMAGE_ID", *ids, "image ids to check (default: every ready entry)");
  sub->callback([&ctx, ids] { ctx.run = [&ctx, ids] { return RunVerify(ctx, *ids); }; });
}

}  // namespace cachemgr::cli
