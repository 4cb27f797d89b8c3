// cachemgr show IMAGE_ID: one entry with its volumes.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

int RunShow(Context& ctx, const std::string& image_id) {
  Cache& cache = ctx.cache();
  const auto entry = cache.Lookup(image_id);
  if (!entry) throw Error{Errc::kNotFound, "image " + image_id + ": not cached"};
  const auto volumes = cache.Volumes(image_id);
  if (ctx.json) {
    nlohmann::json doc = ToJson(*entry);
    doc["volume_list"] = nlohmann::json::array();
    for (const auto& v : volumes) doc["volume_list"].push_back(ToJson(v));
    PrintJson(doc);
    return kExitOk;
  }
  const auto& e = *entry;
  Table kv({"FIELD", "VALUE"});
  kv.Add({"image", e.image_id});
  kv.Add({"state", std::string(EntryStateName(e.state))});
  kv.Add({"backend", e.backend});
  kv.Add({"pool", e.pool});
  kv.Add({"cache name", e.cache_name});
  kv.Add(
      {"virtual size", HumanBytes(e.virtual_size) + " (" + std::to_string(e.virtual_size) + ")"});
  kv.Add({"allocated", HumanBytes(e.allocated_bytes)});
  kv.Add({"source format", e.disk_format});
  kv.Add({"checksum", e.checksum.empty() ? "-" : "md5 " + e.checksum});
  if (!e.os_hash_algo.empty()) kv.Add({"os hash", e.os_hash_algo + " " + e.os_hash_value});
  kv.Add({"image updated", e.image_updated_at.empty() ? "-" : e.image_updated_at});
  kv.Add({"depth", std::to_string(e.depth)});
  kv.Add({"created", HumanTime(e.created_at)});
  kv.Add({"last used", HumanTime(e.last_used)});
  kv.Add({"hits", std::to_string(e.hits)});
  kv.Add({"pinned", e.pinned ? "yes (evicted, kept for its clones)" : "no"});
  // Skip the header row of the key/value table: it is a record, not a list.
  const std::string rendered = kv.Render();
  std::cout << rendered.substr(rendered.find('\n') + 1);
  std::cout << "\nvolumes: " << volumes.size() << '\n';
  if (!volumes.empty()) {
    Table table({"VOLUME", "PLAN", "DEPTH", "SIZE", "CREATED"}, {false, false, true, true, false});
    for (const auto& v : volumes)
      table.Add({v.name, std::string(PlanName(v.plan)), std::to_string(v.depth),
                 HumanBytes(v.size_bytes), HumanTime(v.created_at)});
    std::cout << table.Render();
  }
  return kExitOk;
}

}  // namespace

void AddShow(CLI::App& app, Context& ctx) {
  auto image_id = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("show", "one entry, with its volumes");
  sub->footer("Show one cache entry and the volumes made from it (exit 3 if not cached).");
  sub->add_option("IMAGE_ID", *image_id, "image id")->required();
  sub->callback(
      [&ctx, image_id] { ctx.run = [&ctx, image_id] { return RunShow(ctx, *image_id); }; });
}

}  // namespace cachemgr::cli
