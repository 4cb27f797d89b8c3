// tests/contract/local/reflink_root.h: a folder where FICLONE works, for the reflink mode.
//
// The run dir itself when its filesystem supports reflinks; otherwise a small XFS
// filesystem (reflink=1) in a sparse file, loop-mounted for the life of the test
// executable and unmounted at exit (needs root and mkfs.xfs; the test fails, rather than
// passing silently, when neither is available).
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "storage/local/local_backend.h"
#include "support/test_util.h"

namespace cachemgr::test {

class ReflinkRoot {
 public:
  ReflinkRoot() {
    base_ = RunDir() / "tmp" / ("reflink-" + std::to_string(::getpid()));
    std::filesystem::create_directories(base_);
    if (storage::LocalBackend::ReflinkWorks(base_)) {
      path_ = base_;
      return;
    }
    auto image = base_ / "xfs.img";
    auto mnt = base_ / "mnt";
    std::filesystem::create_directories(mnt);
    std::string out;
    REQUIRE_MESSAGE(RunCommand({"truncate", "-s", "320M", image.string()}) == 0, "truncate");
    REQUIRE_MESSAGE(RunCommand({"mkfs.xfs", "-q", "-m", "reflink=1", image.string()}, &out) == 0,
                    "mkfs.xfs failed (needed for the reflink mode here): " << out);
    REQUIRE_MESSAGE(RunCommand({"mount", "-o", "loop", image.string(), mnt.string()}, &out) == 0,
                    "loop mount of an XFS image failed (needs root): " << out);
    mounted_ = mnt;
    path_ = mnt;
    REQUIRE_MESSAGE(storage::LocalBackend::ReflinkWorks(path_), "no reflink on " << path_);
  }
  ~ReflinkRoot() {
    if (!mounted_.empty()) RunCommand({"umount", mounted_.string()});
    std::error_code ec;
    std::filesystem::remove_all(base_, ec);
  }
  ReflinkRoot(const ReflinkRoot&) = delete;
  ReflinkRoot& operator=(const ReflinkRoot&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path base_;
  std::filesystem::path path_;
  std::filesystem::path mounted_;
};

}  // namespace cachemgr::test
