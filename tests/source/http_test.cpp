// The Glance source's HTTP behaviour against a small loopback HTTP server run by the
// test: resuming a dropped download with Range, restarting cleanly when the server
// ignores Range, retries on 5xx, and the 401/403/404 errors (a Glance without Keystone
// never sends 401/403, so they are served here).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "fetch_util.h"
#include "source/secrets.h"
#include "source/source.h"
#include "util/url.h"

namespace cachemgr::test {
namespace {

// Answers each connection with what `handle(request_head, index)` returns, then closes.
class LoopbackServer {
 public:
  using Handler = std::function<std::string(const std::string& request, int index)>;
  explicit LoopbackServer(Handler handle) : handle_(std::move(handle)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~LoopbackServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Serve() {
    int index = 0;
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      {
        std::lock_guard lock(mu_);
        requests_.push_back(req);
      }
      std::string reply = handle_(req, index++);
      size_t off = 0;
      while (off < reply.size()) {
        ssize_t n = ::send(c, reply.data() + off, reply.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::shutdown(c, SHUT_RDWR);
      ::close(c);
    }
  }

  Handler handle_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> requests_;
};

std::string Status(int code, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(code) + " X\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n" + extra + "\r\n" + body;
}

std::string Data(size_t n) {
  std::mt19937 rng(42);
  std::string s(n, '\0');
  for (auto& ch : s) ch = static_cast<char>(rng());
  return s;
}

std::unique_ptr<source::Source> Glance(const std::string& url, uint32_t retries = 3,
                                       const std::string& token = "") {
  GlanceSourceOptions o;
  o.endpoint = url;
  o.retries = retries;
  o.timeout_s = 5;
  o.token = token;
  return source::MakeGlanceSource(o, nullptr);
}

std::string Download(source::Source& s, const std::string& id) {
  std::string got;
  s.Download(id, [&](std::span<const std::byte> d) {
    got.append(reinterpret_cast<const char*>(d.data()), d.size());
  });
  return got;
}

TEST_CASE("a dropped download resumes with a Range request; each byte reaches the sink once") {
  const std::string data = Data(1 << 20);
  const size_t cut = 300001;
  LoopbackServer server([&](const std::string& req, int index) -> std::string {
    if (index == 0) {
      // Promises everything, sends part, then the connection drops.
      return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(data.size()) +
             "\r\n\r\n" + data.substr(0, cut);
    }
    auto pos = req.find("Range: bytes=");
    if (pos == std::string::npos) return Status(500, "expected a Range request");
    size_t from = std::strtoull(req.c_str() + pos + 13, nullptr, 10);
    return Status(206, data.substr(from),
                  "Content-Range: bytes " + std::to_string(from) + "-" +
                      std::to_string(data.size() - 1) + "/" + std::to_string(data.size()) +
                      "\r\n");
  });
  auto glance = Glance(server.url());
  CHECK(Download(*glance, "img1") == data);
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].find("GET /v2/images/img1/file ") == 0);
  CHECK(reqs[0].find("Range:") == std::string::npos);
  CHECK(reqs[1].find("Range: bytes=" + std::to_string(cut) + "-") != std::string::npos);
}

TEST_CASE("a server that ignores Range: the download restarts and skips what the sink has") {
  const std::string data = Data(700000);
  LoopbackServer server([&](const std::string&, int index) -> std::string {
    if (index < 2) {
      return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(data.size()) +
             "\r\n\r\n" + data.substr(0, 100000 * (index + 1));
    }
    return Status(200, data);
  });
  auto glance = Glance(server.url());
  CHECK(Download(*glance, "img2") == data);
  CHECK(server.requests().size() == 3);
}

TEST_CASE("a store that answers 400 to Range (Glance's rbd store): restart without Range") {
  const std::string data = Data(500000);
  LoopbackServer server([&](const std::string& req, int index) -> std::string {
    if (index == 0) {
      return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(data.size()) +
             "\r\n\r\n" + data.substr(0, 1234);
    }
    if (req.find("Range:") != std::string::npos) return Status(400, "no ranges here");
    return Status(200, data);
  });
  auto glance = Glance(server.url());
  CHECK(Download(*glance, "img3") == data);
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 3);
  CHECK(reqs[2].find("Range:") == std::string::npos);
}

TEST_CASE("5xx answers are retried, then reported with the image and the status") {
  const std::string data = Data(1000);
  {
    LoopbackServer server([&](const std::string&, int index) -> std::string {
      return index < 2 ? Status(503, "busy") : Status(200, data);
    });
    auto glance = Glance(server.url(), 3);
    CHECK(Download(*glance, "img4") == data);
  }
  LoopbackServer server([&](const std::string&, int) { return Status(502, "bad gateway"); });
  auto glance = Glance(server.url(), 2);
  Error e = Thrown([&] { Download(*glance, "img5"); });
  CHECK(e.code() == Errc::kSource);
  CHECK(std::string(e.what()).find("img5") != std::string::npos);
  CHECK(std::string(e.what()).find("502") != std::string::npos);
  CHECK(server.requests().size() == 3);
  e = Thrown([&] { glance->Describe("img5"); });
  CHECK(e.code() == Errc::kSource);
}

TEST_CASE("401, 403 and 404 each give their own error, and are not retried") {
  for (auto [status, code] : {std::pair{401, Errc::kUnauthorized},
                              std::pair{403, Errc::kUnauthorized}, std::pair{404, Errc::kNotFound}}) {
    CAPTURE(status);
    LoopbackServer server([&](const std::string&, int) { return Status(status, "no"); });
    auto glance = Glance(server.url(), 3, "secret-token");
    Error e = Thrown([&] { glance->Describe("img6"); });
    CHECK(e.code() == code);
    CHECK(std::string(e.what()).find("img6") != std::string::npos);
    CHECK(std::string(e.what()).find(std::to_string(status)) != std::string::npos);
    CHECK(Thrown([&] { Download(*glance, "img6"); }).code() == code);
    auto reqs = server.requests();
    CHECK(reqs.size() == 2);
    CHECK(reqs[0].find("X-Auth-Token: secret-token") != std::string::npos);
  }
}

TEST_CASE("describe reads the Glance fields; the token comes from OS_AUTH_TOKEN if not set") {
  LoopbackServer server([&](const std::string&, int) {
    return Status(200, R"({"id": "img7", "status": "active", "disk_format": "qcow2",
      "container_format": "bare", "size": 123, "virtual_size": null, "checksum": "abc",
      "os_hash_algo": "sha512", "os_hash_value": "def", "updated_at": "2026-01-02T03:04:05Z",
      "direct_url": "rbd://fsid/images/img7/snap",
      "locations": [{"url": "rbd://fsid/images/img7/snap", "metadata": {}}]})");
  });
  ::setenv("OS_AUTH_TOKEN", "env-token", 1);
  auto glance = Glance(server.url());
  ::unsetenv("OS_AUTH_TOKEN");
  auto m = glance->Describe("img7");
  CHECK(m.status == "active");
  CHECK(m.disk_format == "qcow2");
  CHECK(m.size == 123u);
  CHECK(!m.virtual_size);
  CHECK(m.checksum == "abc");
  CHECK(m.os_hash_value == "def");
  CHECK(m.updated_at == "2026-01-02T03:04:05Z");
  CHECK(m.locations == std::vector<std::string>{"rbd://fsid/images/img7/snap"});
  CHECK(server.requests()[0].find("X-Auth-Token: env-token") != std::string::npos);
  CHECK(Thrown([&] { glance->Describe("../x"); }).code() == Errc::kInvalidArgument);
}

