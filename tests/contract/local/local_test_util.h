// Helpers of the local backend's own tests: a backend on a root, an image imported from
// a raw file, an entry's protected snapshot, and what qemu-img says of an overlay.
#pragma once

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "storage/local/local_backend.h"
#include "support/test_util.h"

namespace cachemgr::test {

namespace fs = std::filesystem;
using storage::ImageRef;
using storage::LocalBackend;
using storage::SnapRef;
constexpr uint64_t kMiB = 1024 * 1024;
// Nova names a base by sha1(image_id); any such name will do here.
inline const std::string kBaseName = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3";

inline std::unique_ptr<LocalBackend> MakeLocal(const fs::path& root, CloneMode mode = CloneMode::kQcow2,
                                        const std::string& owner = "",
                                        const std::string& group = "", uint32_t file_mode = 0644) {
  LocalBackendOptions options;
  options.root = root.string();
  options.clone_mode = mode;
  options.owner = owner;
  options.group = group;
  options.mode = file_mode;
  return std::make_unique<LocalBackend>(options, nullptr);
}

inline struct stat StatOf(const fs::path& p) {
  struct stat st {};
  REQUIRE_MESSAGE(::stat(p.c_str(), &st) == 0, "stat " << p);
  return st;
}

// Streams a raw file into a new image through Create().
inline void Import(storage::Backend& b, const fs::path& raw, const ImageRef& ref) {
  std::string data = ReadFile(raw);
  auto w = b.Create(ref, data.size());
  w->Append({reinterpret_cast<const std::byte*>(data.data()), data.size()});
  w->Finish();
}

// Makes `ref`'s snapshot "snap" and protects it, as the engine does for an entry.
inline SnapRef SnapAndProtect(storage::Backend& b, const ImageRef& ref) {
  SnapRef snap{ref, "snap"};
  b.CreateSnapshot(snap);
  b.ProtectSnapshot(snap);
  return snap;
}

inline int QemuCompare(const fs::path& image, const std::string& format, const fs::path& raw) {
  std::string out;
  return RunCommand(
      {"qemu-img", "compare", "-f", format, "-F", "raw", image.string(), raw.string()}, &out);
}

inline std::string BackingOf(const fs::path& overlay) {
  std::string out;
  REQUIRE(RunCommand({"qemu-img", "info", "--output=json", "-f", "qcow2", overlay.string()},
                     &out) == 0);
  auto j = nlohmann::json::parse(out);
  return j.value("backing-filename", "");
}

// A base entry imported from a raw image (`data` bytes of `size`, written from `seed`),
// its protected snapshot, and a volume cloned from it whose backing file is `backing`
// (the base's stable link).
struct BaseWithClone {
  TempDir dir;
  fs::path src;
  std::unique_ptr<LocalBackend> b;
  ImageRef base, volume;
  std::string backing;
  BaseWithClone(const std::string& name, uint64_t size, uint64_t data, int seed)
      : dir(name), src(dir.path() / "source.raw") {
    WriteRawImage(src, size, data, seed);
    b = MakeLocal(dir.path() / "root");
    base = {b->entry_pool(), kBaseName};
    Import(*b, src, base);
    const SnapRef snap = SnapAndProtect(*b, base);
    volume = {b->volume_pool(), "vm-disk"};
    b->Clone(snap, volume);
    backing = BackingOf(b->PathOf(volume));
  }
};

}  // namespace cachemgr::test
