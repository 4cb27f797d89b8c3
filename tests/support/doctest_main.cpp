// doctest's main for every test executable, with one addition: a std::terminate names the
// thread it happened on before the usual message, so a crash report (and
// librbd-abort-rerun.sh) can tell an abort on a librados thread from one in this
// project's own threads.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <exception>  // also __gnu_cxx::__verbose_terminate_handler

namespace {

[[noreturn]] void NameThreadThenTerminate() {
  char name[32] = "?";
  (void)pthread_getname_np(pthread_self(), name, sizeof name);
  std::fprintf(stderr, "terminate on thread \"%s\"\n", name);
  __gnu_cxx::__verbose_terminate_handler();
  std::abort();
}

}  // namespace

int main(int argc, char** argv) {
  std::set_terminate(NameThreadThenTerminate);
  return doctest::Context(argc, argv).run();
}
