// config/config_parse.cpp: the YAML config into Options: every key of the CLI contract,
// its type, and the line it is on.
//
// Type errors come from here; range and cross-field rules live only in ValidateOptions
// (config_validate.cpp, so options built in code get the same checks), and the parser
// adds the line of the key they name:
//   /etc/cachemgr/cachemgr.yaml:7: cache.max_size_gb: must be >= 0
//
// Relative paths in a config file (index, backend.local.root, backend.rbd.conf,
// backend.rbd.keyring, source.glance.ca_file, source.file.dir, conversion.dir,
// conversion.qemu_img when it contains a '/', log.file) are resolved against the
// directory of the file, so a config works the same from any working directory.
// ParseConfig (text, no file) leaves them as written.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cachemgr/config.h"
#include "cachemgr/error.h"
#include "config/clouds_yaml.h"
#include "config/config_internal.h"
#include "util/url.h"

namespace cachemgr {
namespace {

namespace fs = std::filesystem;

std::size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "'" + node.Scalar() + "'";
    default: return "an undefined value";
  }
}

std::string Join(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
}

// One section of the file: its keys, each with what to do with its value.
struct Key {
  std::string name;
  std::function<void(const YAML::Node& value, const std::string& path)> apply;
};

class Parser {
 public:
  Parser(std::string origin, fs::path base_dir)
      : origin_(std::move(origin)), base_dir_(std::move(base_dir)) {}

