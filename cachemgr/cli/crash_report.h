// cachemgr/cli/crash_report.h: a fatal signal leaves a stack trace on stderr.
#pragma once

namespace cachemgr::cli {

// On SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT (a failed assertion in a library, an
// uncaught exception on a library's thread): writes the signal and the stack of the
// thread that got it to stderr, then dies of the same signal (exit status and core dump
// as without the handler). Installed once, first thing in main.
void InstallCrashReport();

}  // namespace cachemgr::cli
