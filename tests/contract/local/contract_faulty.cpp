// The Backend contract through the fault-injecting wrapper (faults off) around the local
// backend in qcow2 mode: the wrapper itself must be a faithful Backend before engine
// tests rely on it.
#include <memory>

#include "contract/backend_contract.h"
#include "contract/local/local_write.h"
#include "storage/local/local_backend.h"
#include "support/faulty_backend.h"
#include "support/test_util.h"

namespace cachemgr::contract {

Target MakeTarget() {
  static test::TempDir dir("contract-faulty");
  LocalBackendOptions options;
  options.root = (dir.path() / "root").string();
  options.clone_mode = CloneMode::kQcow2;
  auto local = std::make_unique<storage::LocalBackend>(options, nullptr);
  auto* raw = local.get();
  Target t;
  t.linked_clones = true;
  t.write_bytes = [raw](const ImageRef& ref, uint64_t offset, uint64_t length, uint8_t byte) {
    test::WriteLocalBytes(*raw, ref, offset, length, byte);
  };
  t.backend = std::make_unique<test::FaultyBackend>(std::move(local));
  return t;
}

}  // namespace cachemgr::contract
