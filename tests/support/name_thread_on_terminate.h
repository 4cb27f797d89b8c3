// A std::terminate handler for test processes (doctest's main and engine_child): it names
// the thread the terminate happened on before the usual message, so a crash report (and
// librbd-abort-rerun.sh) can tell an abort on a librados thread from one in this project's
// own threads, and it puts SIGABRT back to its default first, so no handler another
// library installed can keep the process from ending.
#pragma once

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>  // also __gnu_cxx::__verbose_terminate_handler

namespace cachemgr::test {

[[noreturn]] inline void NameThreadThenTerminate() {
  char name[32] = "?";
  (void)pthread_getname_np(pthread_self(), name, sizeof name);
  std::fprintf(stderr, "terminate on thread \"%s\"\n", name);
  std::signal(SIGABRT, SIG_DFL);
  __gnu_cxx::__verbose_terminate_handler();
  std::abort();
}

inline void NameThreadOnTerminate() { std::set_terminate(NameThreadThenTerminate); }

}  // namespace cachemgr::test
