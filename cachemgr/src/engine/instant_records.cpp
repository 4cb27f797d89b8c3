// What the pool keeps of instant misses (instant_records.h): the records' JSON, and the
// engine's reads of them.
#include "engine/instant_records.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "engine/cache_impl.h"
#include "engine/naming.h"
#include "util/json_field.h"

namespace cachemgr::engine {

namespace {

using json = nlohmann::json;

int64_t Int(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

}  // namespace

std::string ImportRecord::Dump() const {
  return json{{"image_id", image_id},
              {"identity", identity},
              {"path", path},
              {"format", format},
              {"file", file_identity},
              {"checksum", checksum},
              {"os_hash_algo", os_hash_algo},
              {"os_hash_value", os_hash_value},
              {"host", host},
              {"at", at},
              {"verdict", verdict},
              {"reason", reason},
              {"md5", md5},
              {"sha512", sha512},
              {"guest_md5", guest_md5},
              {"size", size}}
      .dump();
}

std::optional<ImportRecord> ImportRecord::Parse(const std::string& value) {
  const json j = json::parse(value, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  ImportRecord r;
  r.image_id = util::JsonString(j, "image_id");
  r.identity = util::JsonString(j, "identity");
  r.path = util::JsonString(j, "path");
  r.format = util::JsonString(j, "format");
  r.file_identity = util::JsonString(j, "file");
  r.checksum = util::JsonString(j, "checksum");
  r.os_hash_algo = util::JsonString(j, "os_hash_algo");
  r.os_hash_value = util::JsonString(j, "os_hash_value");
  r.host = util::JsonString(j, "host");
  r.at = Int(j, "at");
  r.verdict = util::JsonString(j, "verdict");
  r.reason = util::JsonString(j, "reason");
  r.md5 = util::JsonString(j, "md5");
  r.sha512 = util::JsonString(j, "sha512");
  r.guest_md5 = util::JsonString(j, "guest_md5");
  r.size = static_cast<uint64_t>(std::max<int64_t>(Int(j, "size"), 0));
  if (r.image_id.empty() || r.identity.empty()) return std::nullopt;
  return r;
}

std::string BadRecord::Dump() const {
  return json{{"image_id", image_id},  {"entry", entry}, {"reason", reason},
              {"file", file_identity}, {"at", at},       {"volumes", volumes}}
      .dump();
}

std::optional<BadRecord> BadRecord::Parse(const std::string& value) {
  const json j = json::parse(value, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  BadRecord r;
  r.image_id = util::JsonString(j, "image_id");
  r.entry = util::JsonString(j, "entry");
  r.reason = util::JsonString(j, "reason");
  r.file_identity = util::JsonString(j, "file");
  r.at = Int(j, "at");
  if (auto it = j.find("volumes"); it != j.end() && it->is_array()) {
    for (const auto& v : *it) {
      if (v.is_string()) r.volumes.push_back(v.get<std::string>());
    }
  }
  if (r.image_id.empty()) return std::nullopt;
  return r;
}

// What the records say, for the pass, the limits and `stats`.
std::map<std::string, std::string> CacheImpl::PendingImports() {
  if (!backend_->CanImportInstantly()) return {};
  std::map<std::string, std::string> out;  // entry name -> image id
  for (const auto& [name, value] : backend_->ReadTable(kImportsTable)) {
    auto rec = ImportRecord::Parse(value);
    out[name] = rec ? rec->image_id : "";
  }
  return out;
}

bool CacheImpl::ImportPending(const std::string& name) {
  if (!backend_->CanImportInstantly()) return false;
  return backend_->ReadTable(kImportsTable).count(name) > 0;
}

std::vector<BadEntry> CacheImpl::BadEntries() {
  std::vector<BadEntry> out;
  if (!backend_->CanImportInstantly()) return out;
  for (const auto& [key, value] : backend_->ReadTable(kBadTable)) {
    if (auto rec = BadRecord::Parse(value)) {
      out.push_back({rec->image_id, rec->reason, rec->at, rec->volumes});
    }
  }
  return out;
}

}  // namespace cachemgr::engine
