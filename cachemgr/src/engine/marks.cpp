#include "engine/marks.h"

#include <map>

#include "cachemgr/error.h"

namespace cachemgr::engine {

std::string MarkValue(std::string_view kind, const std::string& identity) {
  return std::string(kind) + " " + identity;
}

std::string Mark(storage::Backend& backend, const storage::ImageRef& ref, std::string_view kind) {
  std::string identity = backend.Identity(ref);
  backend.SetMetadata(ref, kMetaMark, MarkValue(kind, identity));
  return identity;
}

Ownership CheckOwnership(storage::Backend& backend, const storage::ImageRef& ref,
                         std::string_view kind, const std::string* recorded) {
  Ownership out;
  try {
    out.identity = backend.Identity(ref);
  } catch (const Error& e) {
    if (e.code() == Errc::kNotFound) return out;
    throw;
  }
  std::map<std::string, std::string> metadata;
  try {
    metadata = backend.GetMetadata(ref);
  } catch (const Error& e) {
    // Renamed or removed since its identity was read (another host's create or pass
    // moving it along): nothing is at the name now.
    if (e.code() == Errc::kNotFound) return Ownership{};
    throw;
  }
  out.exists = true;
  auto it = metadata.find(kMetaMark);
  const std::string mark = it == metadata.end() ? "" : it->second;
  const std::string where = ref.pool + "/" + ref.name;
  if (mark.empty()) {
    if (recorded != nullptr && recorded->empty()) {
      out.ours = true;  // made before marks existed: the row is the only record
      return out;
    }
    out.why = where + " carries no cachemgr mark (not made by this cache)";
    return out;
  }
  const auto space = mark.find(' ');
  const std::string mark_kind = mark.substr(0, space);
  const std::string mark_identity = space == std::string::npos ? "" : mark.substr(space + 1);
  if (mark_kind != kind) {
    out.why = where + " is marked as a cache " + mark_kind + ", not a " + std::string(kind);
    return out;
  }
  out.marked = true;
  if (mark_identity != out.identity) {
    out.why = where + " is a copy of a cache object (its mark names " + mark_identity + ", it is " +
              out.identity + ")";
    return out;
  }
  if (recorded != nullptr && !recorded->empty() && *recorded != out.identity) {
    out.why = where + " is not the object this cache made there (recorded " + *recorded +
              ", found " + out.identity + ")";
    return out;
  }
  out.ours = true;
  return out;
}

}  // namespace cachemgr::engine
