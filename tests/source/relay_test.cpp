// The relay of an instant miss from Glance (source/relay.h), over real loopback sockets:
// what librbd's http stream asks (HEAD for the size, single-range GETs, pipelined on one
// connection) answered exactly, nothing answered outside a registered image and its
// secret, a failing source reported as 502, and the listening socket handed to another
// relay without a connection refused or answered by the one that let it go.
#include "source/relay.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "support/expect_error.h"

namespace cachemgr::test {
namespace {

constexpr uint64_t kSize = 3 * 1024 * 1024 + 17;  // not a multiple of anything

char ByteAt(uint64_t offset, char salt) { return static_cast<char>((offset * 7 + salt) % 251); }

source::Relay::Reader Pattern(char salt, std::atomic<int>* reads = nullptr) {
  return [salt, reads](const std::string& id, uint64_t offset, std::span<std::byte> out) {
    if (id == "broken") throw Error(Errc::kSource, "Glance is down");
    if (reads) reads->fetch_add(1);
    for (size_t i = 0; i < out.size(); ++i) out[i] = std::byte(ByteAt(offset + i, salt));
  };
}

int Port(const std::string& base) { return std::stoi(base.substr(base.rfind(':') + 1)); }

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    REQUIRE(n > 0);
    done += static_cast<size_t>(n);
  }
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[65536];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Sends `requests` in one write (pipelined) and reads until the relay closes (the last
// request says Connection: close).
std::string Exchange(int port, const std::string& requests) {
  const int fd = Connect(port);
  SendAll(fd, requests);
  return ReadAll(fd);
}

std::string Get(const std::string& path, const std::string& extra = "", bool close = true) {
  return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + extra +
         (close ? "Connection: close\r\n" : "") + "\r\n";
}

std::string Expected(uint64_t first, uint64_t last, char salt) {
  std::string s;
  for (uint64_t o = first; o <= last; ++o) s += ByteAt(o, salt);
  return s;
}

struct Served {
  std::unique_ptr<source::Relay> relay = source::Relay::Listen("127.0.0.1", Pattern('a'), nullptr);
  std::string secret = source::NewRelaySecret();
  std::string path = "/" + secret + "/img-1";
  Served() {
    relay->Serve("img-1", secret, kSize);
    relay->Serve("broken", secret, kSize);
  }
  int port() const { return Port(relay->BaseUrl()); }
};

TEST_CASE("HEAD answers the image's size, a Range GET exactly those bytes") {
  Served s;
  CHECK(s.relay->BaseUrl().rfind("http://127.0.0.1:", 0) == 0);
  const std::string head =
      Exchange(s.port(), "HEAD " + s.path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(head.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(head.find("Content-Length: " + std::to_string(kSize) + "\r\n") != std::string::npos);
  CHECK(head.find("Accept-Ranges: bytes") != std::string::npos);
  CHECK(head.size() == head.find("\r\n\r\n") + 4);  // no body

  const std::string got = Exchange(s.port(), Get(s.path, "Range: bytes=1000-1999\r\n"));
  CHECK(got.rfind("HTTP/1.1 206", 0) == 0);
  CHECK(got.find("Content-Range: bytes 1000-1999/" + std::to_string(kSize)) != std::string::npos);
  CHECK(got.substr(got.find("\r\n\r\n") + 4) == Expected(1000, 1999, 'a'));

  // The last bytes, open-ended and past the end: clipped to the image.
  const std::string tail =
      Exchange(s.port(), Get(s.path, "Range: bytes=" + std::to_string(kSize - 5) + "-\r\n"));
  CHECK(tail.substr(tail.find("\r\n\r\n") + 4) == Expected(kSize - 5, kSize - 1, 'a'));
  const std::string past =
      Exchange(s.port(), Get(s.path, "Range: bytes=" + std::to_string(kSize - 3) + "-" +
                                         std::to_string(kSize + 100) + "\r\n"));
  CHECK(past.substr(past.find("\r\n\r\n") + 4) == Expected(kSize - 3, kSize - 1, 'a'));
}

TEST_CASE("pipelined requests on one connection are answered in order") {
  Served s;
  const std::string got = Exchange(s.port(), Get(s.path, "Range: bytes=0-9\r\n", false) +
                                                 Get(s.path, "Range: bytes=4096-4105\r\n", false) +
                                                 "HEAD " + s.path + " HTTP/1.1\r\nHost: x\r\n\r\n" +
                                                 Get(s.path, "Range: bytes=20-29\r\n"));
  CAPTURE(got);
  const auto first = got.find(Expected(0, 9, 'a'));
  const auto second = got.find(Expected(4096, 4105, 'a'));
  const auto third = got.find(Expected(20, 29, 'a'));
  REQUIRE(first != std::string::npos);
  REQUIRE(second != std::string::npos);
  REQUIRE(third != std::string::npos);
  CHECK(first < second);
  CHECK(second < third);
}

TEST_CASE("nothing is answered outside a registered image and its secret") {
  Served s;
  std::atomic<int> reads{0};
  auto relay = source::Relay::Listen("127.0.0.1", Pattern('a', &reads), nullptr);
  const std::string secret = source::NewRelaySecret();
  relay->Serve("img-1", secret, kSize);
  const int port = Port(relay->BaseUrl());
  const std::string other = source::NewRelaySecret();
  for (const std::string& path : std::vector<std::string>{
           "/" + other + "/img-1", "/" + secret + "/img-2", "/" + secret, "/img-1", "/",
           "/" + secret + "/img-1/x", "/" + secret + "/../" + secret + "/img-1",
           "/v2/images/img-1/file", "/" + secret.substr(0, 31) + "/img-1"}) {
    CAPTURE(path);
    CHECK(Exchange(port, Get(path, "Range: bytes=0-9\r\n")).rfind("HTTP/1.1 404", 0) == 0);
  }
  CHECK(Exchange(port, "POST /" + secret +
                           "/img-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                           "Connection: close\r\n\r\n")
            .rfind("HTTP/1.1 405", 0) == 0);
  CHECK(reads.load() == 0);
  // Known image: a GET without Range, a range outside it or too large, are refused.
  const std::string path = "/" + secret + "/img-1";
  CHECK(Exchange(port, Get(path)).rfind("HTTP/1.1 416", 0) == 0);
  CHECK(Exchange(port, Get(path, "Range: bytes=" + std::to_string(kSize) + "-\r\n"))
            .rfind("HTTP/1.1 416", 0) == 0);
  CHECK(Exchange(port, Get(path, "Range: bytes=9-3\r\n")).rfind("HTTP/1.1 416", 0) == 0);
  CHECK(Exchange(port, Get(path, "Range: bytes=0-5,10-20\r\n")).rfind("HTTP/1.1 416", 0) == 0);
  relay->Serve("huge", secret, 1ull << 40);
  CHECK(Exchange(port, Get("/" + secret + "/huge",
                           "Range: bytes=0-" + std::to_string((65ull << 20)) + "\r\n"))
            .rfind("HTTP/1.1 416", 0) == 0);
  CHECK(reads.load() == 0);
  // Forgotten: gone.
  relay->Forget("img-1");
  CHECK(relay->Serving() == 1);
  CHECK(Exchange(port, Get(path, "Range: bytes=0-9\r\n")).rfind("HTTP/1.1 404", 0) == 0);
}

TEST_CASE("a source that fails is a 502, and the relay goes on") {
  Served s;
  CHECK(Exchange(s.port(), Get("/" + s.secret + "/broken", "Range: bytes=0-9\r\n"))
            .rfind("HTTP/1.1 502", 0) == 0);
  CHECK(Exchange(s.port(), Get(s.path, "Range: bytes=0-9\r\n")).rfind("HTTP/1.1 206", 0) == 0);
}

TEST_CASE("a handed-over socket is served by the relay that adopts it, none refused") {
  auto first = source::Relay::Listen("127.0.0.1", Pattern('a'), nullptr);
  const std::string secret = source::NewRelaySecret();
  first->Serve("img-1", secret, kSize);
  const int port = Port(first->BaseUrl());
  const int fd = first->HandOver();
  REQUIRE(fd >= 0);
  CHECK(first->HandOver() == -1);
  // A client that connects between the hand-over and the adoption waits in the backlog.
  const int waiting = Connect(port);
  SendAll(waiting, Get("/" + secret + "/img-1", "Range: bytes=0-9\r\n"));
  // What the waiting client asks for is served from the adoption on: a Serve after it
  // could come after the first accept (a 404 for a client the hand-over promised to keep).
  auto second = source::Relay::Adopt(fd, Pattern('b'), nullptr, {{"img-1", secret, kSize}});
  CHECK(second->Serves("img-1"));
  CHECK(second->BaseUrl() == first->BaseUrl());
  const std::string got = ReadAll(waiting);
  CHECK(got.rfind("HTTP/1.1 206", 0) == 0);
  CHECK(got.substr(got.find("\r\n\r\n") + 4) == Expected(0, 9, 'b'));  // not the first's
  first.reset();  // the first ends: the socket stays with the second
  CHECK(Exchange(port, Get("/" + secret + "/img-1", "Range: bytes=5-9\r\n"))
            .find(Expected(5, 9, 'b')) != std::string::npos);
}

// The error a Listen of `address` throws: its code and whether its message names `text`.
void ListenFails(const std::string& address, Errc code, const std::string& text) {
  CAPTURE(address);
  const Error e = CatchError([&] { source::Relay::Listen(address, Pattern('a'), nullptr); });
  CHECK(e.code() == code);
  CHECK(std::string(e.what()).find(text) != std::string::npos);
}

TEST_CASE("an address that is not one, or not this host's, is named") {
  for (const char* bad : {"localhost", "0.0.0.0", "::", "[::1", "1.2.3.4.5", "127.0.0.1:x"}) {
    ListenFails(bad, Errc::kConfig, "cache.instant_relay");
  }
  ListenFails("192.0.2.1", Errc::kBusy, "not an address of this host");
  auto taken = source::Relay::Listen("127.0.0.1", Pattern('a'), nullptr);
  ListenFails(taken->BaseUrl().substr(7), Errc::kBusy, "another process listens there");
}

TEST_CASE("relay URLs are told from anything else") {
  source::RelayUrl u;
  const std::string secret = source::NewRelaySecret();
  CHECK(secret.size() == 32);
  CHECK(secret != source::NewRelaySecret());
  REQUIRE(source::ParseRelayUrl("http://127.0.0.1:4000/" + secret + "/img-1", &u));
  CHECK(u.listen == "127.0.0.1:4000");
  CHECK(u.secret == secret);
  CHECK(u.image_id == "img-1");
  REQUIRE(source::ParseRelayUrl("http://[::1]:4000/" + secret + "/img-1", &u));
  CHECK(u.listen == "[::1]:4000");
  for (const std::string& other : std::vector<std::string>{
           "/srv/images/img-1", "https://h:1/" + secret + "/i", "http://h:1/short/i",
           "http://h:1/" + secret + "/", "http://h:1/" + secret + "/a/b", "http://h:1"}) {
    CAPTURE(other);
    CHECK_FALSE(source::ParseRelayUrl(other, &u));
  }
}

}  // namespace
}  // namespace cachemgr::test
