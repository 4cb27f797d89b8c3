// util/byte_order.h: reading fixed-width integers out of on-disk headers (qcow2, vmdk).
#pragma once

#include <cstdint>

namespace cachemgr::util {

// The big-endian unsigned integer at `p` (4 or 8 bytes).
inline uint32_t LoadBe32(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}
inline uint64_t LoadBe64(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  return (uint64_t{LoadBe32(b)} << 32) | LoadBe32(b + 4);
}
// The little-endian unsigned 64-bit integer at `p`.
inline uint64_t LoadLe64(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

}  // namespace cachemgr::util
