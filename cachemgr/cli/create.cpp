// cachemgr create IMAGE_ID VOLUME [--size SIZE]: make a volume (hit, miss or direct).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "common.h"
#include "import.h"

namespace cachemgr::cli {
namespace {

struct CreateArgs {
  std::string image_id;
  std::string volume;
  std::string size;
  bool wait_import = false;
};

// --json --wait-import: the create's document is the one printed; the import's end
// shows in the exit code and on stderr.
int FinishImportQuietly(Context& ctx, const std::string& image_id) {
  const bool json = ctx.json;
  ctx.json = false;
  std::ostringstream lost;
  auto* old = std::cout.rdbuf(lost.rdbuf());
  try {
    const int rc = FinishImportNow(ctx, image_id);
    std::cout.rdbuf(old);
    ctx.json = json;
    return rc;
  } catch (const Error& e) {
    std::cout.rdbuf(old);
    ctx.json = json;
    std::cerr << "cachemgr create: " << OneLine(e.what()) << '\n';
    return ExitCodeFor(e.code());
  } catch (...) {
    std::cout.rdbuf(old);
    ctx.json = json;
    throw;
  }
}

int RunCreate(Context& ctx, const CreateArgs& args) {
  CreateVolumeRequest request;
  request.image_id = args.image_id;
  request.volume = args.volume;
  if (!args.size.empty()) request.size_bytes = ParseSize(args.size);
  // An instant miss's import goes on after the volume is made: in a process of its own,
  // so that this command returns at once, or here (--wait-import).
  request.defer_import = true;

  // A miss can take minutes: its progress on a terminal.
  CreateVolumeResult r;
  try {
    StageBar bar;
    request.progress = bar.fn();
    r = ctx.cache().CreateVolume(request);
  } catch (const Error&) {
    // A failed hit may have served the relay of an import whose runner died (others may
    // read through it already): it goes to a runner of the import, as on success.
    try {
      StartImportProcess(ctx, args.image_id, /*only_with_relay=*/true);
    } catch (const Error& e) {
      std::cerr << "cachemgr create: " << e.what() << '\n';
    }
    throw;
  }

  pid_t import_pid = 0;
  if (r.import_to_run && !args.wait_import) {
    try {
      import_pid = StartImportProcess(ctx, r.image_id);
    } catch (const Error& e) {
      // The volume is made; the import's end waits for the pass (and a Glance image's
      // volume, read through the relay this process no longer serves, opens only then).
      std::cerr << "cachemgr create: " << e.what() << '\n';
    }
  }
  const std::string import_state =
      !r.import_to_run ? "" : args.wait_import ? "running here" : "running in the background";
  if (ctx.json) {
    nlohmann::json extra = nlohmann::json::object();
    if (r.import_to_run) {
      extra["import"] = args.wait_import ? "foreground" : "background";
      if (import_pid > 0) extra["import_pid"] = import_pid;
    }
    nlohmann::json doc = {{"volume", r.volume},
               {"image_id", r.image_id},
               {"plan", std::string(PlanName(r.plan))},
               {"ms", Millis(r.elapsed)},
               {"depth", r.depth},
               {"size_bytes", r.size_bytes},
               {"bytes_downloaded", r.bytes_downloaded},
               {"fill_ms", Millis(r.fill)},
               {"wait_ms", Millis(r.wait)}};
    doc.update(extra);
    PrintJson(doc);
    std::cout.flush();
    return args.wait_import && r.import_to_run ? FinishImportQuietly(ctx, r.image_id)
                                                         : kExitOk;
  }
  std::cout << "volume " << r.volume << " from image " << r.image_id << ": " << PlanName(r.plan)
            << ", depth " << r.depth << ", " << HumanBytes(r.size_bytes) << ", "
            << HumanDuration(r.elapsed);
  if (r.bytes_downloaded) std::cout << " (downloaded " << HumanBytes(r.bytes_downloaded) << ")";
  if (r.wait.count()) std::cout << " (waited " << HumanDuration(r.wait) << " for another fill)";
  if (!import_state.empty()) {
    std::cout << " (import " << import_state;
    if (import_pid > 0) std::cout << ", pid " << import_pid;
    std::cout << ')';
  }
  std::cout << '\n';
  if (args.wait_import && r.import_to_run) {
    std::cout.flush();
    return FinishImportNow(ctx, r.image_id);
  }
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
      "used (clone|copy|flatten_clone|miss|direct|instant) and the time taken. With "
      "cache.instant_miss (RBD), a miss of a raw or plain qcow2 image of the shared image "
      "directory is `instant`: the volume is made at once and reads through the image's file "
      "while a background process (cachemgr finish-import) copies and checks it.");
  sub->add_option("IMAGE_ID", args->image_id, "image id in the source")->required();
  sub->add_option("VOLUME", args->volume, "name of the new volume")->required();
  sub->add_option("--size,-s", args->size,
                  "volume size: bytes or K/M/G/T (default: the image's virtual size)");
  sub->add_flag("--wait-import", args->wait_import,
                "after an instant miss (or a hit that served the relay of an import whose "
                "runner died), run its import here to its end (progress on a terminal) "
                "instead of in a background process; exit 4 if its bytes are bad");
  sub->callback([&ctx, args] { ctx.run = [&ctx, args] { return RunCreate(ctx, *args); }; });
}

}  // namespace cachemgr::cli
