// config/config_validate.cpp: the rules on the values of Options (ValidateOptions), for
// options from a file and options built in code alike. Each error names the key path and
// the rule ("cache.max_size_gb: must be >= 0 (0 = unlimited)"); the parser adds the line.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cachemgr/config.h"
#include "cachemgr/error.h"
#include "config/config_file.h"
#include "config/config_internal.h"
#include "util/url.h"

namespace cachemgr {
namespace {

// An IPv4 literal other hosts can dial, without a port: what the relay binds (a free port
// per import, so that imports of one host never contend for one) and what librbd's http
// stream dials (librbd 16 refuses a URL with an IPv6 literal).
bool RelayAddressValid(const std::string& s) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  const uint32_t ip = ntohl(a.s_addr);
  return ip != INADDR_ANY && ip != INADDR_BROADCAST && !IN_MULTICAST(ip);
}

namespace fs = std::filesystem;

// The fewest events a bounded events table keeps (cache.events_max_rows).
constexpr uint64_t kMinEventRows = 1000;

// Features librbd knows by name (rbd feature list of Ceph 16).
const std::set<std::string, std::less<>> kRbdFeatures = {
    "layering", "striping", "exclusive-lock", "object-map", "fast-diff", "deep-flatten",
    "journaling"};
const std::set<std::string, std::less<>> kLogLevels = {"trace", "debug",    "info", "warn",
                                                       "error", "critical", "off"};

[[noreturn]] void Invalid(const std::string& path, const std::string& rule) {
  throw Error(Errc::kConfig, path + ": " + rule);
}

template <typename T>
void Between(const std::string& path, T value, T lo, T hi) {
  if (value < lo || value > hi) {
    Invalid(path, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                      " (got " + std::to_string(value) + ")");
  }
}

void AtLeast(const std::string& path, uint64_t value, uint64_t lo) {
  if (value < lo) {
    Invalid(path, "must be >= " + std::to_string(lo) + " (got " + std::to_string(value) + ")");
  }
}

void NonEmpty(const std::string& path, const std::string& value) {
  if (value.empty()) Invalid(path, "must not be empty");
}

// source.glance.auth (or what a cloud of clouds.yaml put there): complete credentials,
// a URL, an interface Keystone knows. Never quotes a secret.
void ValidateKeystone(const KeystoneAuthOptions& a) {
  const std::string& u = a.auth_url;
  if (util::HasUserInfo(u)) {
    Invalid("source.glance.auth.auth_url", "credentials in the URL (user:password@) are "
                                           "refused (got '" + util::WithoutUserInfo(u) +
                                               "'); give them as the auth section's keys");
  }
  if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0) {
    Invalid("source.glance.auth.auth_url", "must be an http:// or https:// URL (got '" + u + "')");
  }
  if (a.interface != "public" && a.interface != "internal" && a.interface != "admin") {
    Invalid("source.glance.auth.interface",
            "must be public, internal or admin (got '" + a.interface + "')");
  }
  if (!a.application_credential_id.empty()) {
    if (a.application_credential_secret.empty()) {
      Invalid("source.glance.auth.application_credential_secret",
              "missing: application_credential_id needs it");
    }
    return;
  }
  if (a.username.empty() && a.user_id.empty()) {
    Invalid("source.glance.auth", "no credentials: set application_credential_id + "
                                  "application_credential_secret, or a user (username or "
                                  "user_id) with a password");
  }
  if (a.password.empty()) Invalid("source.glance.auth.password", "missing: password auth needs it");
}

}  // namespace

