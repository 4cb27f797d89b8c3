#include "util/hash.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "cachemgr/error.h"
#include "util/hex.h"

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
  digest_ = HexEncode({md, len});
  return digest_;
}

ParallelHasher::ParallelHasher(const std::vector<std::string>& algos, size_t block_size,
                               size_t depth) {
  for (const auto& a : algos) hashers_.emplace_back(a);
  if (hashers_.empty()) return;
  blocks_.resize(std::max<size_t>(depth, 2));
  for (auto& b : blocks_) b.resize(std::max<size_t>(block_size, 4096));
  block_fill_.resize(blocks_.size());
  consumed_.assign(hashers_.size(), 0);
  threads_.reserve(hashers_.size());
  try {
    for (size_t i = 0; i < hashers_.size(); ++i) threads_.emplace_back([this, i] { Work(i); });
  } catch (...) {
    Stop();
    throw;
  }
}

ParallelHasher::~ParallelHasher() { Stop(); }

void ParallelHasher::Stop() {
  {
    std::lock_guard lock(mu_);
    done_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void ParallelHasher::Work(size_t worker) noexcept {
  try {
    HashBlocks(worker);
  } catch (...) {
    // Only the ring's lock can fail here (HashBlocks keeps the hashing's own errors): the
    // feeder stops waiting for this worker and fails instead of ending the process.
    worker_failed_.store(true);
    free_cv_.notify_all();
  }
}

void ParallelHasher::ThrowIfWorkerFailed() const {
  if (worker_failed_.load()) {
    throw Error(Errc::kInternal, "parallel digest: a digest thread failed; the digests are lost");
  }
}

void ParallelHasher::HashBlocks(size_t worker) {
  Hasher& hasher = hashers_[worker];
  std::unique_lock lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return consumed_[worker] < published_ || done_; });
    if (consumed_[worker] >= published_) return;  // done_ and nothing left
    const uint64_t seq = consumed_[worker];
    const size_t slot = seq % blocks_.size();
    lock.unlock();
    // The block is not refilled before every worker has moved past it.
    try {
      hasher.Update(blocks_[slot].data(), block_fill_[slot]);
    } catch (...) {
      lock.lock();
      if (!error_) error_ = std::current_exception();
      consumed_[worker] = seq + 1;
      free_cv_.notify_all();
      continue;
    }
    lock.lock();
    consumed_[worker] = seq + 1;
    free_cv_.notify_all();
  }
}

void ParallelHasher::Publish() {
  if (fill_ == 0) return;
  std::unique_lock lock(mu_);
  block_fill_[published_ % blocks_.size()] = fill_;
  ++published_;
  fill_ = 0;
  work_cv_.notify_all();
  // The next block to fill must be free: every worker past its previous use.
  free_cv_.wait(lock, [&] {
    if (worker_failed_.load()) return true;
    for (uint64_t c : consumed_) {
      if (published_ - c >= blocks_.size()) return false;
    }
    return true;
  });
  ThrowIfWorkerFailed();  // nothing more is written: the ring is no longer known free
}

void ParallelHasher::Update(std::span<const std::byte> data) {
  if (finished_) throw Error(Errc::kInternal, "parallel digest updated after Finish");
  bytes_ += data.size();
  if (hashers_.empty()) return;
  while (!data.empty()) {
    auto& block = blocks_[published_ % blocks_.size()];
    const size_t n = std::min(data.size(), block.size() - fill_);
    std::memcpy(block.data() + fill_, data.data(), n);
    fill_ += n;
    data = data.subspan(n);
    if (fill_ == block.size()) Publish();
  }
}

std::vector<std::string> ParallelHasher::Finish() {
  if (finished_) throw Error(Errc::kInternal, "parallel digest finished twice");
  finished_ = true;
  if (!hashers_.empty()) {
    Publish();
    Stop();
  }
  ThrowIfWorkerFailed();
  if (error_) std::rethrow_exception(error_);
  std::vector<std::string> out;
  for (auto& h : hashers_) out.push_back(h.HexDigest());
  return out;
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
