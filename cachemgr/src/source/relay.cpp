// The relay of an instant miss from Glance (relay.h): libmicrohttpd serving HEAD and
// single-range GETs of registered images, each read from the source on demand.
#include "source/relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "cachemgr/error.h"
#include "util/hex.h"

namespace cachemgr::source {

namespace {

// librbd asks at most 32 MiB per range (its response body limit); a larger range is
// refused rather than buffered.
constexpr uint64_t kMaxRangeBytes = 64ull << 20;
// A connection idle this long is closed (librbd reconnects and sends again); a client that
// trickles a request is cut off by it too.
constexpr unsigned kConnectionTimeoutS = 60;
constexpr unsigned kMaxConnections = 512;
// One librbd client keeps one connection per image it opened: a host with this many VMs
// booting from one image at once is far off, one peer holding every slot is not.
constexpr unsigned kMaxConnectionsPerPeer = 64;

// Splits "HOST", "HOST:PORT", "[V6]" or "[V6]:PORT" (a bare IPv6 address has no port).
bool SplitHostPort(const std::string& s, std::string* host, std::string* port) {
  if (s.empty()) return false;
  if (s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string::npos) return false;
    *host = s.substr(1, close - 1);
    if (close + 1 == s.size()) {
      *port = "0";
      return true;
    }
    if (s[close + 1] != ':') return false;
    *port = s.substr(close + 2);
    return !port->empty();
  }
  const auto colon = s.find(':');
  if (colon == std::string::npos || s.find(':', colon + 1) != std::string::npos) {
    *host = s;  // IPv4 without a port, or a bare IPv6 address
    *port = "0";
    return true;
  }
  *host = s.substr(0, colon);
  *port = s.substr(colon + 1);
  return !host->empty() && !port->empty();
}

std::string NumericHostPort(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
  port = ntohs(a->sin_port);
  return std::string(host) + ":" + std::to_string(port);
}

// Parses "bytes=A-B" or "bytes=A-" (one range only); false for anything else.
bool ParseRange(const char* value, uint64_t size, uint64_t* first, uint64_t* last) {
  if (value == nullptr || std::strncmp(value, "bytes=", 6) != 0) return false;
  const char* p = value + 6;
  char* end = nullptr;
  errno = 0;
  // Digits only: strtoull alone would take " 5", "+5" and "-1" (a wrapped huge number).
  if (std::isdigit(static_cast<unsigned char>(*p)) == 0) return false;
  const unsigned long long a = std::strtoull(p, &end, 10);
  if (end == p || *end != '-' || errno != 0) return false;
  p = end + 1;
  unsigned long long b = size == 0 ? 0 : size - 1;
  if (*p != '\0') {
    if (std::isdigit(static_cast<unsigned char>(*p)) == 0) return false;
    b = std::strtoull(p, &end, 10);
    if (end == p || *end != '\0' || errno != 0 || b < a) return false;
  }
  *first = a;
  *last = std::min<uint64_t>(b, size == 0 ? 0 : size - 1);
  return true;
}

struct Served {
  std::string secret;
  uint64_t size = 0;
};

class MhdRelay final : public Relay {
 public:
  MhdRelay(int fd, Reader reader, std::shared_ptr<spdlog::logger> logger,
           std::vector<Image> serving)
      : fd_(fd), reader_(std::move(reader)), logger_(std::move(logger)) {
    // Registered before the daemon starts: its first accept may be a waiting client's.
    for (auto& i : serving) images_[i.image_id] = Served{std::move(i.secret), i.size};
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
      const int err = errno;
      ::close(fd_);
      throw Error(Errc::kInternal,
                  std::string("relay: its socket has no address: ") + std::strerror(err));
    }
    base_ = "http://" + NumericHostPort(ss);
    daemon_ = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                   MHD_USE_POLL | MHD_USE_ITC,
                               0, nullptr, nullptr, &MhdRelay::Handle, this,
                               MHD_OPTION_LISTEN_SOCKET, fd_, MHD_OPTION_CONNECTION_TIMEOUT,
                               kConnectionTimeoutS, MHD_OPTION_CONNECTION_LIMIT, kMaxConnections,
                               MHD_OPTION_PER_IP_CONNECTION_LIMIT, kMaxConnectionsPerPeer,
                               MHD_OPTION_END);
    if (daemon_ == nullptr) {
      // Not closed here: some libmicrohttpd failure paths close a given socket themselves.
      throw Error(Errc::kInternal, "relay: cannot serve on " + base_ + " (libmicrohttpd refused)");
    }
    logger_->info("relay listening url={}", base_);
  }

  ~MhdRelay() override {
    MHD_stop_daemon(daemon_);
    // A quiesced daemon leaves its socket to us; one never handed over closed it.
    if (handed_over_) ::close(fd_);
  }

  std::string BaseUrl() const override { return base_; }

  void Serve(const std::string& image_id, const std::string& secret, uint64_t size) override {
    std::lock_guard lock(mu_);
    images_[image_id] = Served{secret, size};
  }
  void Forget(const std::string& image_id) override {
    std::lock_guard lock(mu_);
    images_.erase(image_id);
  }
  size_t Serving() const override {
    std::lock_guard lock(mu_);
    return images_.size();
  }

  int HandOver() override {
    std::lock_guard lock(mu_);
    if (handed_over_) return -1;
    // The copy first: if it cannot be made, this relay goes on accepting.
    const int copy = ::fcntl(fd_, F_DUPFD_CLOEXEC, 10);  // the caller places it in a child
    if (copy < 0) return -1;
    if (MHD_quiesce_daemon(daemon_) == MHD_INVALID_SOCKET) {
      ::close(copy);
      return -1;
    }
    handed_over_ = true;
    logger_->info("relay handed over url={}", base_);
    return copy;
  }

  bool Serves(const std::string& image_id) const override {
    std::lock_guard lock(mu_);
    return images_.count(image_id) > 0;
  }

  uint64_t Requests() const override { return requests_.load(); }

 private:
  static MHD_Result Reply(MHD_Connection* c, unsigned status, const std::string& text) {
    MHD_Response* r = MHD_create_response_from_buffer(text.size(), const_cast<char*>(text.data()),
                                                      MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    const MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
  }

  static ssize_t NoBody(void*, uint64_t, char*, size_t) {
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }

  // Called once when the headers are in, then again until the request is whole: the
  // answer is queued on the last call (queued earlier, libmicrohttpd closes the
  // connection after it, which would break librbd's pipelining).
  static MHD_Result Handle(void* cls, MHD_Connection* c, const char* url, const char* method,
                           const char* /*version*/, const char* /*upload*/, size_t* upload_size,
                           void** state) {
    static int seen_marker;
    if (*state == nullptr) {
      *state = &seen_marker;
      return MHD_YES;
    }
    if (*upload_size != 0) {  // a body nobody asked for: read and dropped
      *upload_size = 0;
      return MHD_YES;
    }
    return static_cast<MhdRelay*>(cls)->Answer(c, url, method);
  }

  MHD_Result Answer(MHD_Connection* c, const char* url, const char* method) {
    requests_.fetch_add(1);
    const bool head = std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!head && std::strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
      return Reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET and HEAD only\n");
    }
    // "/SECRET/IMAGE_ID", nothing else.
    const std::string path = url == nullptr ? "" : url;
    const auto slash = path.find('/', 1);
    if (path.size() < 2 || path[0] != '/' || slash == std::string::npos) {
      return Reply(c, MHD_HTTP_NOT_FOUND, "not found\n");
    }
    const std::string secret = path.substr(1, slash - 1);
    const std::string image_id = path.substr(slash + 1);
    Served image;
    {
      std::lock_guard lock(mu_);
      auto it = images_.find(image_id);
      if (it == images_.end() || it->second.secret.size() != secret.size() ||
          CRYPTO_memcmp(it->second.secret.data(), secret.data(), secret.size()) != 0) {
        return Reply(c, MHD_HTTP_NOT_FOUND, "not found\n");
      }
      image = it->second;
    }
    if (head) {
      MHD_Response* r =
          MHD_create_response_from_callback(image.size, 4096, &MhdRelay::NoBody, nullptr, nullptr);
      MHD_add_response_header(r, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
      const MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
      MHD_destroy_response(r);
      return ret;
    }
    uint64_t first = 0, last = 0;
    const char* range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
    if (range == nullptr) {
      return Reply(c, MHD_HTTP_RANGE_NOT_SATISFIABLE, "this relay serves Range reads only\n");
    }
    if (!ParseRange(range, image.size, &first, &last) || first >= image.size ||
        last - first + 1 > kMaxRangeBytes) {
      MHD_Response* r = MHD_create_response_from_buffer(0, nullptr, MHD_RESPMEM_PERSISTENT);
      const std::string unsatisfied = "bytes */" + std::to_string(image.size);
      MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_RANGE, unsatisfied.c_str());
      const MHD_Result ret = MHD_queue_response(c, MHD_HTTP_RANGE_NOT_SATISFIABLE, r);
      MHD_destroy_response(r);
      return ret;
    }
    const uint64_t length = last - first + 1;
    void* buf = std::malloc(length);
    if (buf == nullptr) return Reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    try {
      reader_(image_id, first, std::span<std::byte>(static_cast<std::byte*>(buf), length));
    } catch (const std::exception& e) {
      std::free(buf);
      logger_->warn("relay read failed image={} range={}-{} error=\"{}\"", image_id, first, last,
                    e.what());
      return Reply(c, MHD_HTTP_BAD_GATEWAY, std::string("the source failed: ") + e.what() + "\n");
    }
    MHD_Response* r = MHD_create_response_from_buffer(length, buf, MHD_RESPMEM_MUST_FREE);
    if (r == nullptr) {
      std::free(buf);
      return MHD_NO;  // libmicrohttpd closes the connection; librbd retries on a new one
    }
    const std::string content_range = "bytes " + std::to_string(first) + "-" +
                                      std::to_string(last) + "/" + std::to_string(image.size);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_RANGE, content_range.c_str());
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    const MHD_Result ret = MHD_queue_response(c, MHD_HTTP_PARTIAL_CONTENT, r);
    MHD_destroy_response(r);
    return ret;
  }

  int fd_;
  Reader reader_;
  std::shared_ptr<spdlog::logger> logger_;
  std::string base_;
  MHD_Daemon* daemon_ = nullptr;
  mutable std::mutex mu_;
  std::map<std::string, Served> images_;
  bool handed_over_ = false;
  std::atomic<uint64_t> requests_{0};
};

}  // namespace

