#include "util/hash.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "cachemgr/error.h"

namespace cachemgr::util {
namespace {

const EVP_MD* Md(const std::string& algo) {
  if (algo == "md5") return EVP_md5();
  if (algo == "sha1") return EVP_sha1();
  if (algo == "sha256") return EVP_sha256();
  if (algo == "sha384") return EVP_sha384();
  if (algo == "sha512") return EVP_sha512();
  return nullptr;
}

}  // namespace

struct Hasher::Ctx {
  EVP_MD_CTX* ctx = nullptr;
  ~Ctx() {
    if (ctx) EVP_MD_CTX_free(ctx);
  }
};

bool Hasher::Supported(const std::string& algo) { return Md(algo) != nullptr; }

Hasher::Hasher(const std::string& algo) : algo_(algo), ctx_(std::make_unique<Ctx>()) {
  const EVP_MD* md = Md(algo);
  if (!md) throw Error(Errc::kInvalidArgument, "unsupported hash algorithm '" + algo + "'");
  ctx_->ctx = EVP_MD_CTX_new();
  if (!ctx_->ctx || EVP_DigestInit_ex(ctx_->ctx, md, nullptr) != 1) {
    throw Error(Errc::kInternal, "cannot initialize " + algo + " digest");
  }
}

Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::Update(const void* data, size_t size) {
  if (!digest_.empty()) throw Error(Errc::kInternal, algo_ + " digest updated after final");
  if (size == 0) return;
  if (EVP_DigestUpdate(ctx_->ctx, data, size) != 1) {
    throw Error(Errc::kInternal, algo_ + " digest update failed");
  }
}

void Hasher::Update(std::span<const std::byte> data) { Update(data.data(), data.size()); }

std::string Hasher::HexDigest() {
  if (!digest_.empty()) return digest_;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_->ctx, md, &len) != 1) {
    throw Error(Errc::kInternal, algo_ + " digest final failed");
  }
  static const char kHex[] = "0123456789abcdef";
  digest_.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    digest_ += kHex[md[i] >> 4];
    digest_ += kHex[md[i] & 0xf];
  }
  return digest_;
}

std::string HashFile(const std::string& algo, const std::string& path) {
  Hasher hasher(algo);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(Errc::kIo, "cannot open " + path + ": " + std::strerror(errno));
  std::vector<char> buf(1 << 20);
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw Error(Errc::kIo, "cannot read " + path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    hasher.Update(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return hasher.HexDigest();
}

}  // namespace cachemgr::util
