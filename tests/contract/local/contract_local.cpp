// The Backend contract on the local directory backend, in the clone mode this executable
// was built for (CONTRACT_LOCAL_MODE: qcow2, copy or reflink).
#include <memory>
#include <optional>

#include "contract/backend_contract.h"
#include "contract/local/local_write.h"
#include "contract/local/reflink_root.h"
#include "storage/local/local_backend.h"
#include "support/test_util.h"

namespace cachemgr::contract {

namespace {
std::filesystem::path Root() {
#if CONTRACT_LOCAL_MODE_REFLINK
  static test::ReflinkRoot root;
  return root.path() / "contract";
#else
  static test::TempDir dir("contract-local");
  return dir.path() / "root";
#endif
}
}  // namespace

Target MakeTarget() {
  LocalBackendOptions options;
  options.root = Root().string();
  options.clone_mode = CONTRACT_LOCAL_MODE;
  auto backend = std::make_unique<storage::LocalBackend>(options, nullptr);
  REQUIRE(backend->clone_mode() == CONTRACT_LOCAL_MODE);
  auto* local = backend.get();
  Target t;
  t.linked_clones = local->clone_mode() == CloneMode::kQcow2;
  t.write_bytes = [local](const ImageRef& ref, uint64_t offset, uint64_t length, uint8_t byte) {
    test::WriteLocalBytes(*local, ref, offset, length, byte);
  };
  t.backend = std::move(backend);
  return t;
}

}  // namespace cachemgr::contract
