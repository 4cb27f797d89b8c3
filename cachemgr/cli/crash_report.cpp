// cachemgr/cli/crash_report.cpp: see crash_report.h.
//
// The handler calls write, sigaction and raise (async-signal-safe), sigabbrev_np (a
// table lookup) and backtrace/backtrace_symbols_fd. glibc does not promise the last two
// are safe in a handler; on Debian 12 they are once the unwinder is loaded, which the
// call of backtrace() at install time does. The report names offsets in each object
// (the library's symbols are hidden): `addr2line -e <object> <offset>` on the same build
// turns them into functions and lines.
#include "crash_report.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CACHEMGR_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CACHEMGR_SANITIZED 1
#endif

#ifndef CACHEMGR_SANITIZED  // under a sanitizer, its own report is the better one

#include <execinfo.h>
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <exception>
#include <system_error>

namespace cachemgr::cli {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

// What std::terminate was called for, told to the handler of the SIGABRT that follows on
// the same thread: only a std::system_error "Invalid argument" is the librbd 16 abort.
volatile sig_atomic_t g_terminate_on_einval = 0;
std::terminate_handler g_previous_terminate = nullptr;

[[noreturn]] void OnTerminate() {
  if (const auto current = std::current_exception()) {
    try {
      std::rethrow_exception(current);
    } catch (const std::system_error& e) {
      g_terminate_on_einval = e.code() == std::errc::invalid_argument ? 1 : 0;
    } catch (...) {  // NOLINT(bugprone-empty-catch): any other exception is not that abort
    }
  }
  // The runtime's own handler prints the exception's type and what() before aborting.
  if (g_previous_terminate != nullptr) g_previous_terminate();
  std::abort();
}

void Put(const char* s) {
  ssize_t ignored = write(STDERR_FILENO, s, std::strlen(s));
  (void)ignored;
}

// Decimal, without the formatting functions (not safe here).
void PutNumber(long v) {
  char buf[24];
  char* p = buf + sizeof buf;
  *--p = '\0';
  const bool negative = v < 0;
  unsigned long u = negative ? 0UL - static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
  do {
    *--p = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (negative) *--p = '-';
  Put(p);
}

void OnFatalSignal(int sig, siginfo_t* info, void* /*context*/) {
  // Every one of them back to the default first: a fault in here ends the process with
  // no second report.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s : kSignals) sigaction(s, &dfl, nullptr);
  // The thread's name tells a library's thread from the tool's own (for the calling
  // thread, glibc reads it with prctl: no lock, no allocation).
  char thread[16] = "?";
  (void)pthread_getname_np(pthread_self(), thread, sizeof thread);
  Put("cachemgr: fatal signal ");
  Put(sigabbrev_np(sig) != nullptr ? sigabbrev_np(sig) : "?");
  Put(" on thread \"");
  Put(thread);
  Put("\"");
  // abort() (a failed assertion) signals the process itself: that one is a bug.
  if (info != nullptr && (info->si_code == SI_USER || info->si_code == SI_TKILL) &&
      info->si_pid != getpid()) {
    // kill(1), a watchdog: not a fault of the tool. The stack is where it was.
    Put(" sent by pid ");
    PutNumber(info->si_pid);
    Put("; the stack of the thread that got it:\n");
  } else if (sig == SIGABRT && std::strcmp(thread, "io_context_pool") == 0 &&
             g_terminate_on_einval != 0) {
    // A std::system_error "Invalid argument" escaped a handler on one of librados' own
    // threads: the librbd 16 abort of docs/architecture.md ("Known limit"). Every step of
    // the tool survives a crash anywhere, so the command can simply be run again. Any
    // other abort there is reported as one to look into, below.
    Put(" (an exception escaped a librados thread, a known defect of librbd 16: nothing the"
        " cache made is lost; run the command again, and report it if it repeats)\n");
  } else {
    Put(" (a bug: please report it with this stack)\n");
  }
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  raise(sig);
}

}  // namespace

void InstallCrashReport() {
  void* warm[1];
  (void)backtrace(warm, 1);
  struct sigaction sa {};
  sa.sa_sigaction = OnFatalSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  // The terminate handler first: an exception takes the handler of its throw, and the
  // signal handler reads what this one found.
  g_previous_terminate = std::set_terminate(OnTerminate);
  for (int sig : kSignals) sigaction(sig, &sa, nullptr);
}

}  // namespace cachemgr::cli

#else

namespace cachemgr::cli {
void InstallCrashReport() {}
}  // namespace cachemgr::cli

#endif
