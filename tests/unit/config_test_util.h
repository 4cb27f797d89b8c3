// Helpers the config tests share: the error a YAML text gives, an environment variable
// set for one scope.
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <string>

#include "cachemgr/config.h"
#include "cachemgr/error.h"

namespace cachemgr::test {

// The kConfig error a text gives, or a failed check if it parses.
inline std::string ConfigError(const std::string& yaml) {
  try {
    cachemgr::ParseConfig(yaml, "test.yaml");
  } catch (const cachemgr::Error& e) {
    CHECK_MESSAGE(e.code() == cachemgr::Errc::kConfig, "code ", cachemgr::ErrcName(e.code()));
    return e.what();
  }
  FAIL_CHECK("parsed without error: " << yaml);
  return "";
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

}  // namespace cachemgr::test
