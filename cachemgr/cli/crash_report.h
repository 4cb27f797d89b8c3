// cachemgr/cli/crash_report.h: a fatal signal leaves a stack trace on stderr.
#pragma once

namespace cachemgr::cli {

// On SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT (a failed assertion in a library, an
// uncaught exception on a library's thread): writes the signal and the stack of the
// thread that got it to stderr, then dies of the same signal (exit status and core dump
// as without the handler). Of an abort on librados' io_context_pool thread for a
// std::system_error "Invalid argument" (a terminate handler, also installed here, looks
// at the exception), the report says it is the known librbd 16 defect and that the
// command can be run again. Installed once, first thing in main.
void InstallCrashReport();

}  // namespace cachemgr::cli
