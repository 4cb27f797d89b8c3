// tests/contract/rbd/rbd_test_helpers.h: what the RBD backend's own tests share (images
// of known bytes, unique names, the rbd tool's image spec, a client that holds an image).
#pragma once

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "cachemgr/options.h"
#include "storage/backend.h"
#include "support/test_util.h"

namespace cachemgr::rbdtest {

using storage::ImageRef;
using storage::SnapRef;
inline constexpr uint64_t kMiB = 1024 * 1024;

// Runs `body` and returns the Error it throws (fails the test if it throws nothing).
template <typename F>
inline Error Catch(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no cachemgr::Error thrown");
  return Error(Errc::kInternal, "unreachable");
}

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline std::string Unique(const std::string& tag) {
  static int n = 0;
  return "rbdt-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + "-" + tag;
}

inline std::string Data(uint64_t length, char seed) {
  std::string s(length, '\0');
  for (uint64_t i = 0; i < length; ++i) s[i] = static_cast<char>(seed + (i % 251) + 1);
  return s;
}

inline std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

inline std::string ReadAll(storage::Backend& b, const ImageRef& ref) {
  auto reader = b.Open(ref, std::nullopt);
  std::string out(reader->size(), '\0');
  uint64_t pos = 0;
  while (pos < out.size()) {
    auto n = reader->Read(pos, {reinterpret_cast<std::byte*>(out.data() + pos),
                                std::min<size_t>(4 * kMiB, out.size() - pos)});
    REQUIRE(n > 0);
    pos += n;
  }
  return out;
}

inline void Import(storage::Backend& b, const ImageRef& ref, const std::string& content) {
  auto w = b.Create(ref, content.size());
  w->Append(Bytes(content));
  w->Finish();
}

// "pool/[ns/]name" as the rbd tool takes an image.
inline std::string Spec(const RbdBackendOptions& options, const ImageRef& ref) {
  return ref.pool + "/" + (options.namespace_.empty() ? "" : options.namespace_ + "/") + ref.name;
}

// Starts `rbd bench --io-type io_type` on the image in a child: another client with the
// image open (a watcher; the exclusive lock too when writing). The caller kills it.
inline pid_t StartRbdBench(const RbdBackendOptions& options, const std::string& spec,
                    const char* io_type) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execlp("rbd", "rbd", "--conf", options.conf.c_str(), "bench", "--io-type", io_type,
             "--io-size", "4096", "--io-total", "100G", spec.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// A loopback port nothing listens on: bound and closed again.
inline int DeadPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

inline std::string Script(const std::string& name) {
  return std::string(CACHEMGR_SOURCE_DIR) + "/tests/cluster/" + name;
}

// Runs the rados tool on the "volumes" pool (in the options' namespace): its exit status,
// its output into *out when given.
inline int Rados(const RbdBackendOptions& options, const std::vector<std::string>& args,
                 std::string* out = nullptr) {
  std::vector<std::string> argv{"rados", "--conf", options.conf, "-p", "volumes"};
  if (!options.namespace_.empty()) {
    argv.push_back("-N");
    argv.push_back(options.namespace_);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return test::RunCommand(argv, out);
}

}  // namespace cachemgr::rbdtest