TEST_CASE("ListActive follows the next links") {
  LoopbackServer server([&](const std::string& req, int) -> std::string {
    if (req.find("marker=a2") != std::string::npos) {
      return Status(200, R"({"images": [{"id": "a3", "status": "active"}]})");
    }
    return Status(200, R"({"images": [{"id": "a1", "status": "active"},
      {"id": "a2", "status": "active"}], "next": "/v2/images?status=active&marker=a2"})");
  });
  auto glance = Glance(server.url());
  auto all = glance->ListActive();
  REQUIRE(all.size() == 3);
  CHECK(all[2].id == "a3");
}

TEST_CASE("a download that ends before the image's size is kCorrupt; nothing is kept") {
  const std::string data = Data(200000);
  const std::string meta = R"({"id": "img9", "status": "active", "disk_format": "raw",
      "container_format": "bare", "size": 300000,
      "checksum": "0123456789abcdef0123456789abcdef", "os_hash_algo": null})";
  LoopbackServer server([&](const std::string& req, int) -> std::string {
    if (req.find("/file ") != std::string::npos) return Status(200, data);
    return Status(200, meta);
  });
  auto glance = Glance(server.url());
  FetchBed bed;
  auto m = glance->Describe("img9");
  Error e = Thrown([&] {
    fetch::FetchInto(*glance, m, *bed.backend, bed.Ref("entry-img9"), bed.options, nullptr);
  });
  INFO(std::string(e.what()));
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(std::string(e.what()).find("truncated download: got 200000 of 300000") !=
        std::string::npos);
  CHECK(!bed.backend->Exists(bed.Ref("entry-img9")));
  CHECK(bed.backend->List(bed.backend->entry_pool()).empty());

  // The same bytes claimed as qcow2 go through the conversion dir: it is left empty.
  m.disk_format = "qcow2";
  e = Thrown([&] {
    fetch::FetchInto(*glance, m, *bed.backend, bed.Ref("entry-img9"), bed.options, nullptr);
  });
  CHECK(e.code() == Errc::kCorrupt);
  CHECK(bed.ConversionFiles() == 0);
}

