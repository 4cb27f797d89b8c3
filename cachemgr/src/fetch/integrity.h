// fetch/integrity.h: what a fill checks of the bytes it is given against what the source
// claims of them: their digests and length as they pass (Integrity), and the size of the
// disk they make (RequireClaimedSize).
#pragma once

#include <spdlog/logger.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fetch/fetch.h"
#include "source/source.h"
#include "util/hash.h"

namespace cachemgr::fetch {

// The digests of the bytes as they pass, and the size check. Like Glance's own client,
// the source's os_hash (sha512 by default) is what is verified when the source gives one
// with a supported algorithm; md5 is computed only when there is no such os_hash or the
// source gives no md5 (the index then records ours). md5 and sha512 in turn on the
// download thread ran slower than the network; the digests now run on threads of their
// own (util::ParallelHasher) and the download thread only copies.
class Integrity {
 public:
  Integrity(const source::ImageMeta& meta, spdlog::logger& log)
      // Blocks no larger than the image: a small image does not pay for 8 MiB of them.
      : plan_(MakePlan(meta, log)),
        hasher_(plan_.algos, std::clamp<uint64_t>(meta.size.value_or(1 << 20), 4096, 1 << 20)) {}
  void Update(std::span<const std::byte> d) { hasher_.Update(d); }
  uint64_t bytes() const { return hasher_.bytes(); }

  // Throws kCorrupt for a short or long download or a digest that differs from the
  // source's; fills the result's digests.
  void Verify(const source::ImageMeta& meta, FetchResult& result);

 private:
  struct Plan {
    std::vector<std::string> algos;  // md5 first when computed
    bool md5 = false, os_hash = false;
  };
  static Plan MakePlan(const source::ImageMeta& meta, spdlog::logger& log);

  Plan plan_;
  util::ParallelHasher hasher_;
};

// The disk the source describes (virtual_size) is the disk fetched, for the formats whose
// size the source and qemu read alike: a raw image is its disk, and a qcow2 header has one
// size field. A raw image shorter than claimed is a cut one; a longer one, or a qcow2
// header that says otherwise, is not the image described. (Other formats' sizes may
// differ by rounding between readers: their digests and qemu's checks cover them.)
// kCorrupt naming both sizes otherwise.
void RequireClaimedSize(const source::ImageMeta& meta, const FetchResult& result);

}  // namespace cachemgr::fetch
