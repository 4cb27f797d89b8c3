#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <span>
#include <stdexcept>
#include <string>

#include "cachemgr/error.h"
#include "convert/qcow2_reader.h"
#include "fuzz_entry.h"
#include "util/byte_order.h"

namespace cachemgr::fuzz {
namespace {

// Disks larger than this are not read (a header may claim any size): the reader's work
// is in proportion to the disk.
constexpr uint64_t kMaxDisk = 64ull << 20;

struct MemFile {
  int fd = ::memfd_create("qcow2-fuzz", MFD_CLOEXEC);
  ~MemFile() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

void Qcow2One(const uint8_t* data, size_t size) {
  if (size < 32) return;
  const uint64_t disk = util::LoadBe64(data + 24);
  if (disk > kMaxDisk) return;
  MemFile f;
  if (f.fd < 0) throw std::runtime_error("memfd_create failed");
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(f.fd, data + done, size - done);
    if (n <= 0) throw std::runtime_error("memfd write failed");
    done += static_cast<size_t>(n);
  }
  if (!convert::Qcow2ReaderRefuses(f.fd, disk).empty()) return;
  uint64_t handed = 0;
  try {
    convert::ReadQcow2Disk(
        f.fd, disk, "fuzz",
        {.zeros = [&](uint64_t n) { handed += n; },
         .data = [&](std::span<const std::byte> d) { handed += d.size(); }},
        2, std::chrono::seconds(60));
  } catch (const Error& e) {
    if (e.code() != Errc::kCorrupt && e.code() != Errc::kIo && e.code() != Errc::kTimeout) {
      throw std::logic_error(std::string("the qcow2 reader failed otherwise than kCorrupt: ") +
                             e.what());
    }
    if (handed > disk) throw std::logic_error("the qcow2 reader handed over more than the disk");
    return;
  }
  if (handed != disk) {
    throw std::logic_error("the qcow2 reader handed over " + std::to_string(handed) +
                           " bytes of a disk of " + std::to_string(disk));
  }
}

}  // namespace cachemgr::fuzz