TEST_CASE("a stalled transfer fails with kTimeout instead of hanging") {
  LoopbackServer server([&](const std::string&, int) -> std::string {
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    return Status(200, "late");
  });
  GlanceSourceOptions o;
  o.endpoint = server.url();
  o.retries = 0;
  o.timeout_s = 1;
  auto glance = source::MakeGlanceSource(o, nullptr);
  Error e = Thrown([&] { Download(*glance, "img8"); });
  CHECK(e.code() == Errc::kTimeout);
  CHECK(std::string(e.what()).find("img8") != std::string::npos);
}

}  // namespace
}  // namespace cachemgr::test

namespace cachemgr::test {
namespace {

TEST_CASE("secrets are removed however they are written, before a message is cut") {
  const std::string secret = "Sekr3t\"Quote\\Back\xc3\xa4";
  const std::string echoed = R"({"password": "Sekr3t\"Quote\\Back\u00e4"})";
  CHECK(source::Redact(echoed, {secret}).find("Sekr3t") == std::string::npos);
  CHECK(source::Redact("p=Sekr3t%22Quote%5CBack%C3%A4", {secret}) == "p=***");
  CHECK(source::Redact(std::string("raw ") + secret + " and again " + secret, {secret, ""}) ==
        "raw *** and again ***");
  CHECK(source::Redact("nothing here", {""}) == "nothing here");
  CHECK(util::HasUserInfo("https://svc:pw@glance.example:9292/v2"));
  CHECK(!util::HasUserInfo("https://glance.example:9292/v2?x=a@b"));
  CHECK(util::WithoutUserInfo("https://svc:p@w@glance.example/x") == "https://glance.example/x");
}

TEST_CASE("an error page that echoes the token never shows it") {
  const std::string token = "gAAAAABtokenvalue-that-must-stay-secret";
  LoopbackServer server([&](const std::string& req, int) {
    auto pos = req.find("X-Auth-Token: ");
    const std::string sent = pos == std::string::npos ? "" : req.substr(pos + 14, token.size());
    return Status(500, "Forbidden: token " + sent + " is not allowed");
  });
  auto glance = Glance(server.url(), 0, token);
  try {
    glance->Describe("11111111-2222-3333-4444-555555555555");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("HTTP 500") != std::string::npos);
    CHECK(std::string(e.what()).find("token *** is not allowed") != std::string::npos);
    CHECK(std::string(e.what()).find(token) == std::string::npos);
  }
}

TEST_CASE("a versioned endpoint is Glance's root; a 404 to the image list is not 'not found'") {
  LoopbackServer server([&](const std::string& req, int) {
    // Only the root's own paths exist: ".../v2/v2/images" would be a 404.
    if (req.rfind("GET /v2/images?", 0) == 0) return Status(200, R"({"images": []})");
    return Status(404, "no such path");
  });
  CHECK_NOTHROW(Glance(server.url() + "/v2/")->ListActive());
  CHECK(server.requests().back().rfind("GET /v2/images?", 0) == 0);
  // A URL that is not Glance's root at all: the listing's 404 is an endpoint error.
  try {
    Glance(server.url() + "/not-glance")->ListActive();
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::kSource);
    CHECK(std::string(e.what()).find("Glance's API root") != std::string::npos);
  }
}

}  // namespace
}  // namespace cachemgr::test
