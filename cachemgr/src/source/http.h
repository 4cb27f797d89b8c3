// source/http.h: one HTTP request over libcurl, body streamed to a callback.
//
// Used by the Glance source. TLS peer and host verification are always on; the caller
// may name a CA bundle. Nothing here retries: the caller decides what is worth retrying.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace cachemgr::source {

struct HttpOptions {
  std::string ca_file;      // empty: the system's CA store
  std::string client_cert;  // PEM client certificate for mutual TLS; empty: none
  std::string client_key;   // its PEM key; empty: in client_cert
  uint32_t timeout_s = 30;  // connect timeout, and the window of the low-speed limit
  uint32_t total_timeout_s = 0;  // whole request; 0 = none (downloads are long)
  uint64_t total_timeout_ms = 0;  // whole request in ms, when set (overrides total_timeout_s)
  // The low-speed limit: a transfer slower than this (bytes/s, averaged over timeout_s)
  // fails. 1 catches a stall; downloads set the source's minimum rate, so a trickle fails
  // within timeout_s whatever size the source declared.
  uint64_t low_speed_bytes_s = 1;
};

struct HttpResult {
  long status = 0;        // HTTP status; 0 when no response arrived
  int curl_code = 0;      // CURLcode; 0 = the transfer completed
  std::string curl_error; // curl's message when curl_code != 0
  std::map<std::string, std::string> headers;  // of the final response, names lowercase
  std::string error_body;  // first bytes of a non-2xx body (for error messages)
  uint64_t body_bytes = 0; // 2xx body bytes handed to on_body
  bool https = false;      // the URL was https (a dropped connection may be TLS refusing us)
  bool transport_error() const { return curl_code != 0; }
  // The connection failed or dropped, or the transfer stalled: worth a retry.
  bool retryable_transport() const;
  bool timed_out() const;
  // curl's message, and for a TLS failure (an unknown CA, an expired certificate, a
  // name mismatch, a client certificate refused) what to check.
  std::string transport_message() const;
};

// Performs GET `url` with `headers` ("Name: value"). 2xx body bytes go to `on_body` in
// order; `on_start(status, headers)` runs once before the first one. An exception from
// a callback aborts the transfer and is rethrown from here.
HttpResult HttpGet(const std::string& url, const std::vector<std::string>& headers,
                   const HttpOptions& options,
                   const std::function<void(long, const std::map<std::string, std::string>&)>&
                       on_start,
                   const std::function<void(std::span<const std::byte>)>& on_body);

// POST `request` (headers name its type); the whole 2xx body returned in `body`
// (at most 16 MiB).
HttpResult HttpPostString(const std::string& url, const std::vector<std::string>& headers,
                          const std::string& request, const HttpOptions& options,
                          std::string* body);

// GET with the whole 2xx body returned in `body`.
HttpResult HttpGetString(const std::string& url, const std::vector<std::string>& headers,
                         const HttpOptions& options, std::string* body);

}  // namespace cachemgr::source
