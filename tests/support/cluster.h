// tests/support/cluster.h: where the fixtures' services are (tests/cluster/).
#pragma once

#include <filesystem>
#include <string>

namespace cachemgr::test {

// ${CACHEMGR_TEST_RUN_DIR}/ceph/ceph.conf; the test fails (REQUIRE) if the fixture
// did not start the cluster, so an integration test is never silently skipped.
std::filesystem::path CephConf();
// http://127.0.0.1:PORT of the fixture's Glance API.
std::string GlanceEndpoint();

}  // namespace cachemgr::test
