#include "support/cluster.h"

#include <doctest/doctest.h>

#include "support/test_util.h"

namespace cachemgr::test {

std::filesystem::path CephConf() {
  auto conf = RunDir() / "ceph" / "ceph.conf";
  REQUIRE_MESSAGE(std::filesystem::exists(conf),
                  "no Ceph cluster: " << conf << " is missing (run through ctest)");
  return conf;
}

std::string GlanceEndpoint() {
  auto file = RunDir() / "glance" / "endpoint";
  REQUIRE_MESSAGE(std::filesystem::exists(file),
                  "no Glance API: " << file << " is missing (run through ctest)");
  std::string url = ReadFile(file);
  while (!url.empty() && (url.back() == '\n' || url.back() == ' ')) url.pop_back();
  return url;
}

}  // namespace cachemgr::test
