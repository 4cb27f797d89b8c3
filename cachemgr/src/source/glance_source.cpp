// The Glance v2 image API as a Source.
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cachemgr/error.h"
#include "util/json_field.h"
#include "source/http.h"
#include "source/keystone.h"
#include "source/secrets.h"
#include "source/source.h"

namespace cachemgr::source {
namespace {

using json = nlohmann::json;

// No disk is this large (librbd's own limit is lower): a bigger "size" is a lie.
constexpr uint64_t kPlausibleBytes = 1ull << 60;
// An answer of the JSON API larger than this is not Glance's (a page of 200 images with
// long location lists is well under 1 MiB).
constexpr size_t kMaxJsonBytes = 64ull << 20;

// A byte count from the source: absent or null is nullopt; anything but a whole number
// in 0..kPlausibleBytes is recorded in `invalid` (and nullopt).
std::optional<uint64_t> Bytes(const json& j, const char* key, std::vector<std::string>* invalid) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  std::string shown = it->dump();
  if (shown.size() > 40) shown = shown.substr(0, 40) + "...";
  if (it->is_number_unsigned()) {
    uint64_t v = it->get<uint64_t>();
    if (v <= kPlausibleBytes) return v;
    invalid->push_back(std::string(key) + ": " + shown + " bytes is beyond any disk");
  } else if (it->is_number_integer()) {
    invalid->push_back(std::string(key) + ": " + shown + " is negative");
  } else if (it->is_number_float()) {
    invalid->push_back(std::string(key) + ": " + shown + " is not a whole number of bytes");
  } else {
    invalid->push_back(std::string(key) + ": " + shown + " is not a number");
  }
  return std::nullopt;
}

ImageMeta ParseImage(const json& j) {
  ImageMeta m;
  m.id = util::JsonString(j, "id");
  m.status = util::JsonString(j, "status");
  m.disk_format = util::JsonString(j, "disk_format");
  m.container_format = util::JsonString(j, "container_format");
  m.size = Bytes(j, "size", &m.invalid);
  m.virtual_size = Bytes(j, "virtual_size", &m.invalid);
  m.checksum = util::JsonString(j, "checksum");
  m.os_hash_algo = util::JsonString(j, "os_hash_algo");
  m.os_hash_value = util::JsonString(j, "os_hash_value");
  m.updated_at = util::JsonString(j, "updated_at");
  m.direct_url = util::JsonString(j, "direct_url");
  if (auto it = j.find("locations"); it != j.end() && it->is_array()) {
    for (const auto& loc : *it) {
      if (loc.is_object()) {
        std::string url = util::JsonString(loc, "url");
        if (!url.empty()) m.locations.push_back(url);
      }
    }
  }
  return m;
}

// Parses "bytes START-END/TOTAL"; returns START or -1.
int64_t ContentRangeStart(const std::string& value) {
  auto pos = value.find("bytes ");
  if (pos == std::string::npos) return -1;
  char* end = nullptr;
  const char* p = value.c_str() + pos + 6;
  long long start = std::strtoll(p, &end, 10);
  if (end == p || *end != '-') return -1;
  return start;
}

constexpr const char* kImageList = "image list";

class GlanceSource final : public Source {
 public:
  GlanceSource(const GlanceSourceOptions& options, std::shared_ptr<spdlog::logger> logger)
      : options_(options), logger_(std::move(logger)) {
    if (!logger_) logger_ = std::make_shared<spdlog::logger>("cachemgr-null");
    http_.ca_file = options_.ca_file;
    http_.client_cert = options_.client_cert;
    http_.client_key = options_.client_key;
    http_.timeout_s = options_.timeout_s == 0 ? 30 : options_.timeout_s;
    if (options_.auth.enabled()) {
      keystone_ = std::make_unique<KeystoneSession>(options_.auth, http_, logger_);
    } else if (options_.token.empty()) {
      if (const char* env = std::getenv("OS_AUTH_TOKEN"); env && *env) options_.token = env;
    }
    if (!options_.endpoint.empty()) {
      SetEndpoint(options_.endpoint);
    } else if (!keystone_) {
      throw Error(Errc::kConfig,
                  "source.glance.endpoint: empty; set it, or source.glance.auth to find it in "
                  "Keystone's catalog");
    }
  }

