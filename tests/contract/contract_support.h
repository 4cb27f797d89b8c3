// tests/contract/contract_support.h: what the Backend contract's cases share: the
// Target a test executable defines, unique names, patterns, reading back, the Scrub
// guard and the base image most cases start from. See backend_contract.h.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cachemgr/error.h"
#include "storage/backend.h"

namespace cachemgr::contract {

using storage::Backend;
using storage::ImageRef;
using storage::SnapRef;

struct Target {
  std::unique_ptr<Backend> backend;
  // See the header comment: clones depend on their parent (true) or are copies (false).
  bool linked_clones = true;
  // Overwrites [offset, offset+length) of an existing image with `byte`, the way a VM
  // would write its disk (the Backend has no such verb: the engine never writes a
  // volume). RBD: rbd_write; local: pwrite on a raw file, qemu-io on a qcow2 overlay.
  std::function<void(const ImageRef& ref, uint64_t offset, uint64_t length, uint8_t byte)>
      write_bytes;
  // Whether a case may fork a child that uses the backend (librados does not survive a
  // fork: RBD's crash cases are the CLI's failpoint tests).
  bool forkable = true;
};

// Defined by the test executable.
Target MakeTarget();

constexpr uint64_t kMiB = 1024 * 1024;

// A name no other case, process or run uses: "ct-<pid>-<time>-<n>-<tag>".
inline std::string UniqueName(const std::string& tag) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t start = static_cast<uint64_t>(
      std::chrono::system_clock::now().time_since_epoch() / std::chrono::milliseconds(1) %
      100000000);
  return "ct-" + std::to_string(::getpid()) + "-" + std::to_string(start) + "-" +
         std::to_string(counter++) + "-" + tag;
}

// Deterministic bytes, never an all-zero 4 KiB block (so no writer may skip them).
inline std::string Pattern(uint64_t length, uint32_t seed) {
  std::string out(length, '\0');
  uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (uint64_t i = 0; i < length; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>((x & 0xff) | 1);
  }
  return out;
}

inline std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Reads [offset, offset+length) (or to the end) of an image or snapshot.
inline std::string ReadRange(Backend& backend, const ImageRef& ref, uint64_t offset,
                             uint64_t length, const std::optional<std::string>& snap = {}) {
  auto reader = backend.Open(ref, snap);
  std::string out;
  uint64_t end = std::min(reader->size(), offset + length);
  std::string buf(1 * kMiB, '\0');
  uint64_t pos = offset;
  while (pos < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
    size_t got = reader->Read(pos, {reinterpret_cast<std::byte*>(buf.data()), want});
    if (got == 0) break;
    out.append(buf.data(), got);
    pos += got;
  }
  return out;
}

inline std::string ReadAll(Backend& backend, const ImageRef& ref,
                           const std::optional<std::string>& snap = {}) {
  return ReadRange(backend, ref, 0, UINT64_MAX, snap);
}

inline bool AllZero(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == 0; });
}

// Writes `content` (in odd-sized pieces, to exercise buffering) as a new image.
inline storage::ImportStats CreateImage(Backend& backend, const ImageRef& ref,
                                        const std::string& content, uint64_t size = 0) {
  auto writer = backend.Create(ref, size ? size : content.size());
  size_t pos = 0;
  size_t piece = 65536 + 512;
  while (pos < content.size()) {
    size_t n = std::min(piece, content.size() - pos);
    writer->Append(Bytes(content.substr(pos, n)));
    pos += n;
  }
  return writer->Finish();
}

// Removes what a case made, children first (reverse order of Add), then purges the
// trash entries that came from those names. Best effort: the case's own assertions
// already ran.
class Scrub {
 public:
  explicit Scrub(Backend& backend) : backend_(backend) {}
  ~Scrub() {
    for (auto it = refs_.rbegin(); it != refs_.rend(); ++it) Drop(*it);
    for (int round = 0; round < 3; ++round) {
      try {
        for (const auto& entry : backend_.ListTrash()) {
          if (std::find(refs_.begin(), refs_.end(), entry.original) == refs_.end()) continue;
          try {
            backend_.PurgeTrash(entry);
          } catch (const std::exception&) {
          }
        }
      } catch (const std::exception&) {
      }
    }
  }
  Scrub(const Scrub&) = delete;
  Scrub& operator=(const Scrub&) = delete;

  const ImageRef& Add(ImageRef ref) {
    refs_.push_back(std::move(ref));
    return refs_.back();
  }

 private:
  void Drop(const ImageRef& ref) {
    try {
      if (!backend_.Exists(ref)) return;
      backend_.Remove(ref);
    } catch (const std::exception&) {
    }
  }
  Backend& backend_;
  std::vector<ImageRef> refs_;
};

// Checks that the statement throws cachemgr::Error with code `errc` (the statement is
// last so that it may contain commas).
#define CONTRACT_CHECK_ERRC(errc, ...)                                        \
  do {                                                                        \
    bool contract_thrown_ = false;                                            \
    try {                                                                     \
      __VA_ARGS__;                                                            \
    } catch (const ::cachemgr::Error& e) {                                    \
      contract_thrown_ = true;                                                \
      CHECK_MESSAGE(e.code() == (errc), "wrong code, message: " << e.what()); \
    }                                                                         \
    CHECK_MESSAGE(contract_thrown_, #__VA_ARGS__ " did not throw");           \
  } while (0)

// A base image: 1 MiB of data, 2 MiB hole, 1 MiB of data (4 MiB), written through
// Create(), with a protected snapshot "snap".
struct BaseImage {
  ImageRef ref;
  SnapRef snap;
  std::string content;
};

inline BaseImage MakeBase(Backend& backend, Scrub& scrub, uint32_t seed) {
  BaseImage base;
  base.ref = scrub.Add({backend.entry_pool(), UniqueName("base")});
  base.content = Pattern(1 * kMiB, seed) + std::string(2 * kMiB, '\0') + Pattern(1 * kMiB, seed + 7);
  CreateImage(backend, base.ref, base.content);
  base.snap = {base.ref, "snap"};
  backend.CreateSnapshot(base.snap);
  backend.ProtectSnapshot(base.snap);
  return base;
}

}  // namespace cachemgr::contract
