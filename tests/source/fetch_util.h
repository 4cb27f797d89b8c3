// tests/source/fetch_util.h: helpers of the source and fetch tests.
#pragma once

#include <doctest/doctest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cachemgr/error.h"
#include "fetch/fetch.h"
#include "source/source.h"
#include "storage/factory.h"
#include "support/test_util.h"
#include "util/hash.h"
#include "util/process.h"

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
  auto r = util::Run(argv);
  std::string line;
  for (const auto& a : argv) line += a + " ";
  REQUIRE_MESSAGE(r.exit_code == 0, "qemu-img failed: " << line << "exit " << r.exit_code
                                                        << " signal " << r.signal << ": " << r.err);
}

inline std::string Md5(const std::filesystem::path& p) { return util::HashFile("md5", p.string()); }

inline std::vector<std::string> EntryImages(FetchBed& bed) {
  try {
    return bed.backend->List(bed.backend->entry_pool());
  } catch (const Error& e) {
    if (e.code() == Errc::kNotFound) return {};
    throw;
  }
}

inline void WriteSidecar(const std::filesystem::path& dir, const std::string& id,
                         const nlohmann::json& j) {
  WriteFile(dir / (id + ".json"), j.dump());
}

// A directory source with a raw "golden" file made from a deterministic pattern.
struct DirBed : FetchBed {
  std::filesystem::path images;
  std::unique_ptr<source::Source> source;
  std::filesystem::path golden;
  DirBed() {
    images = tmp / "images";
    std::filesystem::create_directories(images);
    source = source::MakeFileSource({images.string()}, nullptr);
    golden = tmp / "golden.raw";
    WriteRawImage(golden, 8 << 20, 3 << 20, 7);
  }
  // Converts the golden image to `fmt` as image `id` in the directory.
  void Add(const std::string& id, const std::string& fmt, std::vector<std::string> opts = {}) {
    std::vector<std::string> args = {"convert", "-f", "raw", "-O", fmt};
    for (auto& o : opts) args.push_back(o);
    args.push_back(golden.string());
    args.push_back((images / id).string());
    QemuImg(args);
  }
  fetch::FetchResult Fetch(const std::string& id, const std::string& dest) {
    auto meta = source->Describe(id);
    return fetch::FetchInto(*source, meta, *backend, Ref(dest), options, nullptr);
  }
  // Fetching `id` fails with `code`, naming the image, leaving nothing behind.
  Error FetchFails(const std::string& id, std::optional<source::ImageMeta> meta = std::nullopt) {
    if (!meta) meta = source->Describe(id);
    Error e = Thrown(
        [&] { fetch::FetchInto(*source, *meta, *backend, Ref("entry-" + id), options, nullptr); });
    CHECK_MESSAGE(std::string(e.what()).find(id) != std::string::npos, e.what());
    CHECK(EntryImages(*this).empty());
    CHECK(!backend->Exists(Ref("entry-" + id)));
    CHECK(ConversionFiles() == 0);
    return e;
  }
};

}  // namespace cachemgr::test
