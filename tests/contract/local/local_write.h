// tests/contract/local/local_write.h: writes into a local backend's image the way a VM
// writes its disk (the contract's Target::write_bytes).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "storage/local/local_backend.h"
#include "support/test_util.h"

namespace cachemgr::test {

inline void WriteLocalBytes(storage::LocalBackend& backend, const storage::ImageRef& ref,
                            uint64_t offset, uint64_t length, uint8_t byte) {
  auto path = backend.PathOf(ref);
  if (backend.FormatOf(ref) == "qcow2") {
    char pattern[8];
    std::snprintf(pattern, sizeof pattern, "0x%02x", byte);
    std::string out;
    int rc = RunCommand({"qemu-io", "-f", "qcow2", "-c",
                         "write -P " + std::string(pattern) + " " + std::to_string(offset) + " " +
                             std::to_string(length),
                         path.string()},
                        &out);
    REQUIRE_MESSAGE(rc == 0, "qemu-io write failed on " << path << ": " << out);
    REQUIRE_MESSAGE(out.find("wrote") != std::string::npos, "qemu-io: " << out);
    return;
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE_MESSAGE(fd >= 0, "cannot open " << path);
  std::string data(length, static_cast<char>(byte));
  auto n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
  ::close(fd);
  REQUIRE(n == static_cast<ssize_t>(data.size()));
}

}  // namespace cachemgr::test
