#include "storage/rbd/rbd_io.h"

#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <system_error>

#include <spdlog/spdlog.h>

#include "storage/rbd/rbd_error.h"
#include "storage/rbd/rbd_remove.h"

namespace cachemgr::storage::rbd {
namespace {

// Granularity of hole detection inside an object: what `rbd import` uses by default.
constexpr size_t kSparseBlock = 4096;

bool IsZero(const std::byte* p, size_t n) {
  // Whole 8-byte words, OR-ed 4 at a time (vectorized; data blocks usually stop at the
  // first word), then the tail bytes.
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    uint64_t w[4];
    std::memcpy(w, p + i, sizeof(w));
    if ((w[0] | w[1] | w[2] | w[3]) != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  return true;
}

}  // namespace

RbdImageWriter::RbdImageWriter(std::shared_ptr<PoolCtx> pool, std::string name, uint64_t size,
                               uint32_t queue_depth, std::chrono::seconds op_timeout,
                               std::shared_ptr<spdlog::logger> logger)
    : pool_(std::move(pool)),
      name_(std::move(name)),
      where_(pool_->Where(name_)),
      log_(std::move(logger)),
      size_(size),
      queue_depth_(std::max<uint32_t>(queue_depth, 1)),
      op_timeout_(op_timeout),
      start_(std::chrono::steady_clock::now()) {
  // The image exists already: from here on the destructor removes it on failure.
  const int r = WithImageCtxLock(
      [&] { return rbd_open(pool_->io.get(), name_.c_str(), image_.out(), nullptr); });
  if (r < 0) {
    (void)RemoveUnderLock(pool_->io.get(), name_);
    ThrowErrno(r, "open for import", where_);
  }
  rbd_image_info_t info{};
  Check(rbd_stat(image_.get(), &info, sizeof(info)), "stat", where_);
  if (info.obj_size > 0) object_size_ = info.obj_size;
  cur_.resize(object_size_);
}

RbdImageWriter::~RbdImageWriter() {
  if (finished_) return;
  // Every write must be done before the image can be closed and removed, and the buffers
  // freed. Against a dead OSD each of those steps waits out the op timeout, so they run on
  // a thread of their own that owns what the writes still use; the caller waits for it a
  // bounded time and, past that, the staging image is left for gc (its name says so).
  struct Abandoned {
    std::shared_ptr<PoolCtx> pool;
    std::string name;
    std::string where;
    ImageHandle image;
    std::deque<Batch> in_flight;
    std::shared_ptr<spdlog::logger> log;
    uint64_t bytes_in = 0;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto job = std::make_shared<Abandoned>();
  job->pool = pool_;
  job->name = name_;
  job->where = where_;
  job->image = std::move(image_);
  job->in_flight = std::move(in_flight_);
  job->log = log_;
  job->bytes_in = stats_.bytes_in;
  const auto start = std::chrono::steady_clock::now();
  // Also the body of a thread the library starts (below): nothing may escape it, or the
  // host process ends (std::terminate). A failure leaves the staging image for gc.
  auto cleanup = [job]() noexcept {
    try {
      for (auto& batch : job->in_flight) {
        for (auto& c : batch.writes) rbd_aio_wait_for_complete(c.get());
      }
      job->in_flight.clear();
      if (job->image) (void)TrimForRemoval(job->image.get());  // rbd_remove.cpp
      job->image.reset();
      const int r = RemoveUnderLock(job->pool->io.get(), job->name);
      if (r < 0 && r != -ENOENT) {
        job->log->error(
            "rbd import abandoned, removing the partial image failed, left for gc image={} "
            "errno={}",
            job->where, -r);
      } else {
        job->log->warn("rbd import abandoned, partial image removed image={} bytes_in={}",
                       job->where, job->bytes_in);
      }
      std::lock_guard lock(job->mu);
      job->done = true;
      job->cv.notify_all();
    } catch (const std::exception& e) {
      job->log->error("rbd import abandoned, cleanup failed, left for gc image={} error={}",
                      job->where, e.what());
    }
  };
  if (op_timeout_.count() == 0) {
    cleanup();  // no op timeout configured: every step ends on its own
    return;
  }
  // After a timed-out write the cluster is most likely unreachable: the removal would
  // only time out as well, so the caller hears of the failure without waiting for it.
  const auto budget = error_ == -ETIMEDOUT
                          ? std::min<std::chrono::seconds>(op_timeout_, std::chrono::seconds(5))
                          : op_timeout_;
  try {
    std::thread(cleanup).detach();
  } catch (const std::system_error&) {
    cleanup();
    return;
  }
  try {
    std::unique_lock lock(job->mu);
    if (!job->cv.wait_for(lock, budget, [&] { return job->done; })) {
      log_->warn(
          "rbd import abandoned, partial image not yet removed, left for gc if the removal "
          "does not finish image={} ms={}",
          where_,
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                start)
              .count());
    }
  } catch (const std::exception& e) {
    // Destructors never throw: the removal goes on alone, or gc removes the image.
    log_->error("rbd import abandoned, waiting for the removal failed image={} error={}", where_,
                e.what());
  }
}

void RbdImageWriter::ThrowIfFailed() const {
  if (error_ < 0) {
    ThrowErrno(error_, "write", where_ + " at offset " + std::to_string(error_offset_));
  }
}

void RbdImageWriter::Append(std::span<const std::byte> data) {
  if (finished_) throw Error(Errc::kInternal, "rbd import " + where_ + ": Append after Finish");
  ThrowIfFailed();
  if (offset_ + fill_ + data.size() > size_) {
    throw Error(Errc::kInvalidArgument,
                "rbd import " + where_ + ": data runs past the image size " +
                    std::to_string(size_) + " (at " + std::to_string(offset_ + fill_) + " + " +
                    std::to_string(data.size()) + ")");
  }
  stats_.bytes_in += data.size();
  while (!data.empty()) {
    const size_t n = std::min(data.size(), cur_.size() - fill_);
    std::memcpy(cur_.data() + fill_, data.data(), n);
    fill_ += n;
    data = data.subspan(n);
    if (fill_ == cur_.size()) Submit();
  }
}

void RbdImageWriter::AppendZeros(uint64_t n) {
  if (finished_) throw Error(Errc::kInternal, "rbd import " + where_ + ": Append after Finish");
  ThrowIfFailed();
  if (offset_ + fill_ + n > size_) {
    throw Error(Errc::kInvalidArgument,
                "rbd import " + where_ + ": zeros run past the image size " +
                    std::to_string(size_) + " (at " + std::to_string(offset_ + fill_) + " + " +
                    std::to_string(n) + ")");
  }
  stats_.bytes_in += n;
  // The object being gathered may hold data: zeros fill it up to its end.
  if (fill_ > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, cur_.size() - fill_));
    std::memset(cur_.data() + fill_, 0, k);
    fill_ += k;
    n -= k;
    if (fill_ == cur_.size()) Submit();
    if (n == 0) return;
  }
  // Whole objects of zeros: a new image reads zeros there already, nothing to write.
  const uint64_t skip = n - n % cur_.size();
  offset_ += skip;
  n -= skip;
  // The rest begins the next object (cur_ may be a recycled buffer: cleared).
  std::memset(cur_.data(), 0, static_cast<size_t>(n));
  fill_ = static_cast<size_t>(n);
}

