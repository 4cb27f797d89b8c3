// storage/local/local_qcow2_header.cpp: see local_qcow2_header.h.
#include "storage/local/local_qcow2_header.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>

#include "util/byte_order.h"
#include "util/unique_fd.h"

namespace cachemgr::storage {

namespace fs = std::filesystem;

namespace {
constexpr char kQcow2Magic[4] = {'Q', 'F', 'I', '\xfb'};
}  // namespace

Qcow2Header ReadQcow2Header(const fs::path& path) {
  Qcow2Header h;
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) return h;
  util::UniqueFd fd(raw);
  std::array<unsigned char, 32> buf{};
  if (::pread(fd.get(), buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) return h;
  if (std::memcmp(buf.data(), kQcow2Magic, 4) != 0) return h;
  h.is_qcow2 = true;
  uint64_t backing_offset = util::LoadBe64(&buf[8]);
  uint32_t backing_size = util::LoadBe32(&buf[16]);
  h.size = util::LoadBe64(&buf[24]);
  if (backing_offset != 0 && backing_size > 0 && backing_size <= 1023) {
    std::string name(backing_size, '\0');
    if (::pread(fd.get(), name.data(), name.size(), static_cast<off_t>(backing_offset)) ==
        static_cast<ssize_t>(name.size())) {
      fs::path b(name);
      if (b.is_relative()) b = path.parent_path() / b;
      h.backing_as_opened = b;
      h.backing = b.lexically_normal();
    }
  }
  return h;
}

}  // namespace cachemgr::storage
