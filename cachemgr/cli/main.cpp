// The `cachemgr` tool: git-style subcommands over the embedded API (cachemgr/cache.h).
//
// Each subcommand lives in its own file and follows one shape: parse -> build options
// -> call the library -> print. This file holds the table of subcommands, the global
// options and the one place where library error codes become exit codes.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <iostream>

#include "cachemgr/config.h"
#include "common.h"
#include "crash_report.h"

namespace cachemgr::cli {

int ExitCodeFor(Errc code) noexcept {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kConfig:
      return kExitUsage;
    case Errc::kNotFound:
      return kExitNotFound;
    case Errc::kCorrupt:
    case Errc::kRefused:
      return kExitRefused;
    case Errc::kBusy:
      return kExitBusy;
    default:
      return kExitFailed;
  }
}

namespace {

constexpr const char* kFooter = R"(Config:
  --config FILE, else $CACHEMGR_CONFIG, else /etc/cachemgr/cachemgr.yaml
  (every key is described in examples/cachemgr.yaml).

Sizes: bytes, or a number with K, M, G or T (powers of 1024): 512M, 10G, 1.5T.

Exit codes:
  0  success
  1  the operation failed (backend, source, I/O; prefill: some image failed)
  2  usage or config error (the message names the option or the config key)
  3  image not found in the source (or not cached, for show)
  4  image refused: integrity (checksum mismatch, verify found a mismatch) or
     format safety (backing file, wrong format, too large)
  5  busy: another eviction pass holds the lock; try again later

Errors go to stderr as one line naming the thing and the cause. With --json, the
result (or {"error": {...}}) is one JSON document on stdout.)";

// The tool's body: parses, runs the subcommand, maps failures to exit codes.
int RunMain(int argc, char** argv) {
  Context ctx;
  CLI::App app{
      "cachemgr: a cache of image volumes (Ceph RBD or a local directory), keyed by image "
      "id, so that new volumes are clones made in milliseconds.",
      "cachemgr"};
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("cachemgr ") + CACHEMGR_VERSION,
                       "print the version and exit");
  app.require_subcommand(1, 1);
  app.fallthrough();  // global options are accepted after the subcommand too
  app.add_option("--config,-c", ctx.config_path,
                 "config file (default: $CACHEMGR_CONFIG, else /etc/cachemgr/cachemgr.yaml)");
  app.add_flag("--json", ctx.json, "print one JSON document on stdout");
  app.add_flag("-v,--verbose", ctx.verbose,
               "more on stderr: -v info lines, -vv debug (default: warnings and errors only; "
               "a terminal also shows progress bars)");
  app.add_option("--log-level", ctx.log_level,
                 "trace|debug|info|warn|error|critical|off for stderr and log.file alike "
                 "(default: stderr warn, log.file the config's log.level)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));

  // The table of subcommands (CLI.md is the contract for their names).
  AddCreate(app, ctx);
  AddDelete(app, ctx);
  AddPrefill(app, ctx);
  AddEvict(app, ctx);
  AddList(app, ctx);
  AddShow(app, ctx);
  AddStats(app, ctx);
  AddVerify(app, ctx);
  AddRebuildIndex(app, ctx);
  AddDoctor(app, ctx);
  AddFinishImport(app, ctx);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "cachemgr: " << e.what() << " (run 'cachemgr --help' for usage)\n";
    return kExitUsage;
  }

  const std::string command = app.get_subcommands().empty()
                                  ? std::string("cachemgr")
                                  : "cachemgr " + app.get_subcommands().front()->get_name();
  auto fail = [&](int exit_code, std::string_view code, const std::string& message) {
    std::cout.flush();
    std::cerr << command << ": " << OneLine(message) << '\n';
    ctx.LogToFile(command + " failed (exit " + std::to_string(exit_code) + "): " + message);
    if (ctx.json) {
      PrintJson(
          {{"error", {{"code", code}, {"message", OneLine(message)}, {"exit_code", exit_code}}}});
    }
    return exit_code;
  };
  try {
    if (!ctx.run) return kExitUsage;
    return ctx.run();
  } catch (const Error& e) {
    return fail(ExitCodeFor(e.code()), ErrcName(e.code()), e.what());
  } catch (const std::exception& e) {
    return fail(kExitFailed, "internal", e.what());
  }
}

}  // namespace

int Main(int argc, char** argv) {
  // A write to a peer that went away fails with EPIPE instead of ending the tool: stdout
  // may be a pipe whose reader is gone, and librados' messengers write to sockets whose
  // peer may have closed (the library's clients open no admin socket, rbd_connection.h).
  std::signal(SIGPIPE, SIG_IGN);
  InstallCrashReport();
  const int rc = RunMain(argc, argv);
  // Output that did not reach its reader is a failure, never a quiet success (the result
  // of a create, say, piped into a reader that died).
  errno = 0;
  std::cout.flush();
  if (std::cout.fail()) {
    const int e = errno;
    std::cerr << "cachemgr: cannot write the output to stdout: "
              << (e != 0 ? std::strerror(e) : "write failed")
              << " (its reader went away, or the file system is full)\n";
    return rc == 0 ? kExitFailed : rc;
  }
  return rc;
}

}  // namespace cachemgr::cli

int main(int argc, char** argv) { return cachemgr::cli::Main(argc, argv); }
