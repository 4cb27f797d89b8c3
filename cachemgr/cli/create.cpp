// cachemgr create IMAGE_ID VOLUME [--size SIZE]: make a volume (hit, miss or direct).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "common.h"

namespace cachemgr::cli {
namespace {

struct CreateArgs {
  std::string image_id;
  std::string volume;
  std::string size;
};

int RunCreate(Context& ctx, const CreateArgs& args) {
  CreateVolumeRequest request;
  request.image_id = args.image_id;
  request.volume = args.volume;
  if (!args.size.empty()) request.size_bytes = ParseSize(args.size);

  // A miss can take minutes: show the fill's progress on a terminal, at most 10 redraws/s.
  const bool bar = ProgressOnTerminal();
  auto last = std::chrono::steady_clock::time_point{};
  bool drawn = false;
  if (bar) {
    request.progress = [&](const Progress& p) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last < std::chrono::milliseconds(100) && p.done_bytes != p.total_bytes) return;
      last = now;
      drawn = true;
      std::fprintf(stderr, "\r\033[K%-8s %s %s", p.stage.c_str(),
                   Bar(p.done_bytes, p.total_bytes, 30).c_str(), HumanBytes(p.done_bytes).c_str());
      std::fflush(stderr);
    };
  }
  CreateVolumeResult r;
  try {
    r = ctx.cache().CreateVolume(request);
  } catch (...) {
    if (drawn) std::fprintf(stderr, "\r\033[K");
    throw;
  }
  if (drawn) std::fprintf(stderr, "\r\033[K");

  if (ctx.json) {
    PrintJson({{"volume", r.volume},
               {"image_id", r.image_id},
               {"plan", std::string(PlanName(r.plan))},
               {"ms", Millis(r.elapsed)},
               {"depth", r.depth},
               {"size_bytes", r.size_bytes},
               {"bytes_downloaded", r.bytes_downloaded},
               {"fill_ms", Millis(r.fill)},
               {"wait_ms", Millis(r.wait)}});
    return kExitOk;
  }
  std::cout << "volume " << r.volume << " from image " << r.image_id << ": " << PlanName(r.plan)
            << ", depth " << r.depth << ", " << HumanBytes(r.size_bytes) << ", "
            << HumanDuration(r.elapsed);
  if (r.bytes_downloaded) std::cout << " (downloaded " << HumanBytes(r.bytes_downloaded) << ")";
  if (r.wait.count()) std::cout << " (waited " << HumanDuration(r.wait) << " for another fill)";
  std::cout << '\n';
  return kExitOk;
}

}  // namespace

void AddCreate(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<CreateArgs>();
  auto* sub =
      app.add_subcommand("create", "make VOLUME from IMAGE_ID (hit, miss or direct); --size SIZE");
  sub->footer(
      "Make VOLUME from IMAGE_ID: a clone of the cached entry (hit), or fetch and cache the "
      "image first (miss), or clone the source's own RBD image (direct). Prints the plan "
      "used (clone|copy|flatten_clone|miss|direct) and the time taken.");
  sub->add_option("IMAGE_ID", args->image_id, "image id in the source")->required();
  sub->add_option("VOLUME", args->volume, "name of the new volume")->required();
  sub->add_option("--size,-s", args->size,
                  "volume size: bytes or K/M/G/T (default: the image's virtual size)");
  sub->callback([&ctx, args] { ctx.run = [&ctx, args] { return RunCreate(ctx, *args); }; });
}

}  // namespace cachemgr::cli
