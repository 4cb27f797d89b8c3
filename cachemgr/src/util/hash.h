// util/hash.h: streaming message digests (OpenSSL EVP) for image integrity checks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace cachemgr::util {

// Two hex digests are the same digest whatever the case of their letters (Glance and
// sidecars may give upper-case hex; ours is lower-case).
inline bool SameDigest(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

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

// Several digests over the same byte stream, each on a thread of its own, so that the
// thread that feeds the bytes (a download) only copies them. The bytes go through a
// fixed ring of `depth` blocks of `block_size` bytes: Update() waits while every block
// is still being hashed, so memory stays at depth x block_size whatever the input rate.
class ParallelHasher {
 public:
  // kInvalidArgument for an unsupported algorithm. No algorithms: Update only counts.
  explicit ParallelHasher(const std::vector<std::string>& algos, size_t block_size = 1 << 20,
                          size_t depth = 8);
  // Stops and joins the workers (digests not taken are dropped).
  ~ParallelHasher();
  ParallelHasher(const ParallelHasher&) = delete;
  ParallelHasher& operator=(const ParallelHasher&) = delete;

  void Update(std::span<const std::byte> data);
  uint64_t bytes() const { return bytes_; }
  // Waits for every block; returns the lowercase hex digests in the order of `algos`.
  // Rethrows a worker's error. Once only.
  std::vector<std::string> Finish();

 private:
  void Publish();  // hands the block being filled to the workers
  // A worker thread's body: never throws (an escaping exception would end the host
  // process); HashBlocks does the work.
  void Work(size_t worker) noexcept;
  void HashBlocks(size_t worker);
  void Stop();
  void ThrowIfWorkerFailed() const;

  std::vector<Hasher> hashers_;
  std::vector<std::vector<std::byte>> blocks_;
  std::vector<size_t> block_fill_;  // bytes in each published block
  size_t fill_ = 0;                 // bytes in the block being filled (blocks_[published_ % depth])
  uint64_t bytes_ = 0;

  std::mutex mu_;
  std::condition_variable work_cv_, free_cv_;
  uint64_t published_ = 0;          // blocks handed out
  std::vector<uint64_t> consumed_;  // blocks each worker is done with
  bool done_ = false;
  bool finished_ = false;
  std::exception_ptr error_;
  // A worker stopped by an error outside its hashing (its lock): set without the lock.
  std::atomic<bool> worker_failed_{false};
  std::vector<std::thread> threads_;
};

// Hex digest of a whole file (kIo when it cannot be read).
std::string HashFile(const std::string& algo, const std::string& path);

}  // namespace cachemgr::util
