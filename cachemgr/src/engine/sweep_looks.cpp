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

}  // namespace

storage::SweepLooks LooksToTrust(const std::string& stored, int64_t now, int64_t max_age) {
  storage::SweepLooks looks;
  for (const auto& [folder, look] : Parse(stored)) {
    const int64_t age = now - look.second;
    if (age >= 0 && age < max_age) looks[folder] = look.first;
  }
  return looks;
}

std::string LooksToStore(const std::string& stored, const storage::SweepLooks& found, int64_t now) {
  const auto before = Parse(stored);
  nlohmann::json doc = nlohmann::json::object();
  for (const auto& [folder, stamp] : found) {
    auto it = before.find(folder);
    const int64_t at = it != before.end() && it->second.first == stamp ? it->second.second : now;
    doc[folder] = nlohmann::json::array({stamp, at});
  }
  return doc.dump();
}

}  // namespace cachemgr::engine
