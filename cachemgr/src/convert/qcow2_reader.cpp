// convert/qcow2_reader.cpp: see qcow2_reader.h (the rules it reads by are written there).
#include "convert/qcow2_reader.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <exception>
#include <cstring>
#include <thread>
#include <vector>

#include "cachemgr/error.h"
#include "util/byte_order.h"

namespace cachemgr::convert {
namespace {

constexpr uint32_t kQcowMagic = 0x514649fb;          // "QFI\xfb"
constexpr uint64_t kTableOffsetMask = 0x00fffffffffffe00ull;  // L1 and L2 entries: bits 9-55
constexpr uint64_t kCompressedFlag = 1ull << 62;
constexpr uint64_t kZeroFlag = 1;
constexpr size_t kHeaderRead = 112;
constexpr uint64_t kRunBytes = 4ull << 20;     // a plain run read at a time
constexpr uint64_t kBatchBytes = 16ull << 20;  // compressed clusters inflated at a time
constexpr uint64_t kMaxL1Bytes = 32ull << 20;  // qemu's QCOW_MAX_L1_SIZE
constexpr uint64_t kMaxDisk = 1ull << 62;      // no qemu opens more (and no sum overflows)

struct Header {
  uint32_t version = 0;
  uint32_t cluster_bits = 0;
  uint64_t size = 0;
  uint64_t l1_offset = 0;
  uint32_t l1_size = 0;
};

size_t PReadFull(int fd, std::byte* out, size_t n, uint64_t offset, const std::string& id) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error(Errc::kIo, "image " + id + ": cannot read the qcow2 file: " + std::strerror(errno));
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

// "" and the header, or why this reader leaves the image to qemu-img.
std::string ParseHeader(int fd, uint64_t virtual_size, Header& h) {
  std::byte b[kHeaderRead] = {};
  const size_t got = PReadFull(fd, b, sizeof b, 0, "?");
  if (got < 72 || util::LoadBe32(b) != kQcowMagic) return "not a qcow2 header";
  h.version = util::LoadBe32(b + 4);
  if (h.version != 2 && h.version != 3) return "qcow2 version " + std::to_string(h.version);
  if (util::LoadBe64(b + 8) != 0) return "a backing file";
  h.cluster_bits = util::LoadBe32(b + 20);
  if (h.cluster_bits < 9 || h.cluster_bits > 21) {
    return "cluster size 2^" + std::to_string(h.cluster_bits);
  }
  h.size = util::LoadBe64(b + 24);
  if (h.size != virtual_size) return "a disk size other than the inspected one";
  if (h.size > kMaxDisk) return "a disk over 2^62 bytes";
  if (util::LoadBe32(b + 32) != 0) return "encryption";
  h.l1_size = util::LoadBe32(b + 36);
  h.l1_offset = util::LoadBe64(b + 40);
  if (h.version == 3) {
    if (got < 104) return "a short version 3 header";
    if (const uint64_t incompatible = util::LoadBe64(b + 72); incompatible != 0) {
      char hex[24];
      std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(incompatible));
      return std::string("incompatible features ") + hex +
             " (dirty, corrupt, external data file, zstd or extended L2)";
    }
    // A compression type is read only when its incompatible bit says so (qemu refuses the
    // header otherwise); whatever it says, anything but zlib is not this reader's.
    const uint32_t header_length = util::LoadBe32(b + 100);
    if (header_length > 104 && got > 104 && b[104] != std::byte{0}) {
      return "a compression type other than zlib";
    }
  }
  return "";
}

// One compressed cluster: where its deflate stream lies, where its bytes go.
struct Job {
  uint64_t disk = 0;    // disk offset, for messages
  uint64_t offset = 0;  // in the file
  uint64_t length = 0;  // bytes qemu reads
};

class Reader {
 public:
  Reader(int fd, const Header& h, const std::string& id, const DiskSink& sink, unsigned threads,
         std::chrono::seconds time_limit)
      : fd_(fd), h_(h), id_(id), sink_(sink), threads_(std::max(1u, threads)),
        cluster_(1ull << h.cluster_bits), time_limit_(time_limit),
        deadline_(std::chrono::steady_clock::now() + time_limit) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
      throw Error(Errc::kIo, "image " + id + ": cannot stat the qcow2 file: " + std::strerror(errno));
    }
    file_size_ = static_cast<uint64_t>(st.st_size);
  }

  void Run() {
    const uint64_t l2_entries = cluster_ / 8;
    const uint64_t l1_span = cluster_ * l2_entries;  // disk bytes one L2 table maps
    const uint64_t l1_needed = h_.size / l1_span + (h_.size % l1_span != 0 ? 1 : 0);
    if (l1_needed > h_.l1_size || l1_needed * 8 > kMaxL1Bytes) {
      Corrupt(0, "L1 table of " + std::to_string(h_.l1_size) + " entries is too small");
    }
    std::vector<std::byte> l1(l1_needed * 8);
    if (l1_needed > 0) {
      if (h_.l1_offset % cluster_ != 0) Corrupt(0, "L1 table offset unaligned");
      ReadTable(l1, h_.l1_offset);
    }
    std::vector<std::byte> l2(cluster_);
    for (uint64_t i = 0; i < l1_needed; ++i) {
      const uint64_t base = i * l1_span;
      const uint64_t span = std::min(l1_span, h_.size - base);
      const uint64_t l2_offset = util::LoadBe64(l1.data() + i * 8) & kTableOffsetMask;
      if (l2_offset == 0) {
        Zeros(span);
        continue;
      }
      if (l2_offset % cluster_ != 0) Corrupt(base, "L2 table offset unaligned");
      ReadTable(l2, l2_offset);
      for (uint64_t j = 0; j * cluster_ < span; ++j) {
        Cluster(base + j * cluster_, std::min(cluster_, span - j * cluster_),
                util::LoadBe64(l2.data() + j * 8));
      }
    }
    FlushCompressed();
    FlushPlain();
    FlushZeros();
  }

 private:
  // A table, with what lies past the end of the file read as zeros (as qemu reads it:
  // `qemu-img check` lets a table end up to a cluster past it).
  void ReadTable(std::vector<std::byte>& table, uint64_t offset) {
    const size_t got = offset >= file_size_ ? 0 : PReadFull(fd_, table.data(), table.size(), offset, id_);
    std::fill(table.begin() + static_cast<std::ptrdiff_t>(got), table.end(), std::byte{0});
  }

  void Cluster(uint64_t disk, uint64_t len, uint64_t entry) {
    if (entry & kCompressedFlag) {
      const uint32_t shift = 62 - (h_.cluster_bits - 8);
      const uint64_t offset = entry & ((1ull << shift) - 1);
      const uint64_t sectors = ((entry >> shift) & ((1ull << (h_.cluster_bits - 8)) - 1)) + 1;
      const uint64_t length = sectors * 512 - (offset % 512);
      if (offset >= file_size_) Corrupt(disk, "compressed cluster past the end of the file");
      FlushZeros();
      FlushPlain();
      jobs_.push_back({disk, offset, length});
      last_len_ = len;
      if (jobs_.size() * cluster_ >= kBatchBytes) FlushCompressed();
      return;
    }
    if (entry & kZeroFlag) {
      if (h_.version < 3) Corrupt(disk, "zero cluster in a version 2 image");
      Zeros(len);
      return;
    }
    const uint64_t offset = entry & kTableOffsetMask;
    if (offset == 0) {
      Zeros(len);
      return;
    }
    if (offset % cluster_ != 0) Corrupt(disk, "cluster offset unaligned");
    if (offset + len > file_size_) Corrupt(disk, "cluster past the end of the file");
    FlushCompressed();
    FlushZeros();
    if (run_len_ > 0 && run_offset_ + run_len_ == offset && run_len_ < kRunBytes) {
      run_len_ += len;
    } else {
      FlushPlain();
      run_offset_ = offset;
      run_len_ = len;
    }
  }

  void Zeros(uint64_t n) {
    FlushCompressed();
    FlushPlain();
    zeros_ += n;
  }
  void FlushZeros() {
    if (zeros_ == 0) return;
    sink_.zeros(zeros_);
    zeros_ = 0;
  }
  void FlushPlain() {
    if (run_len_ == 0) return;
    buf_.resize(std::min(run_len_, kRunBytes));
    while (run_len_ > 0) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(run_len_, buf_.size()));
      if (PReadFull(fd_, buf_.data(), want, run_offset_, id_) != want) {
        Corrupt(0, "the file ended while it was read");
      }
      sink_.data(std::span<const std::byte>(buf_.data(), want));
      run_offset_ += want;
      run_len_ -= want;
    }
  }

  // The batch's clusters, each inflated to a whole cluster by one of `threads_` workers
  // (contiguous shares, so the output stays in disk order), then handed over.
  void FlushCompressed() {
    if (jobs_.empty()) return;
    out_.resize(jobs_.size() * cluster_);
    const size_t n = jobs_.size();
    const size_t workers = std::min<size_t>(threads_, n);
    std::vector<std::exception_ptr> errors(workers);
    auto work = [&](size_t w) noexcept {
      try {
        Inflater z(*this);
        for (size_t k = n * w / workers; k < n * (w + 1) / workers; ++k) {
          z.One(jobs_[k], out_.data() + k * cluster_);
        }
      } catch (...) {
        errors[w] = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work, w);
    work(0);
    for (auto& t : pool) t.join();
    for (const auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
    if (std::chrono::steady_clock::now() > deadline_) {
      throw Error(Errc::kTimeout, "image " + id_ + ": reading the qcow2 took longer than " +
                                      std::to_string(time_limit_.count()) +
                                      " s (conversion.timeout_s)");
    }
    sink_.data(std::span<const std::byte>(out_.data(), (n - 1) * cluster_ + last_len_));
    jobs_.clear();
  }

  class Inflater {
   public:
    explicit Inflater(const Reader& r) : r_(r), in_(2 * r.cluster_) {
      if (inflateInit2(&z_, -12) != Z_OK) throw Error(Errc::kInternal, "zlib inflateInit2 failed");
    }
    ~Inflater() { inflateEnd(&z_); }
    Inflater(const Inflater&) = delete;
    Inflater& operator=(const Inflater&) = delete;

    void One(const Job& j, std::byte* out) {
      // qemu reads `length` bytes; what lies past the end of the file reads as zeros.
      const size_t want = static_cast<size_t>(std::min<uint64_t>(j.length, in_.size()));
      const size_t got = PReadFull(r_.fd_, in_.data(), want, j.offset, r_.id_);
      std::fill(in_.begin() + static_cast<std::ptrdiff_t>(got),
                in_.begin() + static_cast<std::ptrdiff_t>(want), std::byte{0});
      if (inflateReset(&z_) != Z_OK) throw Error(Errc::kInternal, "zlib inflateReset failed");
      z_.next_in = reinterpret_cast<Bytef*>(in_.data());
      z_.avail_in = static_cast<uInt>(want);
      z_.next_out = reinterpret_cast<Bytef*>(out);
      z_.avail_out = static_cast<uInt>(r_.cluster_);
      const int rc = inflate(&z_, Z_FINISH);
      if (!((rc == Z_STREAM_END || rc == Z_BUF_ERROR) && z_.avail_out == 0)) {
        throw Error(Errc::kCorrupt, r_.Where(j.disk, "compressed cluster does not inflate to a "
                                                     "whole cluster"));
      }
    }

   private:
    const Reader& r_;
    std::vector<std::byte> in_;
    z_stream z_{};
  };

  std::string Where(uint64_t disk, const std::string& what) const {
    return "image " + id_ + ": qcow2 " + what + " (disk offset " + std::to_string(disk) + ")";
  }
  [[noreturn]] void Corrupt(uint64_t disk, const std::string& what) const {
    throw Error(Errc::kCorrupt, Where(disk, what));
  }

  int fd_;
  Header h_;
  const std::string& id_;
  const DiskSink& sink_;
  unsigned threads_;
  uint64_t cluster_;
  std::chrono::seconds time_limit_;
  std::chrono::steady_clock::time_point deadline_;
  uint64_t file_size_ = 0;
  uint64_t zeros_ = 0;
  uint64_t run_offset_ = 0, run_len_ = 0;
  std::vector<Job> jobs_;
  uint64_t last_len_ = 0;  // the disk bytes of the batch's last cluster
  std::vector<std::byte> buf_, out_;
};

}  // namespace

std::string Qcow2ReaderRefuses(int fd, uint64_t virtual_size) {
  Header h;
  return ParseHeader(fd, virtual_size, h);
}

void ReadQcow2Disk(int fd, uint64_t virtual_size, const std::string& image_id,
                   const DiskSink& sink, unsigned threads, std::chrono::seconds time_limit) {
  Header h;
  if (auto why = ParseHeader(fd, virtual_size, h); !why.empty()) {
    throw Error(Errc::kInternal, "image " + image_id + ": qcow2 reader used on " + why);
  }
  Reader(fd, h, image_id, sink, threads, time_limit).Run();
}

}  // namespace cachemgr::convert
