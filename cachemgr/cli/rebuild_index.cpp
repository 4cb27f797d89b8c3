// cachemgr rebuild-index: rebuild the SQLite index from the backend's entry metadata.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

int RunRebuildIndex(Context& ctx) {
  const auto aside = SetAsideDamagedIndex(ctx.options());
  RebuildReport r = ctx.cache().RebuildIndex();
  if (aside) {
    r.messages.insert(r.messages.begin(),
                      "the damaged index was moved to " + *aside + "; a new one was built");
  }
  if (ctx.json) {
    PrintJson({{"entries_found", r.entries_found},
               {"entries_restored", r.entries_restored},
               {"skipped", r.skipped},
               {"messages", r.messages}});
    return kExitOk;
  }
  for (const auto& m : r.messages) std::cout << "  " << m << '\n';
  std::cout << "found " << r.entries_found << " entries on the backend, restored "
            << r.entries_restored << " into the index, skipped " << r.skipped
            << " objects without complete metadata\n";
  return kExitOk;
}

}  // namespace

void AddRebuildIndex(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("rebuild-index", "rebuild the SQLite index from backend metadata");
  sub->footer(
      "Rebuild the SQLite index from the metadata each ready entry carries on the backend "
      "(after the index file was lost or damaged: a damaged file is first moved aside to "
      "<index>.damaged-<UTC time>). Hit counts and volume records are not "
      "on the backend and start again from zero.");
  sub->callback([&ctx] { ctx.run = [&ctx] { return RunRebuildIndex(ctx); }; });
}

}  // namespace cachemgr::cli
