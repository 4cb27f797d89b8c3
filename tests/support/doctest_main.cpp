// doctest's main for every test executable, with one addition: a std::terminate names the
// thread it happened on (name_thread_on_terminate.h).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "name_thread_on_terminate.h"

int main(int argc, char** argv) {
  cachemgr::test::NameThreadOnTerminate();
  return doctest::Context(argc, argv).run();
}
