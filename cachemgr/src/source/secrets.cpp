// source/secrets.cpp: see secrets.h.
#include "source/secrets.h"

#include <curl/curl.h>

#include <memory>
#include <nlohmann/json.hpp>

namespace cachemgr::source {
namespace {

void ReplaceAll(std::string& text, const std::string& what) {
  if (what.empty()) return;
  for (size_t pos = 0; (pos = text.find(what, pos)) != std::string::npos;) {
    text.replace(pos, what.size(), "***");
    pos += 3;
  }
}

// The JSON string form of `s` without its quotes; `ascii`: non-ASCII as \uXXXX.
std::string JsonEscaped(const std::string& s, bool ascii) {
  const std::string quoted =
      nlohmann::json(s).dump(-1, ' ', ascii, nlohmann::json::error_handler_t::replace);
  return quoted.size() >= 2 ? quoted.substr(1, quoted.size() - 2) : s;
}

std::string PercentEncoded(const std::string& s) {
  std::unique_ptr<char, decltype(&curl_free)> out(
      curl_easy_escape(nullptr, s.c_str(), static_cast<int>(s.size())), curl_free);
  return out ? std::string(out.get()) : s;
}

}  // namespace

std::string Redact(std::string text, const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.empty()) continue;
    ReplaceAll(text, secret);
    ReplaceAll(text, JsonEscaped(secret, false));
    ReplaceAll(text, JsonEscaped(secret, true));
    ReplaceAll(text, PercentEncoded(secret));
  }
  return text;
}

}  // namespace cachemgr::source
