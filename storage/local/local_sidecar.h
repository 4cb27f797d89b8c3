// storage/local/local_sidecar.h: the sidecar, `<pool>/.meta/<name>.json` beside each
// image: its format, metadata, snapshots and parent (see local_backend.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "storage/backend.h"

namespace cachemgr::storage {

struct SnapRecord {
  std::string name;
  bool is_protected = false;
  uint64_t size = 0;
};

struct Sidecar {
  std::string format = "raw";
  // Set when the file is a hard link of a file the cache does not own alone (see
  // AdoptShared): "dev:ino:size:mtime_ns:ctime_ns:nlink" when it was adopted.
  std::string shared_inode;
  // sha256 of the shared file's bytes when it was adopted: a link-count change moves
  // ctime as a write does, and only the bytes tell the two apart.
  std::string shared_sha256;
  std::map<std::string, std::string> metadata;
  std::vector<SnapRecord> snapshots;
  std::optional<SnapRef> parent;

  SnapRecord* Find(const std::string& snap) {
    for (auto& s : snapshots)
      if (s.name == snap) return &s;
    return nullptr;
  }
};

nlohmann::json ToJson(const Sidecar& s);
Sidecar FromJson(const nlohmann::json& j);
// Whether `text` is a sidecar as ToJson writes it (schema 1, its fields of their types):
// what a sweep may take for the cache's own. Anything else is left alone.
bool IsSidecarText(const std::string& text);
// The JSON in the file at `path`: kNotFound when it is missing, kCorrupt when unreadable.
nlohmann::json ReadJsonFile(const std::filesystem::path& path);
// The record of `snap` in `s`, validating its name; kNotFound when there is none.
SnapRecord& FindSnap(Sidecar& s, const SnapRef& snap);

}  // namespace cachemgr::storage