  Options Parse(std::string_view text) {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(text));
    } catch (const YAML::ParserException& e) {
      throw Error(Errc::kConfig, origin_ + ":" + std::to_string(e.mark.line + 1) + ":" +
                                     std::to_string(e.mark.column + 1) + ": invalid YAML: " +
                                     e.msg);
    } catch (const YAML::Exception& e) {
      throw Error(Errc::kConfig, origin_ + ": invalid YAML: " + e.what());
    }
    Options o;
    if (!root.IsNull()) {
      if (!root.IsMap()) Fail(root, "", "expected a map of sections at the top, got " + Describe(root));
      ParseRoot(root, o);
    }
    ResolveGlanceAuth(o);
    try {
      ValidateOptions(o);
    } catch (const Error& e) {
      // The rule names a key path ("cache.max_size_gb: ..."): point at its line.
      const std::string msg = e.what();
      const auto key_end = msg.find_first_of(":[");
      const auto it = key_end == std::string::npos ? lines_.end() : lines_.find(msg.substr(0, key_end));
      throw Error(Errc::kConfig,
                  origin_ + (it == lines_.end() ? "" : ":" + std::to_string(it->second)) + ": " + msg);
    }
    return o;
  }

 private:
  [[noreturn]] void Fail(const YAML::Node& node, const std::string& path,
                         const std::string& rule) const {
    std::string where = origin_;
    if (node.IsDefined() && !node.Mark().is_null()) where += ":" + std::to_string(node.Mark().line + 1);
    throw Error(Errc::kConfig, where + ": " + (path.empty() ? "" : path + ": ") + rule);
  }

  // Walks a map section: unknown and repeated keys are errors; returns the keys seen.
  std::set<std::string> Section(const YAML::Node& node, const std::string& path,
                                const std::vector<Key>& keys) {
    std::set<std::string> seen;
    if (!node.IsDefined() || node.IsNull()) return seen;  // "backend:" with nothing under it
    if (!node.IsMap()) Fail(node, path, "expected a map, got " + Describe(node));
    for (const auto& kv : node) {
      const YAML::Node& k = kv.first;
      if (!k.IsScalar()) Fail(k, path, "keys must be plain names, got " + Describe(k));
      const std::string name = k.Scalar();
      const std::string key_path = Join(path, name);
      const auto it = std::find_if(keys.begin(), keys.end(),
                                   [&](const Key& key) { return key.name == name; });
      if (it == keys.end()) Fail(k, key_path, UnknownKey(name, keys));
      if (!seen.insert(name).second) {
        Fail(k, key_path, "set twice (first on line " + std::to_string(lines_[key_path]) + ")");
      }
      lines_[key_path] = k.Mark().line + 1;
      it->apply(kv.second, key_path);
    }
    return seen;
  }

  static std::string UnknownKey(const std::string& name, const std::vector<Key>& keys) {
    std::string best;
    std::size_t best_distance = std::numeric_limits<std::size_t>::max();
    std::vector<std::string> names;
    for (const auto& key : keys) {
      names.push_back(key.name);
      const std::size_t d = EditDistance(name, key.name);
      if (d < best_distance) {
        best_distance = d;
        best = key.name;
      }
    }
    // Close enough to be a typo: a few edits, and fewer than half the name.
    if (best_distance <= std::max<std::size_t>(2, name.size() / 3) &&
        best_distance < std::max(name.size(), best.size())) {
      return "unknown key; did you mean " + best + "?";
    }
    return "unknown key; known keys here: " + config::JoinList(names, ", ");
  }

  // --- scalar conversions; each names the key and the value it got.
  std::string String(const YAML::Node& v, const std::string& path) const {
    if (v.IsNull()) return "";
    if (!v.IsScalar()) Fail(v, path, "expected a string, got " + Describe(v));
    return v.Scalar();
  }

  std::string PathValue(const YAML::Node& v, const std::string& path) const {
    std::string s = String(v, path);
    if (s.empty() || base_dir_.empty()) return s;
    fs::path p(s);
    if (p.is_absolute()) return s;
    return (base_dir_ / p).lexically_normal().string();
  }

  template <typename T>
  T Integer(const YAML::Node& v, const std::string& path) const {
    if (!v.IsScalar()) Fail(v, path, "expected an integer, got " + Describe(v));
    const std::string& s = v.Scalar();
    std::string_view text = s;
    if (!text.empty() && text.front() == '+') text.remove_prefix(1);
    const bool negative = !text.empty() && text.front() == '-';
    const bool digits = text.size() > (negative ? 1U : 0U) &&
                        std::all_of(text.begin() + (negative ? 1 : 0), text.end(),
                                    [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) Fail(v, path, "expected an integer, got '" + s + "'");
    if (std::is_unsigned_v<T> && negative) Fail(v, path, "must be >= 0 (got " + s + ")");
    T value{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) {
      Fail(v, path,
           "must be between " + std::to_string(std::numeric_limits<T>::min()) + " and " +
               std::to_string(std::numeric_limits<T>::max()) + " (got " + s + ")");
    }
    return value;
  }

  double Number(const YAML::Node& v, const std::string& path) const {
    if (!v.IsScalar()) Fail(v, path, "expected a number, got " + Describe(v));
    const std::string& s = v.Scalar();
    char* end = nullptr;
    errno = 0;
    const double d = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(d) ||
        std::isspace(static_cast<unsigned char>(s.front()))) {
      Fail(v, path, "expected a number, got '" + s + "'");
    }
    return d;
  }

  bool Bool(const YAML::Node& v, const std::string& path) const {
    if (v.IsScalar()) {
      std::string s = v.Scalar();
      std::transform(s.begin(), s.end(), s.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (s == "true" || s == "yes" || s == "on") return true;
      if (s == "false" || s == "no" || s == "off") return false;
    }
    Fail(v, path, "expected true or false, got " + Describe(v));
  }

  template <typename E>
  E Enum(const YAML::Node& v, const std::string& path,
         const std::vector<std::pair<std::string, E>>& values) const {
    std::vector<std::string> names;
    for (const auto& [name, value] : values) names.push_back(name);
    if (v.IsScalar()) {
      for (const auto& [name, value] : values) {
        if (v.Scalar() == name) return value;
      }
    }
    Fail(v, path, "must be one of " + config::JoinList(names, ", ") + " (got " + Describe(v) + ")");
  }

  // Permission bits as an octal string ("0644"); a bare 644 reads the same way, because
  // that is what anyone writing a mode means.
  uint32_t Mode(const YAML::Node& v, const std::string& path) const {
    if (v.IsScalar()) {
      const std::string& s = v.Scalar();
      uint32_t mode = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), mode, 8);
      if (!s.empty() && ec == std::errc() && end == s.data() + s.size() && mode <= 07777) {
        return mode;
      }
    }
    Fail(v, path, "expected an octal mode such as \"0644\", got " + Describe(v));
  }

  std::vector<std::string> StringList(const YAML::Node& v, const std::string& path) const {
    if (v.IsNull()) return {};
    if (!v.IsSequence()) Fail(v, path, "expected a list of strings, got " + Describe(v));
    std::vector<std::string> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      out.push_back(String(v[i], path + "[" + std::to_string(i) + "]"));
    }
    return out;
  }

  // --- the sections
  void ParseRoot(const YAML::Node& root, Options& o) {
    Section(root, "",
            {{"index", [&](auto& v, auto& p) { o.index = PathValue(v, p); }},
             {"host_id", [&](auto& v, auto& p) { o.host_id = String(v, p); }},
             {"backend", [&](auto& v, auto& p) { ParseBackend(v, p, o.backend); }},
             {"source", [&](auto& v, auto& p) { ParseSource(v, p, o.source); }},
             {"cache", [&](auto& v, auto& p) { ParseCache(v, p, o.cache); }},
             {"conversion", [&](auto& v, auto& p) { ParseConversion(v, p, o.conversion); }},
             {"log", [&](auto& v, auto& p) { ParseLog(v, p, o.log); }}});
  }

  void ParseBackend(const YAML::Node& node, const std::string& path, BackendOptions& b) {
    Section(node, path,
            {{"type",
              [&](auto& v, auto& p) {
                b.type = Enum<BackendType>(v, p, {{"local", BackendType::kLocal},
                                                  {"rbd", BackendType::kRbd}});
              }},
             {"local", [&](auto& v, auto& p) { ParseLocal(v, p, b.local); }},
             {"rbd", [&](auto& v, auto& p) { ParseRbd(v, p, b.rbd); }}});
  }

  void ParseLocal(const YAML::Node& node, const std::string& path, LocalBackendOptions& l) {
    Section(node, path,
            {{"root", [&](auto& v, auto& p) { l.root = PathValue(v, p); }},
             {"clone_mode",
              [&](auto& v, auto& p) {
                l.clone_mode = Enum<CloneMode>(v, p,
                                               {{"auto", CloneMode::kAuto},
                                                {"qcow2", CloneMode::kQcow2},
                                                {"reflink", CloneMode::kReflink},
                                                {"copy", CloneMode::kCopy}});
              }},
             {"owner", [&](auto& v, auto& p) { l.owner = String(v, p); }},
             {"group", [&](auto& v, auto& p) { l.group = String(v, p); }},
             {"mode", [&](auto& v, auto& p) { l.mode = Mode(v, p); }},
             {"hardlink_prefill", [&](auto& v, auto& p) { l.hardlink_prefill = Bool(v, p); }}});
  }

  void ParseRbd(const YAML::Node& node, const std::string& path, RbdBackendOptions& r) {
    Section(node, path,
            {{"conf", [&](auto& v, auto& p) { r.conf = PathValue(v, p); }},
             {"client", [&](auto& v, auto& p) { r.client = String(v, p); }},
             {"keyring", [&](auto& v, auto& p) { r.keyring = PathValue(v, p); }},
             {"pool", [&](auto& v, auto& p) { r.pool = String(v, p); }},
             {"namespace", [&](auto& v, auto& p) { r.namespace_ = String(v, p); }},
             {"queue_depth", [&](auto& v, auto& p) { r.queue_depth = Integer<uint32_t>(v, p); }},
             {"connect_timeout_s",
              [&](auto& v, auto& p) { r.connect_timeout_s = Integer<uint32_t>(v, p); }},
             {"op_timeout_s", [&](auto& v, auto& p) { r.op_timeout_s = Integer<uint32_t>(v, p); }},
             {"features", [&](auto& v, auto& p) { r.features = StringList(v, p); }}});
  }

  void ParseSource(const YAML::Node& node, const std::string& path, SourceOptions& s) {
    Section(node, path,
            {{"type",
              [&](auto& v, auto& p) {
                s.type = Enum<SourceType>(v, p, {{"glance", SourceType::kGlance},
                                                 {"file", SourceType::kFile}});
              }},
             {"glance", [&](auto& v, auto& p) { ParseGlance(v, p, s.glance); }},
             {"file", [&](auto& v, auto& p) { ParseFile(v, p, s.file); }},
             {"max_image_gb", [&](auto& v, auto& p) { s.max_image_gb = Number(v, p); }},
             {"allow_unverified", [&](auto& v, auto& p) { s.allow_unverified = Bool(v, p); }}});
  }

  void ParseGlance(const YAML::Node& node, const std::string& path, GlanceSourceOptions& g) {
    const auto seen = Section(
        node, path,
        {{"endpoint", [&](auto& v, auto& p) { g.endpoint = String(v, p); }},
         {"auth", [&](auto& v, auto& p) { ParseKeystone(v, p, g.auth); }},
         {"cloud", [&](auto& v, auto& p) { g.cloud = String(v, p); }},
         {"token", [&](auto& v, auto& p) { g.token = String(v, p); }},
         {"ca_file", [&](auto& v, auto& p) { g.ca_file = PathValue(v, p); }},
         {"client_cert", [&](auto& v, auto& p) { g.client_cert = PathValue(v, p); }},
         {"client_key", [&](auto& v, auto& p) { g.client_key = PathValue(v, p); }},
         {"timeout_s", [&](auto& v, auto& p) { g.timeout_s = Integer<uint32_t>(v, p); }},
         {"retries", [&](auto& v, auto& p) { g.retries = Integer<uint32_t>(v, p); }},
         {"direct_pools", [&](auto& v, auto& p) { g.direct_pools = StringList(v, p); }},
         {"min_rate_kib_s", [&](auto& v, auto& p) { g.min_rate_kib_s = Integer<uint32_t>(v, p); }},
         {"max_list_pages",
          [&](auto& v, auto& p) { g.max_list_pages = Integer<uint32_t>(v, p); }}});
    glance_endpoint_set_ = seen.count("endpoint") > 0;
    if (seen.count("auth") && g.auth.auth_url.empty()) {
      // Without it the section would be ignored and requests go out unauthenticated.
      Fail(node["auth"], Join(path, "auth.auth_url"),
           "missing: Keystone's URL (e.g. https://keystone.example:5000/v3) is needed with "
           "the auth section");
    }
    if (seen.count("auth") && seen.count("cloud")) {
      Fail(node["cloud"], Join(path, "cloud"), "set auth or cloud, not both");
    }
    // Secrets written in this file: doctor checks who may read it.
    if (!g.token.empty() || !g.auth.password.empty() ||
        !g.auth.application_credential_secret.empty()) {
      g.auth.credential_files.push_back(origin_);
    }
  }

  // The Glance source's credentials, in this order: source.glance.auth, then the cloud
  // named by source.glance.cloud, then source.glance.token, then $OS_CLOUD (the token
  // of $OS_AUTH_TOKEN is the source's last resort). With Keystone and no endpoint set,
  // the image endpoint comes from the catalog.
  void ResolveGlanceAuth(Options& o) {
    GlanceSourceOptions& g = o.source.glance;
    if (o.source.type != SourceType::kGlance) return;
    if (!g.auth.enabled()) {
      std::string why = "source.glance.cloud";
      if (g.cloud.empty() && g.token.empty()) {
        if (const char* env = std::getenv("OS_CLOUD"); env != nullptr && *env != '\0') {
          g.cloud = env;
          why = "$OS_CLOUD";
        }
      }
      if (!g.cloud.empty()) {
        const std::string endpoint = g.endpoint;
        config::ApplyCloud(g.cloud, why, g);
        if (glance_endpoint_set_) g.endpoint = endpoint;  // the config's own wins
        else if (g.endpoint == endpoint) g.endpoint.clear();  // no override: the catalog's
        return;
      }
    }
    if (g.auth.enabled() && !glance_endpoint_set_) g.endpoint.clear();
  }

  void ParseKeystone(const YAML::Node& node, const std::string& path, KeystoneAuthOptions& a) {
    auto s = [&](std::string& field) {
      return [&field, this](auto& v, auto& p) { field = String(v, p); };
    };
    Section(node, path,
            {{"auth_url", s(a.auth_url)},
             {"application_credential_id", s(a.application_credential_id)},
             {"application_credential_secret", s(a.application_credential_secret)},
             {"username", s(a.username)},
             {"user_id", s(a.user_id)},
             {"password", s(a.password)},
             {"user_domain_name", s(a.user_domain_name)},
             {"user_domain_id", s(a.user_domain_id)},
             {"project_name", s(a.project_name)},
             {"project_id", s(a.project_id)},
             {"project_domain_name", s(a.project_domain_name)},
             {"project_domain_id", s(a.project_domain_id)},
             {"region_name", s(a.region_name)},
             {"interface", s(a.interface)},
             {"renew_before_s",
              [&](auto& v, auto& p) { a.renew_before_s = Integer<uint32_t>(v, p); }}});
  }

  void ParseFile(const YAML::Node& node, const std::string& path, FileSourceOptions& f) {
    Section(node, path, {{"dir", [&](auto& v, auto& p) { f.dir = PathValue(v, p); }}});
  }

  void ParseCache(const YAML::Node& node, const std::string& path, CacheOptions& c) {
    // Cinder's names for the same settings; an operator may paste them from cinder.conf.
    auto max_size = [&](auto& v, auto& p) { c.max_size_gb = Number(v, p); };
    auto max_count = [&](auto& v, auto& p) { c.max_count = Integer<uint64_t>(v, p); };
    auto depth = [&](auto& v, auto& p) { c.max_clone_depth = Integer<int>(v, p); };
    const auto seen = Section(
        node, path,
        {{"max_size_gb", max_size},
         {"image_volume_cache_max_size_gb", max_size},
         {"max_count", max_count},
         {"image_volume_cache_max_count", max_count},
         {"max_clone_depth", depth},
         {"rbd_max_clone_depth", depth},
         {"size_accounting",
          [&](auto& v, auto& p) {
            c.size_accounting = Enum<SizeAccounting>(
                v, p,
                {{"provisioned", SizeAccounting::kProvisioned},
                 {"allocated", SizeAccounting::kAllocated}});
          }},
         {"stale_on_updated_at", [&](auto& v, auto& p) { c.stale_on_updated_at = Bool(v, p); }},
         {"instant_miss", [&](auto& v, auto& p) { c.instant_miss = Bool(v, p); }},
         {"instant_relay", [&](auto& v, auto& p) { c.instant_relay = String(v, p); }},
         {"source_check_interval_s",
          [&](auto& v, auto& p) { c.source_check_interval_s = Integer<uint32_t>(v, p); }},
         {"share_use_interval_s",
          [&](auto& v, auto& p) { c.share_use_interval_s = Integer<uint32_t>(v, p); }},
         {"events_max_age_days",
          [&](auto& v, auto& p) { c.events_max_age_days = Integer<uint32_t>(v, p); }},
         {"events_max_rows",
          [&](auto& v, auto& p) { c.events_max_rows = Integer<uint64_t>(v, p); }},
         // The free-space floor (validated in config_validate.cpp).
         {"min_free_percent", [&](auto& v, auto& p) { c.min_free_percent = Number(v, p); }},
         {"min_free_gb", [&](auto& v, auto& p) { c.min_free_gb = Number(v, p); }},
         {"on_no_room",
          [&](auto& v, auto& p) {
            c.on_no_room = Enum<OnNoRoom>(
                v, p, {{"uncached", OnNoRoom::kUncached}, {"refuse", OnNoRoom::kRefuse}});
          }},
         {"flatten_pinned_max",
          [&](auto& v, auto& p) { c.flatten_pinned_max = Integer<uint32_t>(v, p); }},
         {"flatten_pinned_budget_s",
          [&](auto& v, auto& p) { c.flatten_pinned_budget_s = Integer<uint32_t>(v, p); }}});
    const std::pair<const char*, const char*> aliases[] = {
        {"image_volume_cache_max_size_gb", "max_size_gb"},
        {"image_volume_cache_max_count", "max_count"},
        {"rbd_max_clone_depth", "max_clone_depth"}};
    for (const auto& [alias, key] : aliases) {
      if (seen.count(alias) && seen.count(key)) {
        const std::string alias_path = Join(path, alias);
        throw Error(Errc::kConfig, origin_ + ":" + std::to_string(lines_[alias_path]) + ": " +
                                       alias_path + ": is Cinder's name for " + Join(path, key) +
                                       ", which is set too; keep one of them");
      }
    }
  }

  void ParseConversion(const YAML::Node& node, const std::string& path, ConversionOptions& c) {
    Section(node, path,
            {{"dir", [&](auto& v, auto& p) { c.dir = PathValue(v, p); }},
             {"max_virtual_size_gb",
              [&](auto& v, auto& p) { c.max_virtual_size_gb = Number(v, p); }},
             {"qemu_img",
              [&](auto& v, auto& p) {
                // A bare program name is looked up in PATH; only a path is resolved.
                const std::string s = String(v, p);
                c.qemu_img = s.find('/') == std::string::npos ? s : PathValue(v, p);
              }},
             {"timeout_s", [&](auto& v, auto& p) { c.timeout_s = Integer<uint32_t>(v, p); }},
             {"cpu_limit_s", [&](auto& v, auto& p) { c.cpu_limit_s = Integer<uint32_t>(v, p); }},
             {"address_space_mb",
              [&](auto& v, auto& p) { c.address_space_mb = Integer<uint64_t>(v, p); }}});
  }

  void ParseLog(const YAML::Node& node, const std::string& path, LogOptions& l) {
    Section(node, path,
            {{"level", [&](auto& v, auto& p) { l.level = String(v, p); }},
             {"file", [&](auto& v, auto& p) { l.file = PathValue(v, p); }},
             {"max_file_mb", [&](auto& v, auto& p) { l.max_file_mb = Integer<uint32_t>(v, p); }},
             {"max_files", [&](auto& v, auto& p) { l.max_files = Integer<uint32_t>(v, p); }}});
  }

  std::string origin_;
  fs::path base_dir_;
  std::map<std::string, int> lines_;  // key path -> line, for rules checked afterwards
  bool glance_endpoint_set_ = false;  // source.glance.endpoint written in the file
};

}  // namespace

Options config::ParseYaml(std::string_view text, const std::string& origin,
                          const fs::path& base_dir) {
  return Parser(origin, base_dir).Parse(text);
}

}  // namespace cachemgr
