// engine/digest_store.cpp: the index as the file source's DigestCache.
#include "engine/digest_store.h"

#include "engine/cache_impl.h"

namespace cachemgr::engine {
namespace {

class IndexDigestCache final : public source::DigestCache {
 public:
  IndexDigestCache(std::mutex& mu, index::Index& index, std::shared_ptr<const util::Clock> clock)
      : mu_(mu), index_(index), clock_(std::move(clock)) {}

  std::optional<source::FileDigests> Find(const std::string& location,
                                          const std::string& image_id) override {
    std::lock_guard lock(mu_);
    auto row = index_.FindSourceDigest(location, image_id);
    if (!row) return std::nullopt;
    return source::FileDigests{row->identity, row->disk_format, row->md5, row->sha512};
  }

  void Put(const std::string& location, const std::string& image_id,
           const source::FileDigests& d) override {
    std::lock_guard lock(mu_);
    index_.PutSourceDigest(
        {location, image_id, d.identity, d.disk_format, d.md5, d.sha512, clock_->WallSeconds()});
  }

  void Forget(const std::string& location, const std::string& image_id) override {
    std::lock_guard lock(mu_);
    index_.DeleteSourceDigest(location, image_id);
  }

 private:
  std::mutex& mu_;
  index::Index& index_;
  std::shared_ptr<const util::Clock> clock_;
};

}  // namespace

std::shared_ptr<source::DigestCache> MakeIndexDigestCache(
    std::mutex& mu, index::Index& index, std::shared_ptr<const util::Clock> clock) {
  return std::make_shared<IndexDigestCache>(mu, index, std::move(clock));
}

}  // namespace cachemgr::engine
