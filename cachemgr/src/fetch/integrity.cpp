// fetch/integrity.cpp: see integrity.h.
#include "fetch/integrity.h"

#include <spdlog/spdlog.h>

#include "cachemgr/error.h"

namespace cachemgr::fetch {

void Integrity::Verify(const source::ImageMeta& meta, FetchResult& result) {
  const uint64_t bytes = hasher_.bytes();
  std::vector<std::string> digests = hasher_.Finish();
  result.bytes_downloaded = bytes;
  if (meta.size && bytes != *meta.size) {
    throw Error(Errc::kCorrupt, "image " + meta.id + ": " +
                                    (bytes < *meta.size ? "truncated download: got "
                                                        : "download longer than the image: got ") +
                                    std::to_string(bytes) + " of " +
                                    std::to_string(*meta.size) + " bytes");
  }
  if (plan_.os_hash) {
    const size_t i = plan_.md5 ? 1 : 0;
    result.os_hash_algo = plan_.algos[i];
    result.os_hash_value = digests.at(i);
    if (!meta.os_hash_value.empty() && meta.os_hash_algo == result.os_hash_algo &&
        !util::SameDigest(meta.os_hash_value, result.os_hash_value)) {
      throw Error(Errc::kCorrupt, "image " + meta.id + ": " + result.os_hash_algo +
                                      " mismatch: source " + meta.os_hash_value.substr(0, 16) +
                                      "..., got " + result.os_hash_value.substr(0, 16) + "...");
    }
  }
  if (plan_.md5) {
    result.md5 = digests.at(0);
    if (!meta.checksum.empty() && !util::SameDigest(meta.checksum, result.md5)) {
      throw Error(Errc::kCorrupt, "image " + meta.id + ": checksum mismatch: source md5 " +
                                      meta.checksum + ", got " + result.md5);
    }
  } else {
    // The bytes matched the source's os_hash, so they are the bytes its md5 is of.
    result.md5 = meta.checksum;
  }
}

Integrity::Plan Integrity::MakePlan(const source::ImageMeta& meta, spdlog::logger& log) {
  Plan p;
  std::string algo = meta.os_hash_algo.empty() ? "sha512" : meta.os_hash_algo;
  const bool supported = util::Hasher::Supported(algo);
  const bool verifiable = supported && !meta.os_hash_value.empty();
  p.md5 = !verifiable || meta.checksum.empty();
  p.os_hash = supported;
  if (p.md5) p.algos.push_back("md5");
  if (p.os_hash) p.algos.push_back(algo);
  if (!supported) {
    log.warn("image os_hash_algo not supported, only md5 is checked image={} algo={}", meta.id,
             algo);
  }
  return p;
}

void RequireClaimedSize(const source::ImageMeta& meta, const FetchResult& result) {
  if (!meta.virtual_size) return;
  if (result.detected_format != "raw" && result.detected_format != "qcow2") return;
  if (*meta.virtual_size == result.virtual_size) return;
  throw Error(Errc::kCorrupt,
              "image " + meta.id + ": the source describes a disk of " +
                  std::to_string(*meta.virtual_size) + " bytes (virtual_size), but the " +
                  result.detected_format + " image holds " +
                  std::to_string(result.virtual_size) +
                  (*meta.virtual_size > result.virtual_size ? ": it is cut short"
                                                            : ": it is not the image described") +
                  "; nothing is cached. Upload the image again, or correct its virtual_size");
}

}  // namespace cachemgr::fetch
