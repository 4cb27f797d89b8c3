// A library preloaded (LD_PRELOAD) into the `cachemgr` tool by the CLI tests to end it the
// way the librbd 16 abort does (docs/architecture.md, "Known limit"): a thread of a given
// name throws an exception nobody catches. It lets the tests check, without waiting for
// librbd to do it, what the tool prints then and which aborts the test helpers rerun.
//
// THROW_ON_THREAD_NAME   the thread's name (as librados names its own: io_context_pool)
// THROW_ON_THREAD_WHAT   "system_error" (std::system_error, Invalid argument; the default)
//                        or "runtime_error"
// THROW_ON_THREAD_ONCE   a path: throws only if it does not exist, and makes it first
// THROW_ON_THREAD_HOLD   set as CACHEMGR_FAILPOINT when (and only when) it throws, e.g.
//                        "pass_locked:sleep", so the tool is still running when it does
//
// Only the tool itself (program name "cachemgr") is touched, so a script can preload it
// into everything it runs. The thread throws once the tool's crash report is installed (SIGABRT has a handler),
// so the report is the tool's, as it would be for a library's thread.
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

namespace {

bool CrashReportInstalled() {
  struct sigaction now {};
  if (sigaction(SIGABRT, nullptr, &now) != 0) return false;
  return (now.sa_flags & SA_SIGINFO) != 0 || now.sa_handler != SIG_DFL;
}

void ThrowWhenReady(const std::string& what) {
  while (!CrashReportInstalled()) usleep(1000);
  if (what == "runtime_error") throw std::runtime_error("not the librbd abort");
  throw std::system_error(std::make_error_code(std::errc::invalid_argument));
}

__attribute__((constructor)) void Start() {
  const char* name = std::getenv("THROW_ON_THREAD_NAME");
  if (name == nullptr || *name == '\0') return;
  if (std::strcmp(program_invocation_short_name, "cachemgr") != 0) return;
  if (const char* once = std::getenv("THROW_ON_THREAD_ONCE"); once != nullptr && *once) {
    const int fd = open(once, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return;  // thrown once already
    close(fd);
  }
  if (const char* hold = std::getenv("THROW_ON_THREAD_HOLD"); hold != nullptr && *hold) {
    (void)setenv("CACHEMGR_FAILPOINT", hold, 1);  // before main: no other thread reads it
  }
  const char* what = std::getenv("THROW_ON_THREAD_WHAT");
  std::thread t(ThrowWhenReady, std::string(what != nullptr ? what : "system_error"));
  (void)pthread_setname_np(t.native_handle(), std::string(name).substr(0, 15).c_str());
  t.detach();
}

}  // namespace
