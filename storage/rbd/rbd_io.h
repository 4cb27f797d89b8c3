// storage/rbd/rbd_io.h: the streaming writer and the reader.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "storage/backend.h"
#include "storage/rbd/rbd_backend.h"
#include "storage/rbd/rbd_handles.h"

namespace cachemgr::storage::rbd {

// Fills a freshly created image front to back, the way `rbd import` does: data is
// gathered into object-sized, object-aligned buffers; within a buffer only the runs of
// non-zero 4 KiB blocks are written, so the image stays sparse; at most `queue_depth`
// buffers have writes in flight; the first failed write wins and is thrown from the next
// Append() or from Finish(). Without Finish() the destructor removes the image, waiting
// for that at most `op_timeout` (5 s after a timed-out write: the cluster is most likely
// unreachable); past that the removal goes on in the background and, if the process ends
// first, the staging image is left for gc. op_timeout 0 waits without bound.
class RbdImageWriter final : public ImageWriter {
 public:
  RbdImageWriter(std::shared_ptr<PoolCtx> pool, std::string name, uint64_t size,
                 uint32_t queue_depth, std::chrono::seconds op_timeout,
                 std::shared_ptr<spdlog::logger> logger);
  ~RbdImageWriter() override;

  void Append(std::span<const std::byte> data) override;
  void AppendZeros(uint64_t n) override;
  ImportStats Finish() override;

 private:
  struct Batch {  // one object's buffer and the writes that still read from it
    uint64_t offset = 0;  // image offset of buf[0]
    std::vector<std::byte> buf;
    std::vector<CompletionHandle> writes;
  };
  void Submit();                   // writes the current buffer's non-zero runs
  void Reap(Batch& batch);         // waits for a batch's writes, keeps the first error
  void Drain();                    // reaps every batch in flight
  void ThrowIfFailed() const;

  std::shared_ptr<PoolCtx> pool_;
  std::string name_;
  std::string where_;
  ImageHandle image_;
  std::shared_ptr<spdlog::logger> log_;
  uint64_t size_;
  uint64_t object_size_ = 4 << 20;
  size_t queue_depth_;
  std::chrono::seconds op_timeout_;
  std::vector<std::byte> cur_;     // the object being gathered
  size_t fill_ = 0;                // bytes of cur_ used
  uint64_t offset_ = 0;            // image offset of cur_[0]
  std::deque<Batch> in_flight_;
  std::vector<std::vector<std::byte>> spare_;  // recycled buffers
  int error_ = 0;                  // first failed write (negative errno)
  uint64_t error_offset_ = 0;
  bool finished_ = false;
  ImportStats stats_;
  std::chrono::steady_clock::time_point start_;
};

class RbdImageReader final : public ImageReader {
 public:
  RbdImageReader(std::shared_ptr<PoolCtx> pool, ImageHandle image, std::string where);
  uint64_t size() const override { return size_; }
  size_t Read(uint64_t offset, std::span<std::byte> out) override;

 private:
  std::shared_ptr<PoolCtx> pool_;  // declared before image_: the image closes first
  ImageHandle image_;
  std::string where_;
  uint64_t size_ = 0;
};

}  // namespace cachemgr::storage::rbd
