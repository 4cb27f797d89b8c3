// config/clouds_yaml.cpp: see clouds_yaml.h.
#include "config/clouds_yaml.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <system_error>
#include <vector>

#include "cachemgr/error.h"
#include "config/config_file.h"
#include "util/url.h"

namespace cachemgr::config {
namespace {

namespace fs = std::filesystem;

std::string Home() {
  const char* home = std::getenv("HOME");
  return home != nullptr ? home : "";
}

// "~/x" -> "$HOME/x", as openstacksdk reads paths.
std::string Expand(const std::string& path) {
  if (path.rfind("~/", 0) == 0 && !Home().empty()) return Home() + path.substr(1);
  return path;
}

// The first existing file of openstacksdk's search for `file` ("clouds.yaml" or
// "secure.yaml"); `env` names an explicit file that wins over the search.
std::optional<fs::path> Find(const std::string& file, const char* env,
                             std::vector<std::string>* searched) {
  std::vector<fs::path> where;
  if (const char* e = std::getenv(env); e != nullptr && *e != '\0') where.emplace_back(e);
  where.emplace_back(fs::current_path() / file);
  if (!Home().empty()) where.emplace_back(fs::path(Home()) / ".config/openstack" / file);
  where.emplace_back(fs::path("/etc/openstack") / file);
  for (const auto& p : where) {
    std::error_code ec;
    if (searched) searched->push_back(p.string());
    if (fs::exists(p, ec)) return p;
  }
  return std::nullopt;
}

YAML::Node Load(const fs::path& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);  // through a symlink, as openstacksdk reads it
  if (!ec && !fs::is_regular_file(st)) {
    throw Error(Errc::kConfig, path.string() + ": not a regular file (" +
                                   (fs::is_directory(st) ? "a directory" : "a FIFO, socket or device") +
                                   "); clouds.yaml and secure.yaml must be YAML files");
  }
  const std::string text = ReadConfigText(path);  // a regular file, bounded, no FIFO
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(Errc::kConfig, path.string() + ": invalid YAML: " + e.what());
  }
}

// Copies every key of `from` into `into`, maps merged key by key (secure.yaml over
// clouds.yaml).
void Merge(YAML::Node into, const YAML::Node& from) {
  if (!from.IsMap()) return;
  for (const auto& kv : from) {
    const std::string key = kv.first.as<std::string>("");
    if (kv.second.IsMap() && into[key].IsMap()) {
      Merge(into[key], kv.second);
    } else {
      into[key] = YAML::Clone(kv.second);
    }
  }
}

// `verify:` turning TLS verification off, in any spelling YAML 1.1 (and openstacksdk)
// reads as false: false, FALSE, no, No, off, n, 0.
bool VerifyOff(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull() || !node.IsScalar()) return false;
  if (node.Scalar() == "0") return true;
  try {
    return !node.as<bool>();
  } catch (const YAML::Exception&) {
    return false;  // a path to a CA bundle: verification on
  }
}

}  // namespace

