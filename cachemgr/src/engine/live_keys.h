// engine/live_keys.h: whether an image key is cached, for a sweep that asks it of a few
// keys or of many: one index query a key while few are asked, and every live row read
// once past that (at 100,000 entries, reading them all costs as much as ~1,000 queries).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace cachemgr::engine {

class LiveKeys {
 public:
  // `one`: whether one key is cached; `all`: every cached key.
  LiveKeys(std::function<bool(const std::string&)> one,
           std::function<std::set<std::string>()> all)
      : one_(std::move(one)), all_(std::move(all)) {}

  bool operator()(const std::string& key) {
    if (!read_ && ++asked_ > kAskEach) read_ = all_();
    return read_ ? read_->count(key) > 0 : one_(key);
  }

 private:
  static constexpr size_t kAskEach = 256;
  std::function<bool(const std::string&)> one_;
  std::function<std::set<std::string>()> all_;
  std::optional<std::set<std::string>> read_;
  size_t asked_ = 0;
};

}  // namespace cachemgr::engine
