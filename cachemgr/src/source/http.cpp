#include "source/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <memory>
#include <mutex>

#include "cachemgr/error.h"

namespace cachemgr::source {
namespace {

constexpr size_t kErrorBodyMax = 4096;
constexpr long kReceiveBuffer = 512 * 1024;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  CURL* curl = nullptr;
  const std::function<void(long, const std::map<std::string, std::string>&)>* on_start;
  const std::function<void(std::span<const std::byte>)>* on_body;
  HttpResult* result;
  bool started = false;
  long status = 0;
  std::exception_ptr error;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {
    t->result->headers.clear();  // a new response (after 100 Continue or a redirect)
    return size * n;
  }
  auto colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  size_t v = colon + 1;
  while (v < line.size() && (line[v] == ' ' || line[v] == '\t')) ++v;
  t->result->headers[name] = line.substr(v);
  return size * n;
}

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  try {
    if (!t->started) {
      t->started = true;
      curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->status);
      if (*t->on_start) (*t->on_start)(t->status, t->result->headers);
    }
    if (t->status >= 200 && t->status < 300) {
      if (*t->on_body) (*t->on_body)(std::span(reinterpret_cast<const std::byte*>(data), len));
      t->result->body_bytes += len;
    } else if (t->result->error_body.size() < kErrorBodyMax) {
      t->result->error_body.append(data,
                                   std::min(len, kErrorBodyMax - t->result->error_body.size()));
    }
  } catch (...) {
    t->error = std::current_exception();
    return 0;  // aborts the transfer: CURLE_WRITE_ERROR
  }
  return len;
}

}  // namespace

bool HttpResult::retryable_transport() const {
  switch (static_cast<CURLcode>(curl_code)) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_COULDNT_RESOLVE_HOST:
      return true;
    default:
      return false;
  }
}

bool HttpResult::timed_out() const { return curl_code == CURLE_OPERATION_TIMEDOUT; }

std::string HttpResult::transport_message() const {
  switch (static_cast<CURLcode>(curl_code)) {
    case CURLE_PEER_FAILED_VERIFICATION:
      return curl_error +
             " (TLS: the server's certificate was refused; check that source.glance.ca_file "
             "or the cloud's cacert is the CA that signed it, that it has not expired, and "
             "that its names include the host of the URL)";
    case CURLE_SSL_CONNECT_ERROR:
      return curl_error +
             " (TLS handshake failed; if the server asks for a client certificate, set "
             "source.glance.client_cert and client_key)";
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
      return curl_error + " (TLS: check the files named by source.glance.ca_file, "
                          "client_cert and client_key)";
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_COULDNT_CONNECT:
      // A server that wants a client certificate drops the connection after the
      // handshake (TLS 1.3): curl sees a reset, not a TLS error.
      if (https && (curl_code != CURLE_COULDNT_CONNECT ||
                    curl_error.find("getpeername") != std::string::npos)) {
        return curl_error +
               " (over https this is often the server refusing the TLS session: if it asks "
               "for a client certificate, set source.glance.client_cert and client_key)";
      }
      return curl_error;
    default:
      return curl_error;
  }
}

namespace {

HttpResult Perform(
    const std::string& url, const std::vector<std::string>& headers, const std::string* post_body,
    const HttpOptions& options,
    const std::function<void(long, const std::map<std::string, std::string>&)>& on_start,
    const std::function<void(std::span<const std::byte>)>& on_body) {
  GlobalInit();
  HttpResult result;
  result.https = url.rfind("https://", 0) == 0;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw Error(Errc::kInternal, "curl_easy_init failed");
  struct curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> list_guard(list,
                                                                         curl_slist_free_all);
  Transfer t{curl.get(), &on_start, &on_body, &result, false, 0, {}};
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  if (post_body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(post_body->size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body->data());
  }
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  // The default 16 KiB receive buffer means a write callback (hash copy, sink) per 16 KiB
  // and more recv() calls: image bodies are GiBs.
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, kReceiveBuffer);
  // Only http(s): a redirect to file:// or another scheme is never followed.
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!options.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options.ca_file.c_str());
  if (!options.client_cert.empty()) {
    curl_easy_setopt(c, CURLOPT_SSLCERT, options.client_cert.c_str());
  }
  if (!options.client_key.empty()) curl_easy_setopt(c, CURLOPT_SSLKEY, options.client_key.c_str());
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options.timeout_s));
  // A stalled or trickling transfer (under low_speed_bytes_s for timeout_s) fails instead
  // of hanging for as long as a lying size would allow.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT,
                   static_cast<long>(std::max<uint64_t>(options.low_speed_bytes_s, 1)));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options.timeout_s));
  if (options.total_timeout_ms > 0) {
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options.total_timeout_ms));
  } else if (options.total_timeout_s > 0) {
    curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(options.total_timeout_s));
  }
  CURLcode rc = curl_easy_perform(c);
  if (t.error) std::rethrow_exception(t.error);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &result.status);
  if (rc != CURLE_OK) {
    result.curl_code = rc;
    result.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  } else if (!t.started && on_start) {
    on_start(result.status, result.headers);  // an empty body (204, HEAD-like answers)
  }
  return result;
}

}  // namespace

HttpResult HttpGet(
    const std::string& url, const std::vector<std::string>& headers, const HttpOptions& options,
    const std::function<void(long, const std::map<std::string, std::string>&)>& on_start,
    const std::function<void(std::span<const std::byte>)>& on_body) {
  return Perform(url, headers, nullptr, options, on_start, on_body);
}

HttpResult HttpPostString(const std::string& url, const std::vector<std::string>& headers,
                          const std::string& request, const HttpOptions& options,
                          std::string* body) {
  body->clear();
  HttpResult r =
      Perform(url, headers, &request, options, {}, [body, &url](std::span<const std::byte> data) {
        if (body->size() + data.size() > (16u << 20)) {
          throw Error(Errc::kSource, url + ": answer larger than 16 MiB");
        }
        body->append(reinterpret_cast<const char*>(data.data()), data.size());
      });
  return r;
}

HttpResult HttpGetString(const std::string& url, const std::vector<std::string>& headers,
                         const HttpOptions& options, std::string* body) {
  body->clear();
  return HttpGet(url, headers, options, {}, [body](std::span<const std::byte> data) {
    body->append(reinterpret_cast<const char*>(data.data()), data.size());
  });
}

}  // namespace cachemgr::source
