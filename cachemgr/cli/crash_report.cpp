// cachemgr/cli/crash_report.cpp: see crash_report.h.
//
// The handler uses only what is safe in a signal handler (write, backtrace_symbols_fd,
// sigaction, raise); backtrace() is called once at install time so that its library is
// loaded then, not from the handler.
#include "crash_report.h"

#include <execinfo.h>
#include <unistd.h>

#include <csignal>
#include <cstring>

namespace cachemgr::cli {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

void Put(const char* s) {
  ssize_t ignored = write(STDERR_FILENO, s, std::strlen(s));
  (void)ignored;
}

void OnFatalSignal(int sig) {
  // The default action comes back first: a second fault in here ends the process.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  Put("cachemgr: fatal signal ");
  Put(sigabbrev_np(sig) != nullptr ? sigabbrev_np(sig) : "?");
  Put(" (a bug: please report it with this stack)\n");
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  raise(sig);
}

}  // namespace

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CACHEMGR_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CACHEMGR_SANITIZED 1
#endif

void InstallCrashReport() {
#ifndef CACHEMGR_SANITIZED  // under a sanitizer, its own report is the better one
  void* warm[1];
  (void)backtrace(warm, 1);
  struct sigaction sa {};
  sa.sa_handler = OnFatalSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND | SA_NODEFER;
  for (int sig : kSignals) sigaction(sig, &sa, nullptr);
#endif
}

}  // namespace cachemgr::cli
