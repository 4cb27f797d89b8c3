#include "engine_env.h"

#include <openssl/evp.h>

#include <atomic>
#include <fstream>
#include <random>
#include <vector>

#include "support/test_util.h"
#ifndef ENGINE_NO_DOCTEST
#include "support/cluster.h"
#endif

namespace cachemgr::test {

namespace {
class Md5 {
 public:
  Md5() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_md5(), nullptr); }
  ~Md5() { EVP_MD_CTX_free(ctx_); }
  void Update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string Hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    std::string out;
    static const char* kHex = "0123456789abcdef";
    for (unsigned i = 0; i < len; ++i) {
      out += kHex[md[i] >> 4];
      out += kHex[md[i] & 15];
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};
}  // namespace

namespace {
std::filesystem::path Conf() {
#ifdef ENGINE_NO_DOCTEST
  return RunDir() / "ceph" / "ceph.conf";  // the fixture's path, without doctest's REQUIRE
#else
  return CephConf();
#endif
}
}  // namespace

Options EngineOptions(const std::filesystem::path& dir, bool rbd, const std::string& ns) {
  Options o;
  std::filesystem::create_directories(dir / "state");
  std::filesystem::create_directories(dir / "images");
  std::filesystem::create_directories(dir / "conversion");
  o.index = (dir / "state" / "index.db").string();
  o.source.type = SourceType::kFile;
  o.source.file.dir = (dir / "images").string();
  o.conversion.dir = (dir / "conversion").string();
  if (rbd) {
    o.backend.type = BackendType::kRbd;
    o.backend.rbd.conf = Conf().string();
    o.backend.rbd.pool = "volumes";
    o.backend.rbd.namespace_ = ns;
  } else {
    o.backend.type = BackendType::kLocal;
    o.backend.local.root = (dir / "root").string();
    std::filesystem::create_directories(dir / "root");
  }
  return o;
}

void CreateRbdNamespace(const std::string& ns) {
  RunCommand({"rbd", "--conf", Conf().string(), "namespace", "create", "volumes/" + ns});
}

std::string Unique(const std::string& prefix) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  return prefix + "-" + std::to_string(rd() % 1000000) + "-" + std::to_string(counter++);
}

std::string Md5OfFile(const std::filesystem::path& path, uint64_t len) {
  std::ifstream in(path, std::ios::binary);
  Md5 md5;
  std::vector<char> buf(1 << 20);
  uint64_t left = len;
  while (left > 0 && in) {
    in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(buf.size(), left)));
    auto n = static_cast<uint64_t>(in.gcount());
    if (n == 0) break;
    md5.Update(buf.data(), n);
    left -= n;
  }
  return md5.Hex();
}

std::string Md5OfImage(storage::Backend& backend, const storage::ImageRef& ref, uint64_t len) {
  auto reader = backend.Open(ref);
  Md5 md5;
  std::vector<std::byte> buf(1 << 20);
  uint64_t off = 0;
  while (off < len) {
    auto want = std::min<uint64_t>(buf.size(), len - off);
    size_t n = reader->Read(off, std::span<std::byte>(buf.data(), want));
    if (n == 0) break;
    md5.Update(buf.data(), n);
    off += n;
  }
  return md5.Hex();
}

}  // namespace cachemgr::test
