#include "support/test_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <cstring>
#include <thread>

#include "util/process.h"

namespace cachemgr::test {

std::filesystem::path RunDir() {
  const char* env = std::getenv("CACHEMGR_TEST_RUN_DIR");
  return env && *env ? std::filesystem::path(env) : std::filesystem::path(CACHEMGR_TEST_RUN_DIR);
}

TempDir::TempDir(const std::string& prefix) {
  auto base = RunDir() / "tmp";
  std::filesystem::create_directories(base);
  std::string tmpl = (base / (prefix + "-XXXXXX")).string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed under " + base.string());
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint64_t BytesReadSoFar() {
  std::ifstream in("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value)
    if (key == "rchar:") return value;
  return 0;
}

bool WaitUntil(const std::function<bool()>& ready, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (ready()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int RunCommand(const std::vector<std::string>& argv, std::string* out) {
  util::RunOptions options;
  options.timeout = std::chrono::seconds(600);
  auto r = util::Run(argv, options);
  if (out) *out = r.out;
  return r.exit_code;
}

void WriteRawImage(const std::filesystem::path& path, uint64_t size, uint64_t data_bytes,
                   uint32_t seed) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path.string());
  std::mt19937_64 rng(seed);
  std::string block(1 << 20, '\0');
  for (uint64_t off = 0; off < data_bytes; off += block.size()) {
    for (size_t i = 0; i + 8 <= block.size(); i += 8) {
      uint64_t v = rng() | 1;  // never an all-zero word, so no 4 KiB block is all zero
      std::memcpy(&block[i], &v, 8);
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(block.size(), data_bytes - off));
    if (::pwrite(fd, block.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      ::close(fd);
      throw std::runtime_error("write failed: " + path.string());
    }
  }
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    ::close(fd);
    throw std::runtime_error("truncate failed: " + path.string());
  }
  ::close(fd);
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::filesystem::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

}  // namespace cachemgr::test
