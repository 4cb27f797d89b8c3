// libFuzzer target: see fuzz_entry.h.
#include <cstddef>
#include <cstdint>

#include "fuzz_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cachemgr::fuzz::Qcow2One(data, size);
  return 0;
}