void ValidateOptions(const Options& o) {
  NonEmpty("index", o.index);
  if (!o.host_id.empty()) {
    const bool ok =
        o.host_id.size() <= 64 && o.host_id[0] != '.' && o.host_id[0] != '-' &&
        std::all_of(o.host_id.begin(), o.host_id.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
        });
    if (!ok) {
      Invalid("host_id", "'" + o.host_id +
                             "': use 1..64 of [A-Za-z0-9._-], not starting with '.' or '-' "
                             "(or leave it empty for the hostname)");
    }
  }

  const auto& local = o.backend.local;
  if (o.backend.type == BackendType::kLocal) {
    NonEmpty("backend.local.root", local.root);
    if (!fs::path(local.root).is_absolute()) {
      Invalid("backend.local.root", "must be an absolute path (got '" + local.root + "')");
    }
  }
  if (local.mode > 07777) Invalid("backend.local.mode", "must be an octal mode <= 07777");

  const auto& rbd = o.backend.rbd;
  if (o.backend.type == BackendType::kRbd) {
    NonEmpty("backend.rbd.pool", rbd.pool);
    NonEmpty("backend.rbd.client", rbd.client);
    if (rbd.client.rfind("client.", 0) == 0) {
      Invalid("backend.rbd.client",
              "give the name without the 'client.' prefix (got '" + rbd.client + "')");
    }
  }
  Between<uint32_t>("backend.rbd.queue_depth", rbd.queue_depth, 1, 256);
  AtLeast("backend.rbd.connect_timeout_s", rbd.connect_timeout_s, 1);
  AtLeast("backend.rbd.op_timeout_s", rbd.op_timeout_s, 1);
  for (std::size_t i = 0; i < rbd.features.size(); ++i) {
    if (!kRbdFeatures.count(rbd.features[i])) {
      std::vector<std::string> known(kRbdFeatures.begin(), kRbdFeatures.end());
      Invalid("backend.rbd.features[" + std::to_string(i) + "]",
              "must be one of " + config::JoinList(known, ", ") + " (got '" + rbd.features[i] + "')");
    }
  }
  if (o.backend.type == BackendType::kRbd &&
      std::find(rbd.features.begin(), rbd.features.end(), "layering") == rbd.features.end()) {
    Invalid("backend.rbd.features", "must include layering (clones need it)");
  }

  const auto& glance = o.source.glance;
  if (o.source.type == SourceType::kGlance) {
    // Empty with Keystone auth: the catalog's image endpoint.
    const bool from_catalog = glance.endpoint.empty() && glance.auth.enabled();
    if (!from_catalog && glance.endpoint.rfind("http://", 0) != 0 &&
        glance.endpoint.rfind("https://", 0) != 0) {
      Invalid("source.glance.endpoint",
              "must be an http:// or https:// URL (got '" + glance.endpoint + "')");
    }
  }
  if (util::HasUserInfo(glance.endpoint)) {
    Invalid("source.glance.endpoint", "credentials in the URL (user:password@) are refused "
                                      "(got '" + util::WithoutUserInfo(glance.endpoint) +
                                          "'); use source.glance.auth or token");
  }
  if (glance.auth.enabled()) ValidateKeystone(glance.auth);
  AtLeast("source.glance.timeout_s", glance.timeout_s, 1);
  Between<uint32_t>("source.glance.retries", glance.retries, 0, 100);
  AtLeast("source.glance.min_rate_kib_s", glance.min_rate_kib_s, 1);
  AtLeast("source.glance.max_list_pages", glance.max_list_pages, 1);
  if (glance.direct_pools) {
    for (std::size_t i = 0; i < glance.direct_pools->size(); ++i) {
      NonEmpty("source.glance.direct_pools[" + std::to_string(i) + "]", (*glance.direct_pools)[i]);
    }
  }
  if (!(o.source.max_image_gb >= 0) || !std::isfinite(o.source.max_image_gb)) {
    Invalid("source.max_image_gb", "must be >= 0 (0 = conversion.max_virtual_size_gb)");
  }
  if (o.source.type == SourceType::kFile) NonEmpty("source.file.dir", o.source.file.dir);

  const auto& cache = o.cache;
  if (!(cache.max_size_gb >= 0) || !std::isfinite(cache.max_size_gb)) {
    Invalid("cache.max_size_gb", "must be >= 0 (0 = unlimited)");
  }
  // librbd itself refuses chains much longer than this; a larger value is a typo.
  if (cache.max_clone_depth > 64) {
    Invalid("cache.max_clone_depth", "must be <= 64 (got " + std::to_string(cache.max_clone_depth) +
                                         "); 0 or less means every volume is a full copy");
  }
  // A century is surely a typo; fewer rows than this would let the events of hits
  // push out the one `stats` reads of the last pass.
  Between<uint32_t>("cache.events_max_age_days", cache.events_max_age_days, 0, 36500);
  if (cache.events_max_rows != 0 && cache.events_max_rows < kMinEventRows) {
    Invalid("cache.events_max_rows", "must be 0 (no limit) or >= " + std::to_string(kMinEventRows) +
                                         " (got " + std::to_string(cache.events_max_rows) + ")");
  }
  // The free-space floor: 100% free could never hold; a negative floor is a typo.
  if (!(cache.min_free_percent >= 0 && cache.min_free_percent <= 99)) {
    Invalid("cache.min_free_percent", "must be between 0 and 99 (0 = off)");
  }
  // Over a pebibyte is a typo (a figure in MiB or bytes): every miss would be refused.
  if (!(cache.min_free_gb >= 0 && cache.min_free_gb <= 1048576)) {
    Invalid("cache.min_free_gb", "must be >= 0 (0 = off) and at most 1048576 (1 PiB)");
  }
  if (!cache.instant_relay.empty() && !RelayAddressValid(cache.instant_relay)) {
    Invalid("cache.instant_relay",
            "'" + cache.instant_relay + "' is not an IPv4 address of this host that other "
            "hosts reach (no host name, no port: each import takes a free one; not 0.0.0.0, "
            "broadcast or multicast; librbd cannot dial IPv6 literals)");
  }
  // The pinned flatten: clones per pass and seconds per pass. More than a thousand
  // flattens (each a full copy of its parent) in one pass, or a budget beyond a day, is
  // surely a typo.
  Between<uint32_t>("cache.flatten_pinned_max", cache.flatten_pinned_max, 0, 1000);
  Between<uint32_t>("cache.flatten_pinned_budget_s", cache.flatten_pinned_budget_s, 0, 86400);

  const auto& conv = o.conversion;
  NonEmpty("conversion.dir", conv.dir);
  NonEmpty("conversion.qemu_img", conv.qemu_img);
  if (!(conv.max_virtual_size_gb > 0) || !std::isfinite(conv.max_virtual_size_gb)) {
    Invalid("conversion.max_virtual_size_gb", "must be > 0");
  }
  AtLeast("conversion.timeout_s", conv.timeout_s, 1);
  AtLeast("conversion.cpu_limit_s", conv.cpu_limit_s, 1);
  AtLeast("conversion.address_space_mb", conv.address_space_mb, 64);

  if (!kLogLevels.count(o.log.level)) {
    std::vector<std::string> known = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    Invalid("log.level", "must be one of " + config::JoinList(known, ", ") + " (got '" + o.log.level + "')");
  }
  AtLeast("log.max_file_mb", o.log.max_file_mb, 1);
  AtLeast("log.max_files", o.log.max_files, 1);

  // Last, after the rules on values: the folders the cache creates files in and removes
  // files from are never the system's.
  if (o.backend.type == BackendType::kLocal) {
    config::RefuseSystemFolder("backend.local.root", local.root);
  }
  config::RefuseSystemFolder("index", fs::path(o.index).parent_path().empty()
                                          ? fs::path(".")
                                          : fs::path(o.index).parent_path());
  config::RefuseSystemFolder("conversion.dir", conv.dir);

  // The image store is read, never written: no folder the cache writes in may be the
  // source's image dir or inside it. The local root may not hold it either (the pass
  // sweeps the root's folders); the index's folder and conversion.dir may (only their own
  // files and the cache's working dirs directly in them are ever written or swept).
  if (o.source.type == SourceType::kFile && !o.source.file.dir.empty()) {
    auto resolve = [](const fs::path& p) {
      std::error_code ec;
      fs::path r = fs::weakly_canonical(fs::absolute(p, ec), ec);
      if (ec) r = fs::absolute(p).lexically_normal();
      std::string s = r.string();
      while (s.size() > 1 && s.back() == '/') s.pop_back();
      return s;
    };
    auto under = [](const std::string& p, const std::string& dir) {
      return p == dir || dir == "/" ||
             (p.size() > dir.size() && p.starts_with(dir) && p[dir.size()] == '/');
    };
    const std::string images = resolve(o.source.file.dir);
    std::vector<std::pair<std::string, fs::path>> written = {
        {"conversion.dir", conv.dir},
        {"index", fs::path(o.index).parent_path().empty() ? fs::path(".")
                                                          : fs::path(o.index).parent_path()}};
    if (o.backend.type == BackendType::kLocal)
      written.push_back({"backend.local.root", local.root});
    for (const auto& [key, dir] : written) {
      const std::string w = resolve(dir);
      const bool holds = key == "backend.local.root" && under(images, w);
      if (under(w, images) || holds) {
        Invalid(key, "'" + w + "' " + (under(w, images) ? "is inside" : "holds") +
                         " the image store source.file.dir ('" + images +
                         "'), which the cache only reads; use a folder apart from it");
      }
    }
  }
}

}  // namespace cachemgr
