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

bool Backend::HasIdentity(const ImageRef& ref, const std::string& identity) {
  try {
    return Identity(ref) == identity;
  } catch (const Error& e) {
    if (e.code() != Errc::kNotFound) throw;
    return false;
  }
}

std::vector<Leftover> Backend::SweepTemporaries(bool /*dry_run*/, SweepLooks* looks) {
  if (looks) looks->clear();
  return {};
}

namespace {
[[noreturn]] void NoImport(const std::string& kind, const ImageRef& ref) {
  throw Error(Errc::kInvalidArgument, "image " + ref.pool + "/" + ref.name + ": the " + kind +
                                          " backend has no instant import (RBD only)");
}
}  // namespace

void Backend::PrepareImport(const std::string& /*source_spec*/, const ImageRef& ref) {
  NoImport(kind(), ref);
}
void Backend::ExecuteImport(const ImageRef& ref, const ProgressFn& /*progress*/) {
  NoImport(kind(), ref);
}
void Backend::CommitImport(const ImageRef& ref) { NoImport(kind(), ref); }
void Backend::AbortImport(const ImageRef& ref) { NoImport(kind(), ref); }

}  // namespace cachemgr::storage
