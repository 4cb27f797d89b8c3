// source/relay.h: an HTTP relay that lets librbd read a Glance image in place.
//
// librbd's `http` migration stream asks an image's size with HEAD and reads it with
// single-range GETs ("Range: bytes=A-B", pipelined on one connection), and sends no
// credentials. Glance answers HEAD 405 and wants a token. The relay answers HEAD with the
// image's size and each Range GET with exactly those bytes, fetched from the source with
// its token (Source::ReadRange). It serves only the images registered with it, each under
// a path holding a random secret (http://ADDR:PORT/SECRET/IMAGE_ID): anyone who reaches
// the address and does not know the secret gets 404, so the relay never lends the
// token to arbitrary reads. Built on GNU libmicrohttpd (a thread per connection).
//
// A relay can hand its listening socket to another process (HandOver, then Adopt there):
// connections made meanwhile wait in the socket's backlog, none is refused.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace spdlog {
class logger;
}

namespace cachemgr::source {

class Relay {
 public:
  // Fills `out` with the image's bytes from `offset`, exactly; throws on failure (the
  // client gets 502, which librbd reports as EIO).
  using Reader =
      std::function<void(const std::string& image_id, uint64_t offset, std::span<std::byte> out)>;
  // An image served from the first request on (see Listen, Adopt).
  struct Image {
    std::string image_id, secret;
    uint64_t size = 0;
  };

  // Listens on `address`: an IP address of this host ("192.0.2.10", "::1"), with a
  // port or not ("192.0.2.10:9400", "[2001:db8::1]:9400"); no port or 0 = any free one.
  // Throws kConfig for an address that is not one, kBusy when it cannot be bound here
  // (EADDRNOTAVAIL: not this host's; EADDRINUSE: taken), naming it. `serving` is served
  // from the first request on.
  static std::unique_ptr<Relay> Listen(const std::string& address, Reader reader,
                                       std::shared_ptr<spdlog::logger> logger,
                                       std::vector<Image> serving = {});
  // Serves on `fd`, a socket already bound and listening (handed over); takes it. The
  // clients waiting in its backlog are answered as soon as it is adopted: what they ask
  // for goes in `serving`, since a Serve after the adoption may come too late for them.
  static std::unique_ptr<Relay> Adopt(int fd, Reader reader,
                                      std::shared_ptr<spdlog::logger> logger,
                                      std::vector<Image> serving = {});

  virtual ~Relay() = default;
  // http://ADDR:PORT as clients reach it (the address given, the port bound).
  virtual std::string BaseUrl() const = 0;
  // Serves `image_id` of `size` bytes under `secret` from now on.
  virtual void Serve(const std::string& image_id, const std::string& secret, uint64_t size) = 0;
  virtual void Forget(const std::string& image_id) = 0;
  virtual size_t Serving() const = 0;  // images registered
  virtual bool Serves(const std::string& image_id) const = 0;
  // Stops accepting and returns the listening socket, still listening, for another
  // process to Adopt; requests in progress here finish. -1 if already handed over.
  virtual int HandOver() = 0;
  virtual uint64_t Requests() const = 0;  // requests answered so far (any status)
};

// A new secret for a relay path: 32 hex characters from OpenSSL's generator.
std::string NewRelaySecret();

// Parts of a relay URL made by Relay (http://HOST:PORT/SECRET/IMAGE_ID); false for any
// other string. `listen` is HOST:PORT as Listen takes it.
struct RelayUrl {
  std::string listen, secret, image_id;
};
bool ParseRelayUrl(const std::string& url, RelayUrl* out);

}  // namespace cachemgr::source
