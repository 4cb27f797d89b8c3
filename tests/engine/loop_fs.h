// tests/engine/loop_fs.h: a small ext4 filesystem in a file, loop-mounted for one test and
// unmounted (its loop device detached) by the destructor, also when the test fails.
#pragma once

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "support/test_util.h"

namespace cachemgr::test {

class LoopFs {
 public:
  LoopFs(const std::filesystem::path& image, const std::filesystem::path& mnt, uint64_t bytes)
      : image_(image), mnt_(mnt) {
    std::filesystem::create_directories(mnt_);
    std::string out;
    REQUIRE(RunCommand({"truncate", "-s", std::to_string(bytes), image_.string()}) == 0);
    // No reserved blocks and no journal: every byte of the figures is the cache's to use.
    REQUIRE_MESSAGE(
        RunCommand({"mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", image_.string()},
                   &out) == 0,
        "mkfs.ext4 failed: " << out);
    REQUIRE_MESSAGE(RunCommand({"mount", "-o", "loop", image_.string(), mnt_.string()}, &out) == 0,
                    "loop mount failed (needs root): " << out);
    mounted_ = true;
  }
  ~LoopFs() {
    if (mounted_ && RunCommand({"umount", mnt_.string()}) != 0) {
      RunCommand({"umount", "-l", mnt_.string()});  // busy: detached now, freed when closed
    }
    // mount -o loop sets autoclear; a device left attached anyway (an old util-linux, a
    // lazy unmount) is detached here.
    std::string devices;
    RunCommand({"losetup", "-l", "-n", "-O", "NAME", "-j", image_.string()}, &devices);
    size_t start = 0;
    while (start < devices.size()) {
      size_t end = devices.find('\n', start);
      if (end == std::string::npos) end = devices.size();
      const auto dev = devices.substr(start, end - start);
      if (!dev.empty()) RunCommand({"losetup", "-d", dev});
      start = end + 1;
    }
  }
  LoopFs(const LoopFs&) = delete;
  LoopFs& operator=(const LoopFs&) = delete;
  const std::filesystem::path& mnt() const { return mnt_; }

 private:
  std::filesystem::path image_;
  std::filesystem::path mnt_;
  bool mounted_ = false;
};

}  // namespace cachemgr::test
