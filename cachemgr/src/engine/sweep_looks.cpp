// engine/sweep_looks.cpp: see sweep_looks.h. Stored as JSON: {"<folder>": ["<stamp>", <unix s>]}.
#include "engine/sweep_looks.h"

#include <nlohmann/json.hpp>

namespace cachemgr::engine {
namespace {

// Folder -> (stamp, recorded at); empty when `stored` is not what LooksToStore writes.
std::map<std::string, std::pair<std::string, int64_t>> Parse(const std::string& stored) {
  std::map<std::string, std::pair<std::string, int64_t>> out;
  const auto doc = nlohmann::json::parse(stored, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return out;
  for (const auto& [folder, value] : doc.items()) {
    if (!value.is_array() || value.size() != 2 || !value[0].is_string() ||
        !value[1].is_number_integer()) {
      return {};
    }
    out[folder] = {value[0].get<std::string>(), value[1].get<int64_t>()};
  }
  return out;
}

// Recorded at `at`, less than `max_age` before `now` (compared, never subtracted: a
// stored time may be anything).
bool Fresh(int64_t at, int64_t now, int64_t max_age) { return at <= now && at > now - max_age; }

}  // namespace

storage::SweepLooks LooksToTrust(const std::string& stored, int64_t now, int64_t max_age) {
  storage::SweepLooks looks;
  for (const auto& [folder, look] : Parse(stored)) {
    if (Fresh(look.second, now, max_age)) looks[folder] = look.first;
  }
  return looks;
}

std::string LooksToStore(const std::string& stored, const storage::SweepLooks& found, int64_t now,
                         int64_t max_age) {
  const auto before = Parse(stored);
  nlohmann::json doc = nlohmann::json::object();
  for (const auto& [folder, stamp] : found) {
    auto it = before.find(folder);
    const bool kept = it != before.end() && it->second.first == stamp &&
                      Fresh(it->second.second, now, max_age);
    doc[folder] = nlohmann::json::array({stamp, kept ? it->second.second : now});
  }
  // A folder name that is not UTF-8 (anyone may make folders under a root) is stored
  // with its bad bytes replaced: its key then matches no folder, which is listed.
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace cachemgr::engine