  std::string kind() const override { return "glance"; }

  ImageMeta Describe(const std::string& image_id) override {
    ValidateImageId(image_id);
    json j = GetJson("/v2/images/" + image_id, "image " + image_id);
    ImageMeta m = ParseImage(j);
    if (m.id != image_id) {
      throw Error(Errc::kSource, "image " + image_id + ": Glance answered for image '" + m.id + "'");
    }
    RequireBounded(m, {});
    return m;
  }

  std::vector<ImageMeta> ListActive() override {
    return ListPages("/v2/images?status=active&limit=200", /*active_only=*/true);
  }

  // Every image visible to the token, any status, in pages as large as Glance gives
  // (api_limit_max, 1000 by default): a pass over thousands of entries is a few GETs.
  // Glance's list API has no field selection; each page is bounded (kMaxJsonBytes).
  std::optional<std::vector<ImageMeta>> ListForCheck() override {
    return ListPages("/v2/images?limit=1000", /*active_only=*/false);
  }

  uint64_t Requests() const override { return requests_.load(); }

  std::vector<ImageMeta> ListPages(std::string path, bool active_only) {
    std::vector<ImageMeta> out;
    std::set<std::string> seen = {path};
    for (uint32_t page = 1;; ++page) {
      json j = GetJson(path, kImageList);
      size_t images = 0;
      if (auto it = j.find("images"); it != j.end() && it->is_array()) {
        for (const auto& img : *it) {
          ImageMeta m = ParseImage(img);
          ++images;
          if (!active_only || m.status == "active") out.push_back(std::move(m));
        }
      }
      std::string next = util::JsonString(j, "next");
      if (next.empty()) break;
      // Glance's next is "/v2/images?marker=<last id>&...": anything else is not a page
      // of this listing, and a listing that does not end is not Glance's.
      std::string shown = next.size() > 200 ? next.substr(0, 200) + "..." : next;
      if (next.rfind(Base() + "/", 0) == 0) next = next.substr(endpoint_.size());
      if (next.rfind("/v2/images?", 0) != 0) {
        throw Error(Errc::kSource, "image list: Glance's next link '" + shown +
                                       "' is not a page of " + endpoint_ +
                                       "/v2/images; listing stopped");
      }
      if (!seen.insert(next).second) {
        throw Error(Errc::kSource, "image list: Glance's next link '" + shown +
                                       "' repeats an earlier page; listing stopped after " +
                                       std::to_string(page) + " page(s)");
      }
      if (images == 0) {
        throw Error(Errc::kSource, "image list: Glance sent an empty page with a next link '" +
                                       shown + "'; listing stopped");
      }
      if (page >= options_.max_list_pages) {
        throw Error(Errc::kSource, "image list: more than " + std::to_string(page) +
                                       " pages (source.glance.max_list_pages); listing stopped");
      }
      path = next;
    }
    return out;
  }

  std::vector<std::string> DirectPools() override {
    if (options_.direct_pools) return *options_.direct_pools;
    std::lock_guard lock(pools_mu_);
    if (store_pools_) return *store_pools_;
    std::vector<std::string> pools;
    try {
      // Glance with enabled_backends (multi-store) tells its stores to admins.
      json j = GetJson("/v2/info/stores/detail", "store list");
      if (auto it = j.find("stores"); it != j.end() && it->is_array()) {
        for (const auto& store : *it) {
          if (!store.is_object() || util::JsonString(store, "type") != "rbd") continue;
          auto props = store.find("properties");
          if (props == store.end() || !props->is_object()) continue;
          std::string pool = util::JsonString(*props, "pool");
          if (!pool.empty()) pools.push_back(pool);
        }
      }
      std::string list;
      for (const auto& pool : pools) list += (list.empty() ? "" : ",") + pool;
      logger_->info("glance rbd store pools pools={}", list);
    } catch (const Error& e) {
      logger_->info(
          "glance rbd store pools unknown, direct clones off unless source.glance.direct_pools "
          "names them error=\"{}\"",
          e.what());
    }
    store_pools_ = pools;
    return pools;
  }

  uint64_t Download(const std::string& image_id, const Sink& sink,
                    const ProgressFn& progress) override {
    return Download(image_id, DownloadBounds{}, sink, progress);
  }

