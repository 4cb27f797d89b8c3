// The Backend contract suite on RBD against the "ceph" fixture's real cluster.
#include "contract/backend_contract.h"

#include "rbd_target.h"
#include "storage/factory.h"

namespace cachemgr::contract {

Target MakeTarget() {
  auto options = test::FixtureRbdOptions();
  Target t;
  t.backend = storage::MakeRbdBackend(options, nullptr);
  t.linked_clones = true;
  t.forkable = false;
  t.write_bytes = [options](const ImageRef& ref, uint64_t offset, uint64_t length,
                            uint8_t byte) { test::RbdWriteBytes(options, ref, offset, length, byte); };
  return t;
}

}  // namespace cachemgr::contract
