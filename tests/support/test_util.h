// tests/support/test_util.h: helpers every test executable shares.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace cachemgr::test {

// A fresh directory under the test run dir, removed by the destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "t");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The run dir the CTest fixtures use ($CACHEMGR_TEST_RUN_DIR).
std::filesystem::path RunDir();

// Bytes this process has read through read(2)/pread(2) so far, all threads (rchar of
// /proc/self/io); 0 if unknown.
uint64_t BytesReadSoFar();

// Waits for `ready` to hold, asking it again every few ms (for what another process does,
// which no clock of this one can move); false if it still does not hold after `limit`.
bool WaitUntil(const std::function<bool()>& ready, std::chrono::milliseconds limit);

// Runs a command (argv, no shell); returns its exit code, stdout into *out if given.
int RunCommand(const std::vector<std::string>& argv, std::string* out = nullptr);

// Writes `size` bytes of a deterministic pattern seeded by `seed` (non-zero every
// 4 KiB) with `data_bytes` of data at the start and the rest a hole (sparse).
void WriteRawImage(const std::filesystem::path& path, uint64_t size, uint64_t data_bytes,
                   uint32_t seed);

std::string ReadFile(const std::filesystem::path& path);
void WriteFile(const std::filesystem::path& path, const std::string& content);

}  // namespace cachemgr::test