  uint64_t Download(const std::string& image_id, const DownloadBounds& bounds, const Sink& sink,
                    const ProgressFn& progress) override {
    ValidateImageId(image_id);
    const std::string url = Base() + "/v2/images/" + image_id + "/file";
    bool reauthenticated = false;
    const std::string what = "image " + image_id;
    uint64_t done = 0;      // bytes handed to the sink
    uint64_t total = bounds.size.value_or(0);  // declared, else the first Content-Length
    bool range_ok = true;   // the server honours Range on this image
    uint32_t failures = 0;
    // The whole download, retries included, must end by the deadline: a trickle that
    // keeps the low-speed limit happy still fails.
    const uint64_t expected = bounds.size ? *bounds.size : bounds.max_bytes;
    const uint64_t rate = std::max<uint64_t>(options_.min_rate_kib_s, 1) * 1024;
    const bool has_deadline = bounds.size || bounds.max_bytes;
    const uint64_t budget_ms =
        http_.timeout_s * 1000ull + expected / rate * 1000 + (expected % rate) * 1000 / rate;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(budget_ms);
    auto timed_out = [&] {
      return Error(Errc::kTimeout,
                   what + ": download did not finish within " + std::to_string(budget_ms / 1000) +
                       " s (source.glance.timeout_s " + std::to_string(http_.timeout_s) + " + " +
                       std::to_string(expected) + " bytes at source.glance.min_rate_kib_s " +
                       std::to_string(options_.min_rate_kib_s) + "); got " + std::to_string(done) +
                       " bytes in " + std::to_string(failures + 1) + " attempt(s)");
    };
    while (true) {
      HttpOptions http = http_;
      http.low_speed_bytes_s = rate;
      if (has_deadline) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) throw timed_out();
        http.total_timeout_ms = static_cast<uint64_t>(left.count());
      }
      std::string token;
      std::vector<std::string> headers = AuthHeaders(&token);
      if (done > 0 && range_ok) headers.push_back("Range: bytes=" + std::to_string(done) + "-");
      uint64_t skip = 0;  // bytes of this response the sink already has
      uint64_t seen = 0;  // bytes of this response so far
      bool partial = false;
      auto on_start = [&](long status, const std::map<std::string, std::string>& h) {
        if (status == 206) {
          auto it = h.find("content-range");
          int64_t start = it == h.end() ? -1 : ContentRangeStart(it->second);
          if (start != static_cast<int64_t>(done)) {
            throw Error(Errc::kSource, what + ": Glance answered a Range request for byte " +
                                           std::to_string(done) + " from byte " +
                                           std::to_string(start));
          }
          partial = true;
        } else if (status == 200) {
          // A full body: either the first attempt, or a server that ignores Range. The
          // sink must see each byte once, so the part it already has is skipped.
          skip = done;
          if (auto it = h.find("content-length"); it != h.end()) {
            uint64_t length = std::strtoull(it->second.c_str(), nullptr, 10);
            // Longer than declared: refused before a byte is read. (Shorter: the body
            // ends early and is reported as truncated.)
            if (bounds.size && length > *bounds.size) {
              throw Error(Errc::kCorrupt, what +
                                              ": body longer than its declared size: Glance "
                                              "sends " +
                                              std::to_string(length) +
                                              " bytes for an image it says is " +
                                              std::to_string(*bounds.size) + " bytes");
            }
            if (total == 0) total = length;
          }
        }
      };
      auto on_body = [&](std::span<const std::byte> data) {
        uint64_t before = seen;
        seen += data.size();
        if (!partial && before < skip) {
          uint64_t drop = std::min<uint64_t>(skip - before, data.size());
          data = data.subspan(static_cast<size_t>(drop));
        }
        if (data.empty()) return;
        if (bounds.size && done + data.size() > *bounds.size) {
          throw Error(Errc::kCorrupt, what + ": body longer than its declared size " +
                                          std::to_string(*bounds.size) + " bytes");
        }
        if (!bounds.size && bounds.max_bytes && done + data.size() > bounds.max_bytes) {
          throw Error(Errc::kRefused, what + ": no declared size and the body passed " +
                                          std::to_string(bounds.max_bytes) +
                                          " bytes (source.max_image_gb)");
        }
        sink(data);
        done += data.size();
        if (progress) progress(done, total);
      };
      requests_.fetch_add(1);
      HttpResult r = HttpGet(url, headers, http, on_start, on_body);

