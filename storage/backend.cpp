// storage/backend.cpp: the default parts of the Backend interfaces.
#include "storage/backend.h"

#include <algorithm>

#include "cachemgr/error.h"
#include <vector>

namespace cachemgr::storage {

void ImageWriter::AppendZeros(uint64_t n) {
  static const std::vector<std::byte> kZeros(1 << 20);
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(kZeros.size(), n));
    Append(std::span<const std::byte>(kZeros.data(), k));
    n -= k;
  }
}

std::map<std::string, std::string> Backend::ListIdentities(const std::string& pool) {
  std::map<std::string, std::string> out;
  for (const auto& name : List(pool)) {
    try {
      out[name] = Identity({pool, name});
    } catch (const Error& e) {
      if (e.code() != Errc::kNotFound) throw;  // removed meanwhile
    }
  }
  return out;
}

std::vector<Leftover> Backend::SweepTemporaries(bool /*dry_run*/) { return {}; }

}  // namespace cachemgr::storage
