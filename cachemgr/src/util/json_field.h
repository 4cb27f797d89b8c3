// util/json_field.h: a string field of a JSON object read leniently (Glance's and
// Keystone's answers, the instant records): absent or not a string reads as "".
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace cachemgr::util {

inline std::string JsonString(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace cachemgr::util
