// tests/contract/rbd/rbd_target.h: RBD backends on the "ceph" fixture for the tests.
#pragma once

#include <rbd/librbd.h>

#include <cstdint>
#include <string>
#include <unistd.h>

#include "cachemgr/options.h"
#include "storage/backend.h"

namespace cachemgr::test {

// Options for the fixture's cluster: pool "volumes" in a namespace of this process, so
// that concurrent test executables never see each other's images or trash.
RbdBackendOptions FixtureRbdOptions();

// Writes `length` bytes of `byte` at `offset` of an image through librbd, the way a VM
// writes its disk.
void RbdWriteBytes(const RbdBackendOptions& options, const storage::ImageRef& ref,
                   uint64_t offset, uint64_t length, uint8_t byte);

}  // namespace cachemgr::test