      bool short_body = false;
      if (!r.transport_error() && (r.status == 200 || r.status == 206)) {
        if (total != 0 && done < total) {
          // The body ended early without curl noticing (no Content-Length on a retry).
          short_body = true;
          r.curl_code = 18;  // CURLE_PARTIAL_FILE
          r.curl_error = "body ended at byte " + std::to_string(done) + " of " +
                         std::to_string(total);
        } else {
          return done;
        }
      }
      if (!r.transport_error()) {
        if (r.status == 204) {
          throw Error(Errc::kNotFound, what + ": Glance has no data for it (HTTP 204; "
                                              "status queued?)");
        }
        if (done > 0 && range_ok && (r.status == 416 || r.status == 400)) {
          // This store does not do Range (Glance's rbd store answers 400): start over
          // and skip what the sink already has.
          logger_->info("glance download restarts without Range image={} at={} status={}",
                        image_id, done, r.status);
          range_ok = false;
          continue;
        }
        if (Reauthenticate(r, token, &reauthenticated)) continue;
        if (r.status < 500) ThrowForStatus(r, what, token);
      }
      if (has_deadline && r.timed_out() && std::chrono::steady_clock::now() >= deadline) {
        throw timed_out();
      }
      // A 5xx or a dropped / stalled connection: retry with backoff, resuming.
      if (failures >= options_.retries) {
        if (short_body || r.curl_code == 18 /* CURLE_PARTIAL_FILE */) {
          throw Error(Errc::kCorrupt, what + ": truncated download: got " + std::to_string(done) +
                                          " of " + std::to_string(total) + " bytes after " +
                                          std::to_string(failures + 1) + " attempt(s) (" +
                                          r.curl_error + ")");
        }
        if (r.transport_error()) {
          throw Error(r.timed_out() ? Errc::kTimeout : Errc::kSource,
                      what + ": download failed after " + std::to_string(failures + 1) +
                          " attempt(s) at byte " + std::to_string(done) + ": " + r.curl_error +
                          (r.timed_out() ? " (slower than source.glance.min_rate_kib_s " +
                                               std::to_string(options_.min_rate_kib_s) +
                                               " for source.glance.timeout_s " +
                                               std::to_string(http_.timeout_s) + " s)"
                                         : std::string()));
        }
        ThrowForStatus(r, what, token);
      }
      if (r.transport_error() && !r.retryable_transport()) {
        throw Error(Errc::kSource,
                    what + ": download from " + endpoint_ + " failed: " + r.transport_message());
      }
      ++failures;
      auto delay = Backoff(failures);
      logger_->warn("glance download retry image={} attempt={} at={} cause=\"{}\" delay_ms={}",
                    image_id, failures, done,
                    r.transport_error() ? r.curl_error : "HTTP " + std::to_string(r.status),
                    delay.count());
      std::this_thread::sleep_for(delay);
    }
  }

  void ReadRange(const std::string& image_id, uint64_t offset, std::span<std::byte> out) override {
    ValidateImageId(image_id);
    if (out.empty()) return;
    const std::string what = "image " + image_id + " bytes " + std::to_string(offset) + "-" +
                             std::to_string(offset + out.size() - 1);
    const std::string range = "Range: bytes=" + std::to_string(offset) + "-" +
                              std::to_string(offset + out.size() - 1);
    bool reauthenticated = false;
    for (uint32_t failures = 0;; ++failures) {
      std::string token;
      std::vector<std::string> headers = AuthHeaders(&token);
      headers.push_back(range);
      size_t got = 0;
      auto on_start = [&](long status, const std::map<std::string, std::string>& h) {
        if (status < 200 || status >= 300) return;
        auto it = h.find("content-range");
        if (status != 206 || it == h.end() ||
            ContentRangeStart(it->second) != static_cast<int64_t>(offset)) {
          throw Error(Errc::kSource, what + ": Glance did not answer the Range read with "
                                            "those bytes (HTTP " + std::to_string(status) + ")");
        }
      };
      auto on_body = [&](std::span<const std::byte> data) {
        if (data.size() > out.size() - got) {
          throw Error(Errc::kSource, what + ": Glance sent more bytes than asked");
        }
        std::memcpy(out.data() + got, data.data(), data.size());
        got += data.size();
      };
      requests_.fetch_add(1);
      HttpResult r = HttpGet(Base() + "/v2/images/" + image_id + "/file", headers, http_,
                             on_start, on_body);
      if (!r.transport_error() && r.status == 206 && got == out.size()) return;
      if (!r.transport_error() && (r.status == 206 || r.status == 416)) {  // final: not there
        throw Error(Errc::kCorrupt, what + (r.status == 416 ? ": Glance has no such bytes"
                                                            : ": Glance sent fewer bytes"));
      }
      if (!r.transport_error() && Reauthenticate(r, token, &reauthenticated)) continue;
      if (!r.transport_error() && r.status < 500) ThrowForStatus(r, what, token);
      if (failures >= options_.retries) {
        if (!r.transport_error()) ThrowForStatus(r, what, token);
        throw Error(Errc::kSource, what + ": " + r.transport_message());
      }
      std::this_thread::sleep_for(Backoff(failures + 1));
    }
  }

  std::optional<LocalFile> OpenLocal(const std::string&) override { return std::nullopt; }

  // Authenticates (with Keystone), finds the endpoint (in the catalog) and lists one
  // image: every step a create takes before its download.
  std::string Ping() override {
    GetJson("/v2/images?limit=1", kImageList);
    std::string detail = "Glance at " + Base() + ": answers";
    if (keystone_) {
      detail += options_.endpoint.empty() ? " (endpoint from the catalog)" : "";
      detail += "; authenticated at " + keystone_->auth_url() + " as " + keystone_->who();
    } else {
      detail += options_.token.empty() ? " (no token sent)" : " (with a static token)";
    }
    return detail;
  }

 private:
  void SetEndpoint(std::string url) {
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (HasUserInfo(url)) {
      throw Error(Errc::kConfig, "source.glance.endpoint: '" + WithoutUserInfo(url) +
                                     "' with credentials in the URL (user:password@) is "
                                     "refused; use source.glance.auth or token");
    }
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      throw Error(Errc::kConfig,
                  "source.glance.endpoint: '" + url + "' is not an http:// or https:// URL");
    }
    // Catalogs (and operators) often give the versioned URL ".../v2": every path here
    // starts with /v2 itself, as keystoneauth's discovery would find the root.
    if (const size_t slash = url.rfind('/'); slash != std::string::npos && slash > 8) {
      const std::string last = url.substr(slash + 1);
      const bool version = last == "v1" || last == "v2" ||
                           (last.rfind("v2.", 0) == 0 && last.size() > 3 &&
                            last.find_first_not_of("0123456789", 3) == std::string::npos);
      if (version) url.resize(slash);
    }
    endpoint_ = url;
  }

  // The Glance base URL: configured, else the catalog's (looked up once, on first use).
  const std::string& Base() {
    std::call_once(endpoint_once_, [this] {
      if (endpoint_.empty()) {
        SetEndpoint(keystone_->Endpoint("image"));
        logger_->info("glance endpoint from the keystone catalog endpoint={}", endpoint_);
      }
    });
    return endpoint_;
  }

  // Headers of one request; `token` gets the token sent (for Invalidate on a 401).
  std::vector<std::string> AuthHeaders(std::string* token = nullptr) {
    std::vector<std::string> h;
    std::string t = keystone_ ? keystone_->Token() : options_.token;
    if (!t.empty()) h.push_back("X-Auth-Token: " + t);
    if (token) *token = t;
    return h;
  }

  // A 401 with a Keystone token: the token is dropped and the request made once more
  // with a new one; true when that is worth doing.
  bool Reauthenticate(const HttpResult& r, const std::string& token, bool* done_once) {
    if (r.transport_error() || r.status != 401 || !keystone_ || *done_once) return false;
    *done_once = true;
    logger_->info("glance refused the token, authenticating again endpoint={}", endpoint_);
    keystone_->Invalidate(token);
    return true;
  }

  static std::chrono::milliseconds Backoff(uint32_t failures) {
    // 200 ms, 400 ms, 800 ms, ... capped at 10 s.
    uint64_t ms = 200ull << std::min<uint32_t>(failures - 1, 6);
    return std::chrono::milliseconds(std::min<uint64_t>(ms, 10000));
  }

  // `token`: the one the request carried, never shown even if the answer echoes it.
  [[noreturn]] void ThrowForStatus(const HttpResult& r, const std::string& what,
                                   const std::string& token) const {
    std::string body = Redact(r.error_body, {token, options_.token, options_.auth.password,
                                             options_.auth.application_credential_secret});
    // Glance's error pages are small HTML; keep one line of them (cut after redacting).
    for (char& c : body) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    if (body.size() > 300) body.resize(300);
    std::string detail = " (" + endpoint_ + ")";
    switch (r.status) {
      case 401:
        throw Error(Errc::kUnauthorized,
                    what + ": Glance refused the credentials (HTTP 401)" + detail);
      case 403:
        throw Error(Errc::kUnauthorized, what + ": access forbidden (HTTP 403)" + detail);
      case 404:
        // The list of images is never missing from a Glance: a 404 there means the URL is
        // not Glance's API root, and no 404 from it says that an image is gone.
        if (what == kImageList) {
          throw Error(Errc::kSource, what + ": HTTP 404 from " + endpoint_ +
                                         "/v2/images: is source.glance.endpoint (or the "
                                         "catalog's image endpoint) Glance's API root?");
        }
        throw Error(Errc::kNotFound, what + ": not found in Glance (HTTP 404)" + detail);
      default:
        throw Error(Errc::kSource,
                    what + ": Glance answered HTTP " + std::to_string(r.status) + detail + ": " + body);
    }
  }

  json GetJson(const std::string& path, const std::string& what) {
    HttpOptions o = http_;
    o.total_timeout_s = http_.timeout_s * 4;
    uint32_t failures = 0;
    bool reauthenticated = false;
    while (true) {
      std::string body;
      requests_.fetch_add(1);
      std::string token;
      std::vector<std::string> headers = AuthHeaders(&token);
      HttpResult r =
          HttpGet(Base() + path, headers, o, {}, [&](std::span<const std::byte> data) {
            if (body.size() + data.size() > kMaxJsonBytes) {
              throw Error(Errc::kSource, what + ": Glance's answer is larger than " +
                                             std::to_string(kMaxJsonBytes >> 20) + " MiB");
            }
            body.append(reinterpret_cast<const char*>(data.data()), data.size());
          });
      if (!r.transport_error() && r.status >= 200 && r.status < 300) {
        try {
          return json::parse(body);
        } catch (const json::exception& e) {
          throw Error(Errc::kSource, what + ": Glance sent invalid JSON: " + e.what());
        }
      }
      if (Reauthenticate(r, token, &reauthenticated)) continue;
      if (!r.transport_error() && r.status < 500) ThrowForStatus(r, what, token);
      if (r.transport_error() && !r.retryable_transport()) {
        throw Error(Errc::kSource,
                    what + ": cannot reach Glance at " + endpoint_ + ": " + r.transport_message());
      }
      if (failures >= options_.retries) {
        if (r.transport_error()) {
          throw Error(r.timed_out() ? Errc::kTimeout : Errc::kSource,
                      what + ": cannot reach Glance at " + endpoint_ + " after " +
                          std::to_string(failures + 1) + " attempt(s): " + r.transport_message());
        }
        ThrowForStatus(r, what, token);
      }
      ++failures;
      std::this_thread::sleep_for(Backoff(failures));
    }
  }

  GlanceSourceOptions options_;
  std::shared_ptr<spdlog::logger> logger_;
  HttpOptions http_;
  std::unique_ptr<KeystoneSession> keystone_;  // with source.glance.auth
  std::once_flag endpoint_once_;
  std::string endpoint_;  // the Glance base URL, no trailing slash
  std::mutex pools_mu_;
  std::optional<std::vector<std::string>> store_pools_;  // from GET /v2/info/stores/detail
  std::atomic<uint64_t> requests_{0};
};

}  // namespace

std::unique_ptr<Source> MakeGlanceSource(const GlanceSourceOptions& options,
                                         std::shared_ptr<spdlog::logger> logger) {
  return std::make_unique<GlanceSource>(options, std::move(logger));
}

}  // namespace cachemgr::source
