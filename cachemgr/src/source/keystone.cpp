#include "source/keystone.h"

#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "cachemgr/error.h"
#include "util/json_field.h"
#include "source/secrets.h"

namespace cachemgr::source {
namespace {

using json = nlohmann::json;

// "2026-11-30T10:54:54.000000Z" -> seconds since the epoch; -1 when not that shape.
int64_t ParseTime(const std::string& s) {
  std::tm tm{};
  if (strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return -1;
  return static_cast<int64_t>(timegm(&tm));
}

// `text` without the credentials' secrets (Keystone never echoes one, but an error body
// or a proxy's might).
std::string RedactSecrets(std::string text, const KeystoneAuthOptions& o) {
  return Redact(std::move(text),
                std::vector<std::string>{o.password, o.application_credential_secret});
}

// One line of at most `max` bytes of an error body, secrets removed first.
std::string Excerpt(const std::string& body, const KeystoneAuthOptions& o, size_t max = 300) {
  std::string text = RedactSecrets(body, o);
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (text.size() > max) text.resize(max);
  return text;
}

}  // namespace

KeystoneSession::KeystoneSession(KeystoneAuthOptions options, HttpOptions http,
                                 std::shared_ptr<spdlog::logger> logger)
    : options_(std::move(options)), http_(std::move(http)), logger_(std::move(logger)) {
  while (!options_.auth_url.empty() && options_.auth_url.back() == '/')
    options_.auth_url.pop_back();
  const std::string& u = options_.auth_url;
  if (HasUserInfo(u)) {
    throw Error(Errc::kConfig, "source.glance.auth.auth_url: '" + WithoutUserInfo(u) +
                                   "' with credentials in the URL (user:password@) is refused; "
                                   "give them as the auth section's keys");
  }
  if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0) {
    throw Error(Errc::kConfig,
                "source.glance.auth.auth_url: '" + u + "' is not an http:// or https:// URL");
  }
  // "…:5000" and "…:5000/v3" are both in use: v3 is the only API spoken here.
  if (u.size() < 3 || u.compare(u.size() - 3, 3, "/v3") != 0) options_.auth_url += "/v3";
  const bool app = !options_.application_credential_id.empty();
  if (app && options_.application_credential_secret.empty()) {
    throw Error(Errc::kConfig,
                "source.glance.auth: application_credential_id needs "
                "application_credential_secret");
  }
  if (!app) {
    if (options_.username.empty() && options_.user_id.empty()) {
      throw Error(Errc::kConfig,
                  "source.glance.auth: set application_credential_id + _secret, or a user "
                  "(username or user_id) with a password");
    }
    if (options_.password.empty()) {
      throw Error(Errc::kConfig, "source.glance.auth: password auth needs a password");
    }
  }
  if (options_.interface != "public" && options_.interface != "internal" &&
      options_.interface != "admin") {
    throw Error(Errc::kConfig, "source.glance.auth.interface: '" + options_.interface +
                                   "' is not public, internal or admin");
  }
  if (!logger_) logger_ = std::make_shared<spdlog::logger>("cachemgr-null");
}

std::string KeystoneSession::RequestBody() const {
  const KeystoneAuthOptions& o = options_;
  json identity;
  if (!o.application_credential_id.empty()) {
    identity = {
        {"methods", {"application_credential"}},
        {"application_credential",
         {{"id", o.application_credential_id}, {"secret", o.application_credential_secret}}}};
    // An application credential carries its own project: no scope.
    return json{{"auth", {{"identity", identity}}}}.dump();
  }
  json user = {{"password", o.password}};
  if (!o.user_id.empty()) {
    user["id"] = o.user_id;
  } else {
    user["name"] = o.username;
    user["domain"] = o.user_domain_id.empty() ? json{{"name", o.user_domain_name}}
                                              : json{{"id", o.user_domain_id}};
  }
  identity = {{"methods", {"password"}}, {"password", {{"user", user}}}};
  json auth = {{"identity", identity}};
  if (!o.project_id.empty()) {
    auth["scope"] = {{"project", {{"id", o.project_id}}}};
  } else if (!o.project_name.empty()) {
    auth["scope"] = {
        {"project",
         {{"name", o.project_name},
          {"domain", o.project_domain_id.empty() ? json{{"name", o.project_domain_name}}
                                                 : json{{"id", o.project_domain_id}}}}}};
  }
  return json{{"auth", auth}}.dump();
}

void KeystoneSession::AuthenticateLocked() {
  const std::string url = options_.auth_url + "/auth/tokens";
  const std::string who = this->who();
  HttpOptions o = http_;
  o.total_timeout_s = http_.timeout_s * 2;
  std::string body;
  HttpResult r;
  for (uint32_t attempt = 0;; ++attempt) {
    r = HttpPostString(url, {"Content-Type: application/json", "Accept: application/json"},
                       RequestBody(), o, &body);
    // A dropped connection or a 5xx: Keystone restarts and load balancers do that.
    const bool again = r.transport_error() ? r.retryable_transport() : r.status >= 500;
    if (!again || attempt >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300 << attempt));
  }
  ++authentications_;
  if (r.transport_error()) {
    throw Error(r.timed_out() ? Errc::kTimeout : Errc::kSource,
                "Keystone at " + options_.auth_url + ": cannot authenticate " + who + ": " +
                    RedactSecrets(r.transport_message(), options_));
  }
  if (r.status == 401 || r.status == 403) {
    throw Error(Errc::kUnauthorized,
                "Keystone at " + options_.auth_url + " refused the credentials of " + who +
                    " (HTTP " + std::to_string(r.status) +
                    "); check source.glance.auth or the cloud's entry in clouds.yaml");
  }
  if (r.status != 201 && r.status != 200) {
    const std::string detail = Excerpt(r.error_body, options_);
    throw Error(Errc::kSource, "Keystone at " + options_.auth_url + ": authenticating " + who +
                                   " answered HTTP " + std::to_string(r.status) + ": " + detail);
  }
  auto subject = r.headers.find("x-subject-token");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception&) {
    throw Error(Errc::kSource,
                "Keystone at " + options_.auth_url + ": the token answer is not JSON");
  }
  if (subject == r.headers.end() || subject->second.empty() || !j.contains("token") ||
      !j["token"].is_object()) {
    throw Error(Errc::kSource,
                "Keystone at " + options_.auth_url + ": the answer carries no token");
  }
  const json& token = j["token"];
  int64_t expires = ParseTime(util::JsonString(token, "expires_at"));
  int64_t issued = ParseTime(util::JsonString(token, "issued_at"));
  // The lifetime by Keystone's clock, counted from now by ours: a skewed clock on either
  // side does not make a fresh token look expired.
  int64_t lifetime = expires > 0 && issued > 0 && expires > issued ? expires - issued : 300;
  token_ = subject->second;
  lifetime_ = std::chrono::seconds(lifetime);
  expires_ = std::chrono::system_clock::now() + std::chrono::seconds(lifetime);
  if (auto c = token.find("catalog"); c != token.end() && c->is_array()) catalog_ = c->dump();
  logger_->info("keystone token issued auth_url={} who=\"{}\" lifetime_s={}", options_.auth_url,
                who, lifetime);
}

