// tests/source/fetch_util.h: helpers of the source and fetch tests.
#pragma once

#include <doctest/doctest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "cachemgr/error.h"
#include "fetch/fetch.h"
#include "storage/factory.h"
#include "support/test_util.h"

namespace cachemgr::test {

// A local backend and a conversion dir under one temp dir.
struct FetchBed {
  TempDir tmp{"fetch"};
  std::unique_ptr<storage::Backend> backend;
  fetch::FetchOptions options;
  FetchBed() {
    LocalBackendOptions lo;
    lo.root = (tmp / "backend").string();
    lo.clone_mode = CloneMode::kCopy;
    backend = storage::MakeLocalBackend(lo, nullptr);
    options.conversion.dir = (tmp / "conversion").string();
    options.conversion.timeout_s = 120;
  }
  storage::ImageRef Ref(const std::string& name) const { return {backend->entry_pool(), name}; }
  // Files left in the conversion dir (it may not exist yet).
  size_t ConversionFiles() const {
    std::error_code ec;
    if (!std::filesystem::exists(options.conversion.dir, ec)) return 0;
    size_t n = 0;
    for ([[maybe_unused]] const auto& e :
         std::filesystem::directory_iterator(options.conversion.dir)) {
      ++n;
    }
    return n;
  }
  // Every byte of a backend image.
  std::string ReadImage(const storage::ImageRef& ref) {
    auto reader = backend->Open(ref, std::nullopt);
    std::string out(reader->size(), '\0');
    uint64_t off = 0;
    while (off < out.size()) {
      size_t n = reader->Read(off, std::as_writable_bytes(std::span(out.data() + off, out.size() - off)));
      REQUIRE(n > 0);
      off += n;
    }
    return out;
  }
};

// Runs `fn` and returns the Error it throws (FAILs if it throws nothing).
template <typename Fn>
Error Thrown(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no cachemgr::Error was thrown");
  return Error(Errc::kInternal, "");
}

// qemu-img, failing the test when it does.
inline void QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  REQUIRE_MESSAGE(RunCommand(argv) == 0, "qemu-img failed");
}

}  // namespace cachemgr::test
