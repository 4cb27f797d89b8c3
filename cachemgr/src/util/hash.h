// util/hash.h: streaming message digests (OpenSSL EVP) for image integrity checks.
#pragma once

#include <memory>
#include <span>
#include <string>

namespace cachemgr::util {

// One digest computed over bytes fed in order. The algorithms are the ones Glance uses
// for checksum (md5) and os_hash_algo (sha512 by default; sha1/sha256/sha384 possible).
class Hasher {
 public:
  // kInvalidArgument naming `algo` when it is not one of md5|sha1|sha256|sha384|sha512.
  explicit Hasher(const std::string& algo);
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  const std::string& algo() const { return algo_; }
  void Update(std::span<const std::byte> data);
  void Update(const void* data, size_t size);
  // Lowercase hex of the digest of everything fed so far; the hasher is spent afterwards.
  std::string HexDigest();

  static bool Supported(const std::string& algo);

 private:
  struct Ctx;
  std::string algo_;
  std::unique_ptr<Ctx> ctx_;
  std::string digest_;  // cached once computed
};

// Hex digest of a whole file (kIo when it cannot be read).
std::string HashFile(const std::string& algo, const std::string& path);

}  // namespace cachemgr::util
