// cachemgr finish-import IMAGE_ID: runs (or resumes) the import an instant miss began,
// to its end: copy, check against the image's digests, commit. `create` starts one of
// these in the background after an instant miss (import.h).
#include "import.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "common.h"

extern char** environ;

namespace cachemgr::cli {
namespace {

// The descriptor the relay's socket has in the process that finishes the import.
constexpr int kRelayFd = 3;

// A line for people, and the exit code, of one import's end.
int Report(Context& ctx, const ImportResult& r) {
  if (ctx.json) {
    PrintJson({{"image_id", r.image_id},
               {"import", std::string(ImportOutcomeName(r.outcome))},
               {"bytes", r.bytes},
               {"ms", Millis(r.elapsed)},
               {"detail", r.detail},
               {"volumes", r.volumes}});
  }
  switch (r.outcome) {
    case ImportOutcome::kNone:
      if (!ctx.json) std::cout << "image " << r.image_id << ": no import pending\n";
      return kExitOk;
    case ImportOutcome::kCommitted:
      if (!ctx.json) {
        std::cout << "image " << r.image_id << ": import committed, " << HumanBytes(r.bytes)
                  << " in " << HumanDuration(r.elapsed) << '\n';
      }
      return kExitOk;
    case ImportOutcome::kBusy:
      throw Error(Errc::kBusy, "image " + r.image_id + ": its import is being run elsewhere (" +
                                   r.detail + ")");
    case ImportOutcome::kBad: {
      std::string volumes;
      for (const auto& v : r.volumes) volumes += (volumes.empty() ? "" : ", ") + v;
      throw Error(Errc::kCorrupt,
                  "image " + r.image_id + ": the imported bytes are not the image's (" + r.detail +
                      "); the entry is marked bad and evicted, the next create fetches it again; "
                      "volumes made from it: " +
                      (volumes.empty() ? std::string("none") : volumes) +
                      " (rebuild them: `cachemgr doctor` lists them until they are gone)");
    }
  }
  return kExitFailed;
}

}  // namespace

int FinishImportNow(Context& ctx, const std::string& image_id) {
  ImportResult r;
  {
    StageBar bar;
    r = ctx.cache().FinishImport(image_id, bar.fn());
  }
  return Report(ctx, r);
}

pid_t StartImportProcess(Context& ctx, const std::string& image_id, bool only_with_relay) {
  // The same program, by its own file: not a `cachemgr` found on PATH.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::string> args = {self, "--config",
                                   std::filesystem::absolute(ctx.ConfigPath()).string()};
  if (!ctx.log_level.empty()) args.insert(args.end(), {"--log-level", ctx.log_level});
  args.insert(args.end(), {"finish-import", image_id});
  // A Glance image's relay: its listening socket goes on in the child as descriptor 3
  // (connections made meanwhile wait in its backlog); this process accepts no more.
  const int relay_fd = ctx.cache().HandOverRelay(image_id);
  if (relay_fd < 0 && only_with_relay) return 0;
  if (relay_fd >= 0) args.insert(args.end(), {"--relay-fd", std::to_string(kRelayFd)});
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // Its own session, so that the caller's terminal or process group ending does not end
  // it; nothing of the caller's stdout or stderr (a pipe its reader waits on to close).
  // What it logs goes to log.file when one is configured.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  if (relay_fd >= 0) posix_spawn_file_actions_adddup2(&actions, relay_fd, kRelayFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  pid_t pid = 0;
  const int r = posix_spawn(&pid, self.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (relay_fd >= 0) ::close(relay_fd);
  if (r != 0) {
    throw Error(Errc::kInternal, "image " + image_id +
                                     ": cannot start the process that finishes its import (" +
                                     std::strerror(r) +
                                     "); the next `cachemgr evict` finishes it, or run "
                                     "`cachemgr finish-import " + image_id + "`");
  }
  return pid;
}

void AddFinishImport(CLI::App& app, Context& ctx) {
  auto image_id = std::make_shared<std::string>();
  auto* sub = app.add_subcommand(
      "finish-import", "run an instant miss's import of IMAGE_ID to its end (copy, check, commit)");
  sub->footer(
      "With cache.instant_miss (RBD), a miss makes the entry at once as an import of the "
      "image's file and clones the volume from it; `create` then starts this in the "
      "background to copy the rest, check it against the image's digests and commit it "
      "(`create --wait-import` runs it in the foreground instead). Run it by hand to finish "
      "one now; the eviction pass finishes any import nobody runs. Exit 0 when committed or "
      "none is pending; 5 when another process or host runs it; 4 when the bytes were not "
      "the image's (the entry is marked bad and the volumes made from it are named).");
  sub->add_option("IMAGE_ID", *image_id, "image id in the source")->required();
  // Set by `create` only: the relay's listening socket it hands over (a Glance image).
  auto relay_fd = std::make_shared<int>(-1);
  sub->add_option("--relay-fd", *relay_fd)->group("");
  sub->callback([&ctx, image_id, relay_fd] {
    ctx.run = [&ctx, image_id, relay_fd] {
      if (*relay_fd >= 0) {
        const int fd = ::fcntl(*relay_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
          throw Error(Errc::kInvalidArgument, "--relay-fd " + std::to_string(*relay_fd) +
                                                  ": not an open descriptor");
        }
        ::close(*relay_fd);
        ctx.cache().AdoptRelay(fd);
      }
      return FinishImportNow(ctx, *image_id);
    };
  });
}

}  // namespace cachemgr::cli
