// cachemgr delete VOLUME: delete a volume this cache made.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

int RunDelete(Context& ctx, const std::string& volume) {
  ctx.cache().DeleteVolume(volume);
  if (ctx.json)
    PrintJson({{"volume", volume}, {"deleted", true}});
  else
    std::cout << "volume " << volume << ": deleted\n";
  return kExitOk;
}

}  // namespace

void AddDelete(CLI::App& app, Context& ctx) {
  auto volume = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("delete", "delete a volume this cache made");
  sub->footer(
      "Delete VOLUME (one this cache made) and its record. An entry kept only for its "
      "clones is purged by the next evict pass once the last one is gone.");
  sub->add_option("VOLUME", *volume, "volume name")->required();
  sub->callback([&ctx, volume] { ctx.run = [&ctx, volume] { return RunDelete(ctx, *volume); }; });
}

}  // namespace cachemgr::cli