void RbdImageWriter::Submit() {
  Batch batch;
  batch.offset = offset_;
  batch.buf = std::move(cur_);
  const size_t len = fill_;
  size_t pos = 0;
  while (pos < len) {
    // Skip a run of zero blocks, then gather a run of data blocks.
    while (pos < len && IsZero(batch.buf.data() + pos, std::min(kSparseBlock, len - pos))) {
      pos += kSparseBlock;
    }
    if (pos >= len) break;
    size_t end = pos;
    while (end < len && !IsZero(batch.buf.data() + end, std::min(kSparseBlock, len - end))) {
      end += kSparseBlock;
    }
    end = std::min(end, len);
    CompletionHandle c;
    Check(rbd_aio_create_completion(nullptr, nullptr, c.out()), "aio completion", where_);
    const int r = rbd_aio_write(image_.get(), offset_ + pos, end - pos,
                                reinterpret_cast<const char*>(batch.buf.data() + pos), c.get());
    if (r < 0) {
      if (error_ == 0) {
        error_ = r;
        error_offset_ = offset_ + pos;
      }
      break;
    }
    batch.writes.push_back(std::move(c));
    stats_.bytes_written += end - pos;
    pos = end;
  }
  offset_ += len;
  fill_ = 0;

  if (batch.writes.empty()) {
    cur_ = std::move(batch.buf);
  } else {
    in_flight_.push_back(std::move(batch));
    if (!spare_.empty()) {
      cur_ = std::move(spare_.back());
      spare_.pop_back();
    } else {
      cur_.assign(object_size_, std::byte{0});
    }
    while (in_flight_.size() > queue_depth_) {
      Reap(in_flight_.front());
      spare_.push_back(std::move(in_flight_.front().buf));
      in_flight_.pop_front();
    }
  }
  ThrowIfFailed();
}

void RbdImageWriter::Reap(Batch& batch) {
  for (auto& c : batch.writes) {
    rbd_aio_wait_for_complete(c.get());
    const ssize_t r = rbd_aio_get_return_value(c.get());
    if (r < 0 && error_ == 0) {
      error_ = static_cast<int>(r);
      error_offset_ = batch.offset;
    }
  }
  batch.writes.clear();
}

void RbdImageWriter::Drain() {
  while (!in_flight_.empty()) {
    Reap(in_flight_.front());
    in_flight_.pop_front();
  }
}

ImportStats RbdImageWriter::Finish() {
  if (finished_) throw Error(Errc::kInternal, "rbd import " + where_ + ": Finish called twice");
  ThrowIfFailed();
  if (fill_ > 0) Submit();
  Drain();
  ThrowIfFailed();
  Check(rbd_flush(image_.get()), "flush", where_);
  const int r = CloseImage(image_.release());
  Check(r, "close after import", where_);
  finished_ = true;
  stats_.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start_);
  log_->debug("rbd import done image={} bytes_in={} bytes_written={} ms={}", where_,
              stats_.bytes_in, stats_.bytes_written, stats_.elapsed.count() / 1000);
  return stats_;
}

RbdImageReader::RbdImageReader(std::shared_ptr<PoolCtx> pool, ImageHandle image, std::string where)
    : pool_(std::move(pool)), image_(std::move(image)), where_(std::move(where)) {
  Check(rbd_get_size(image_.get(), &size_), "get size", where_);
}

size_t RbdImageReader::Read(uint64_t offset, std::span<std::byte> out) {
  if (offset >= size_ || out.empty()) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
  const ssize_t r = rbd_read(image_.get(), offset, n, reinterpret_cast<char*>(out.data()));
  Check(r, "read", where_ + " at offset " + std::to_string(offset));
  return static_cast<size_t>(r);
}

}  // namespace cachemgr::storage::rbd