std::string KeystoneSession::Token() {
  std::lock_guard lock(mu_);
  // Renew renew_before_s early, but never sooner than half way through a short life.
  auto now = std::chrono::system_clock::now();
  auto margin =
      std::min<std::chrono::seconds>(std::chrono::seconds(options_.renew_before_s), lifetime_ / 2);
  if (token_.empty() || now + margin >= expires_) {
    if (!token_.empty()) logger_->info("keystone token renewal auth_url={}", options_.auth_url);
    AuthenticateLocked();
  }
  return token_;
}

void KeystoneSession::Invalidate(const std::string& token) {
  std::lock_guard lock(mu_);
  if (token == token_) token_.clear();
}

std::string KeystoneSession::Endpoint(const std::string& service_type) {
  Token();
  std::lock_guard lock(mu_);
  json catalog = json::parse(catalog_.empty() ? "[]" : catalog_, nullptr, false);
  std::string found_other;
  for (const auto& service : catalog) {
    if (!service.is_object() || util::JsonString(service, "type") != service_type) continue;
    auto eps = service.find("endpoints");
    if (eps == service.end() || !eps->is_array()) continue;
    for (const auto& ep : *eps) {
      if (!ep.is_object()) continue;
      std::string region = util::JsonString(ep, "region_id");
      if (region.empty()) region = util::JsonString(ep, "region");
      const bool region_ok = options_.region_name.empty() || region == options_.region_name;
      if (util::JsonString(ep, "interface") == options_.interface && region_ok) {
        const std::string url = util::JsonString(ep, "url");
        if (HasUserInfo(url)) {
          throw Error(Errc::kSource, "Keystone at " + options_.auth_url + ": the catalog's " +
                                         service_type + " endpoint " + WithoutUserInfo(url) +
                                         " carries credentials in its URL; refused (set "
                                         "source.glance.endpoint)");
        }
        return url;
      }
      found_other += " " + util::JsonString(ep, "interface") + "@" + (region.empty() ? "-" : region);
    }
  }
  throw Error(
      Errc::kConfig,
      "Keystone at " + options_.auth_url + ": the catalog has no " + service_type +
          " endpoint for interface '" + options_.interface + "'" +
          (options_.region_name.empty() ? "" : " in region '" + options_.region_name + "'") +
          (found_other.empty() ? " (no " + service_type + " service at all)"
                               : " (it has:" + found_other + ")") +
          "; set source.glance.endpoint, auth.interface or auth.region_name");
}

std::string KeystoneSession::who() const {
  return options_.application_credential_id.empty()
             ? "user " + (options_.user_id.empty() ? options_.username : options_.user_id)
             : "application credential " + options_.application_credential_id;
}

uint64_t KeystoneSession::authentications() const {
  std::lock_guard lock(mu_);
  return authentications_;
}

}  // namespace cachemgr::source
