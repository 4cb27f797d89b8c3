// cachemgr list: the cache entries, one a row.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

int RunList(Context& ctx) {
  const auto entries = ctx.cache().List();
  if (ctx.json) {
    nlohmann::json doc = nlohmann::json::array();
    for (const auto& e : entries) doc.push_back(ToJson(e));
    PrintJson(doc);
    return kExitOk;
  }
  Table table(
      {"IMAGE", "STATE", "SIZE", "ALLOCATED", "DEPTH", "HITS", "LAST USED", "VOLUMES", "PINNED"},
      {false, false, true, true, true, true, false, true, false});
  uint64_t size = 0, allocated = 0;
  for (const auto& e : entries) {
    table.Add({e.image_id, std::string(EntryStateName(e.state)), HumanBytes(e.virtual_size),
               HumanBytes(e.allocated_bytes), std::to_string(e.depth), std::to_string(e.hits),
               HumanTime(e.last_used), std::to_string(e.volumes), e.pinned ? "yes" : "no"});
    size += e.virtual_size;
    allocated += e.allocated_bytes;
  }
  std::cout << table.Render() << entries.size() << " entries, " << HumanBytes(size) << " ("
            << HumanBytes(allocated) << " allocated)\n";
  return kExitOk;
}

}  // namespace

void AddList(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("list", "cache entries");
  sub->footer(
      "List cache entries: image, state, size, allocated, depth, hits, last used, "
      "volumes, pinned (evicted but kept for its clones).");
  sub->callback([&ctx] { ctx.run = [&ctx] { return RunList(ctx); }; });
}

}  // namespace cachemgr::cli
