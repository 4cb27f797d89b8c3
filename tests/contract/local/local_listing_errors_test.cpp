// A pool listing that readdir cuts short with an error is an error, never a shorter pool:
// the pass would take the rest for gone (record that pool and index are in step, leave
// other hosts' entries unadopted). readdir is interposed here, in this test executable
// only, to fail in one chosen folder after a few names.
#include <dirent.h>
#include <dlfcn.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "cachemgr/error.h"
#include "contract/local/local_test_util.h"
#include "storage/local/local_backend.h"

namespace {

std::string g_fail_in;          // the folder whose listing fails ("" : none)
std::atomic<int> g_names_left;  // names given there before the error

bool FailsHere(DIR* d) {
  if (g_fail_in.empty()) return false;
  char link[64];
  char path[PATH_MAX];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", ::dirfd(d));
  const ssize_t n = ::readlink(link, path, sizeof path - 1);
  if (n <= 0) return false;
  path[n] = '\0';
  return g_fail_in == path;
}

}  // namespace

extern "C" struct dirent* readdir(DIR* d) {
  using Real = struct dirent* (*)(DIR*);
  static const Real real = reinterpret_cast<Real>(::dlsym(RTLD_NEXT, "readdir"));
  if (FailsHere(d) && g_names_left.fetch_sub(1) <= 0) {
    errno = EIO;
    return nullptr;
  }
  return real(d);
}

namespace cachemgr::test {
namespace {

TEST_CASE("a pool listing cut short by a read error fails, naming the folder") {
  TempDir dir("local-listing-error");
  auto b = MakeLocal(dir.path() / "root");
  const std::string pool = b->entry_pool();
  const fs::path pool_dir = dir.path() / "root" / pool;
  fs::create_directories(pool_dir);
  for (int i = 0; i < 20; ++i) WriteFile(pool_dir / ("img-" + std::to_string(i)), "x");
  REQUIRE(b->List(pool).size() == 20);
  REQUIRE(b->ListIdentities(pool).size() == 20);

  g_fail_in = fs::canonical(pool_dir).string();
  for (const int after : {0, 5}) {
    CAPTURE(after);
    g_names_left = after;
    try {
      b->List(pool);
      FAIL("List returned a listing cut short");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find(pool_dir.string()) != std::string::npos);
    }
    g_names_left = after;
    try {
      b->ListIdentities(pool);
      FAIL("ListIdentities returned a listing cut short");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find(pool_dir.string()) != std::string::npos);
    }
  }
  g_fail_in.clear();
  CHECK(b->List(pool).size() == 20);
}

}  // namespace
}  // namespace cachemgr::test