std::unique_ptr<Relay> Relay::Listen(const std::string& address, Reader reader,
                                     std::shared_ptr<spdlog::logger> logger,
                                     std::vector<Image> serving) {
  std::string host, port;
  if (!SplitHostPort(address, &host, &port)) {
    throw Error(Errc::kConfig, "cache.instant_relay: '" + address +
                                   "' is not ADDRESS, ADDRESS:PORT or [IPV6]:PORT");
  }
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    throw Error(Errc::kConfig, "cache.instant_relay: '" + address +
                                   "' is not an IP address (and port) of this host");
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, &::freeaddrinfo);
  sockaddr_storage ss{};
  std::memcpy(&ss, found->ai_addr, found->ai_addrlen);
  const bool wildcard =
      (ss.ss_family == AF_INET &&
       reinterpret_cast<sockaddr_in*>(&ss)->sin_addr.s_addr == htonl(INADDR_ANY)) ||
      (ss.ss_family == AF_INET6 &&
       IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr));
  if (wildcard) {
    throw Error(Errc::kConfig, "cache.instant_relay: '" + address +
                                   "' is no address other hosts can reach; give one of this "
                                   "host's own addresses");
  }
  const int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw Error(Errc::kInternal, std::string("relay: socket: ") + std::strerror(errno));
  }
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, found->ai_addr, found->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
    const int err = errno;
    ::close(fd);
    const std::string why = err == EADDRNOTAVAIL ? "it is not an address of this host"
                            : err == EADDRINUSE  ? "another process listens there"
                                                 : std::strerror(err);
    throw Error(err == EADDRNOTAVAIL || err == EADDRINUSE ? Errc::kBusy : Errc::kInternal,
                "relay: cannot listen on " + address + ": " + why);
  }
  return Adopt(fd, std::move(reader), std::move(logger), std::move(serving));
}

std::unique_ptr<Relay> Relay::Adopt(int fd, Reader reader, std::shared_ptr<spdlog::logger> logger,
                                    std::vector<Image> serving) {
  if (!logger) logger = std::make_shared<spdlog::logger>("cachemgr-null");
  return std::make_unique<MhdRelay>(fd, std::move(reader), std::move(logger), std::move(serving));
}

std::string NewRelaySecret() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    throw Error(Errc::kInternal, "relay: no random bytes for a secret");
  }
  return util::HexEncode(std::span<const unsigned char>(bytes, sizeof bytes));
}

bool ParseRelayUrl(const std::string& url, RelayUrl* out) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) return false;
  const auto host_end = url.find('/', kScheme.size());
  if (host_end == std::string::npos) return false;
  const auto secret_end = url.find('/', host_end + 1);
  if (secret_end == std::string::npos) return false;
  out->listen = url.substr(kScheme.size(), host_end - kScheme.size());
  out->secret = url.substr(host_end + 1, secret_end - host_end - 1);
  out->image_id = url.substr(secret_end + 1);
  return !out->listen.empty() && out->secret.size() == 32 && !out->image_id.empty() &&
         out->image_id.find('/') == std::string::npos;
}

}  // namespace cachemgr::source