void ApplyCloud(const std::string& name, const std::string& why, GlanceSourceOptions& g) {
  std::vector<std::string> searched;
  auto file = Find("clouds.yaml", "OS_CLIENT_CONFIG_FILE", &searched);
  if (!file) {
    std::string list;
    for (const auto& s : searched) list += (list.empty() ? "" : ", ") + s;
    throw Error(Errc::kConfig, why + " names cloud '" + name + "', but no clouds.yaml was found (" +
                                   list + "); write one, or set source.glance.auth");
  }
  const std::string where = file->string();
  YAML::Node root = Load(*file);
  YAML::Node cloud = root.IsMap() && root["clouds"].IsMap() ? root["clouds"][name] : YAML::Node();
  if (cloud.IsDefined() && !cloud.IsNull() && !cloud.IsMap()) {
    throw Error(Errc::kConfig, where + ": clouds." + name + ": expected a map (auth, region_name, "
                                       "...), got a " + (cloud.IsSequence() ? "list" : "value"));
  }
  if (!cloud.IsMap()) {
    std::string known;
    if (root.IsMap() && root["clouds"].IsMap()) {
      for (const auto& kv : root["clouds"]) {
        known += (known.empty() ? "" : ", ") + kv.first.as<std::string>("?");
      }
    }
    throw Error(Errc::kConfig, where + ": no cloud '" + name + "' (named by " + why + "); " +
                                   (known.empty() ? "the file has no clouds" : "it has: " + known));
  }
  cloud = YAML::Clone(cloud);
  // A file is listed for doctor's permission check only when it holds a secret.
  auto holds_secret = [](const YAML::Node& c) {
    const YAML::Node a = c.IsMap() ? c["auth"] : YAML::Node();
    if (!a.IsMap()) return false;
    for (const char* key : {"password", "application_credential_secret", "token"}) {
      if (a[key].IsDefined() && !a[key].IsNull()) return true;
    }
    return false;
  };
  if (holds_secret(cloud)) g.auth.credential_files.push_back(where);
  if (auto secure = Find("secure.yaml", "OS_CLIENT_SECURE_FILE", nullptr)) {
    YAML::Node s = Load(*secure);
    if (s.IsMap() && s["clouds"].IsMap() && s["clouds"][name].IsMap()) {
      Merge(cloud, s["clouds"][name]);
      if (holds_secret(s["clouds"][name])) g.auth.credential_files.push_back(secure->string());
    }
  }

  // `prefix`: the key path within the cloud ("" or "auth."), for messages.
  auto text = [&](const YAML::Node& node, const std::string& key,
                  const std::string& prefix = "") -> std::string {
    if (!node.IsMap() || !node[key].IsDefined() || node[key].IsNull()) return "";
    if (!node[key].IsScalar()) {
      throw Error(Errc::kConfig,
                  where + ": clouds." + name + "." + prefix + key + ": expected a string");
    }
    return node[key].Scalar();
  };
  const YAML::Node auth = cloud["auth"];
  if (!auth.IsMap()) {
    throw Error(Errc::kConfig, where + ": clouds." + name + ".auth: missing (it holds auth_url "
                                       "and the credentials)");
  }
  KeystoneAuthOptions& a = g.auth;
  const std::map<std::string, std::string*> fields = {
      {"auth_url", &a.auth_url},
      {"application_credential_id", &a.application_credential_id},
      {"application_credential_secret", &a.application_credential_secret},
      {"username", &a.username},
      {"user_id", &a.user_id},
      {"password", &a.password},
      {"user_domain_name", &a.user_domain_name},
      {"user_domain_id", &a.user_domain_id},
      {"project_name", &a.project_name},
      {"project_id", &a.project_id},
      {"project_domain_name", &a.project_domain_name},
      {"project_domain_id", &a.project_domain_id}};
  for (const auto& [key, field] : fields) {
    if (std::string v = text(auth, key, "auth."); !v.empty()) *field = v;
  }
  // Older clouds.yaml spell the project as a tenant, or give one domain for both.
  if (a.project_name.empty()) a.project_name = text(auth, "tenant_name", "auth.");
  if (a.project_id.empty()) a.project_id = text(auth, "tenant_id", "auth.");
  if (std::string d = text(auth, "domain_name", "auth."); !d.empty()) {
    if (text(auth, "user_domain_name", "auth.").empty()) a.user_domain_name = d;
    if (text(auth, "project_domain_name", "auth.").empty()) a.project_domain_name = d;
  }
  if (a.auth_url.empty()) {
    throw Error(Errc::kConfig, where + ": clouds." + name + ".auth.auth_url: missing");
  }
  if (util::HasUserInfo(a.auth_url)) {
    throw Error(Errc::kConfig, where + ": clouds." + name + ".auth.auth_url: credentials in the "
                                       "URL (user:password@) are refused (got '" +
                                       util::WithoutUserInfo(a.auth_url) + "')");
  }
  if (a.auth_url.rfind("http://", 0) != 0 && a.auth_url.rfind("https://", 0) != 0) {
    throw Error(Errc::kConfig, where + ": clouds." + name + ".auth.auth_url: '" + a.auth_url +
                                   "' is not an http:// or https:// URL");
  }
  const std::string type = text(cloud, "auth_type");
  const bool app = type == "v3applicationcredential" || type == "applicationcredential";
  if (!type.empty() && !app && type != "password" && type != "v3password") {
    throw Error(Errc::kConfig, where + ": clouds." + name + ".auth_type: '" + type +
                                   "' is not spoken here; use password or "
                                   "v3applicationcredential (or source.glance.token)");
  }
  if (app && a.application_credential_id.empty()) {
    throw Error(Errc::kConfig, where + ": clouds." + name +
                                   ".auth.application_credential_id: missing (an application "
                                   "credential by name is not supported; give its id)");
  }
  if (!app && !type.empty()) {  // password auth named: an application credential is ignored
    a.application_credential_id.clear();
    a.application_credential_secret.clear();
  }

  if (std::string v = text(cloud, "region_name"); !v.empty()) a.region_name = v;
  if (std::string v = text(cloud, "interface"); !v.empty()) a.interface = v;
  if (std::string v = text(cloud, "endpoint_type"); !v.empty() && text(cloud, "interface").empty())
    a.interface = v;
  if (a.interface == "publicURL") a.interface = "public";
  if (a.interface == "internalURL") a.interface = "internal";
  if (a.interface == "adminURL") a.interface = "admin";
  if (a.interface != "public" && a.interface != "internal" && a.interface != "admin") {
    throw Error(Errc::kConfig, where + ": clouds." + name + ".interface: '" + a.interface +
                                   "' is not public, internal or admin");
  }
  if (VerifyOff(cloud["verify"])) {
    throw Error(Errc::kConfig, where + ": clouds." + name +
                                   ".verify: false: cachemgr always verifies TLS; set cacert to "
                                   "the CA that signed the endpoints' certificates");
  }
  if (std::string v = text(cloud, "cacert"); !v.empty()) g.ca_file = Expand(v);
  if (std::string v = text(cloud, "cert"); !v.empty()) g.client_cert = Expand(v);
  if (std::string v = text(cloud, "key"); !v.empty()) g.client_key = Expand(v);
  if (std::string v = text(cloud, "image_endpoint_override"); !v.empty()) g.endpoint = v;
}

}  // namespace cachemgr::config
