// source/keystone.h: a Keystone v3 session: a token kept and renewed, and the catalog.
//
// Authenticates with an application credential or a password (POST /v3/auth/tokens).
// The token is renewed `renew_before_s` before it expires, or when a service refused it
// (Invalidate). Threads that need a token while one renews wait for that renewal: one
// request to Keystone, not one per thread. Secrets never appear in errors or logs.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "cachemgr/options.h"
#include "source/http.h"

namespace cachemgr::source {

class KeystoneSession {
 public:
  KeystoneSession(KeystoneAuthOptions options, HttpOptions http,
                  std::shared_ptr<spdlog::logger> logger);

  // A token valid for at least renew_before_s more (renewed first when it is not).
  std::string Token();
  // The service refused `token` (HTTP 401): the next Token() authenticates again,
  // unless another thread already did.
  void Invalidate(const std::string& token);
  // The catalog's endpoint of `service_type` for the configured interface and region.
  std::string Endpoint(const std::string& service_type);
  // Keystone token requests made so far (tests and doctor).
  uint64_t authentications() const;
  // The v3 auth URL, and who authenticates ("application credential ID" or "user NAME"):
  // never a secret.
  const std::string& auth_url() const { return options_.auth_url; }
  std::string who() const;

 private:
  void AuthenticateLocked();
  std::string RequestBody() const;

  KeystoneAuthOptions options_;
  HttpOptions http_;
  std::shared_ptr<spdlog::logger> logger_;
  mutable std::mutex mu_;
  std::string token_;
  std::chrono::system_clock::time_point expires_{};
  std::chrono::seconds lifetime_{0};
  std::string catalog_;  // the token's catalog, JSON
  uint64_t authentications_ = 0;
};

}  // namespace cachemgr::source
